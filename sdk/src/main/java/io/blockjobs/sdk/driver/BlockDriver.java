package io.blockjobs.sdk.driver;

import java.io.IOException;

/**
 * A block driver as the graph's registry holds it: a name, as {@code blockdev-add}'s
 * {@code driver} gives it, and a way to open a node from QEMU's options and its children.
 * Built-in drivers ({@code file}, {@code raw}, {@code qcow2}, {@code blkdebug}, ...) and drivers
 * that plugins contribute ({@link io.blockjobs.sdk.plugin.BlockjobsPlugin#blockDrivers()}) are
 * the same to the graph.
 */
public interface BlockDriver {

    /** The driver's name as QEMU spells it ({@code throttle}, {@code null-co}). */
    String name();

    /**
     * The driver's own options (besides the ones every node takes), for {@code query-qmp-schema};
     * none by default.
     */
    default java.util.List<OptionSpec> options() {
        return java.util.List.of();
    }

    /**
     * Opens one node, on the daemon's main loop. Read the options through
     * {@link DriverContext#options()} (members nobody read are refused afterwards, as QEMU
     * does) and attach children through {@link DriverContext#child}. Throw
     * {@link io.blockjobs.sdk.error.CommandException} for bad options, with QEMU's message.
     */
    DriverNode open(DriverContext context) throws IOException;
}
