package io.blockjobs.sdk.plugin;

import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.job.JobCommand;
import java.util.List;
import org.pf4j.ExtensionPoint;

/**
 * The one extension point a plugin implements (annotate the class with PF4J's
 * {@code @Extension}): everything it contributes, each list empty unless overridden, so a new
 * kind of contribution never breaks an old plugin. The platform reads the lists once, when the
 * plugin starts, and withdraws them before it stops.
 */
public interface BlockjobsPlugin extends ExtensionPoint {

    /** QMP commands that start jobs ({@code block-stream}). */
    default List<JobCommand<?>> jobCommands() {
        return List.of();
    }

    /** Block drivers for {@code blockdev-add} ({@code throttle}). */
    default List<BlockDriver> blockDrivers() {
        return List.of();
    }

    /** Plain QMP commands. */
    default List<Command<?>> commands() {
        return List.of();
    }
}
