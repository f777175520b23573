package io.blockjobs.plugins.throttle;

import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.util.List;
import org.pf4j.Extension;

/** Contributes the {@code throttle} driver. */
@Extension
public final class ThrottlePlugin implements BlockjobsPlugin {

    @Override
    public List<BlockDriver> blockDrivers() {
        return List.of(new ThrottleDriver());
    }
}
