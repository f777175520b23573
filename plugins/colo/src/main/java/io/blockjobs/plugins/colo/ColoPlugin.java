package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.util.List;
import org.pf4j.Extension;

/** Contributes the {@code quorum} and {@code replication} drivers and the commands that drive replication. */
@Extension
public final class ColoPlugin implements BlockjobsPlugin {
    private final Replications replications = new Replications();

    @Override
    public List<BlockDriver> blockDrivers() {
        return List.of(new QuorumDriver(), new ReplicationDriver(replications));
    }

    /** {@code xen-set-replication}, {@code query-xen-replication-status}, {@code xen-colo-do-checkpoint}. */
    @Override
    public List<io.blockjobs.sdk.plugin.Command<?>> commands() {
        return replications.commands();
    }
}
