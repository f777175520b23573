package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.util.List;
import org.pf4j.Extension;

/** Contributes the {@code quorum} and {@code replication} drivers. */
@Extension
public final class ColoPlugin implements BlockjobsPlugin {

    @Override
    public List<BlockDriver> blockDrivers() {
        return List.of(new QuorumDriver(), new ReplicationDriver());
    }
}
