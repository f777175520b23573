package io.blockjobs.platform.image;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.error.CommandException;

/**
 * A real block graph with the built-in drivers, for driver tests: nodes are added from JSON text
 * as a QMP client sends {@code blockdev-add}, and used through a root edge as an export uses
 * them.
 */
final class DriverGraph implements AutoCloseable {
    final BlockGraph graph;

    DriverGraph() {
        graph = BlockGraph.withBuiltInDrivers();
    }

    /** {@code blockdev-add} of this JSON text. */
    GraphNode add(String json) {
        return graph.add(Qemu.JSON.readTree(json));
    }

    /** The message {@code blockdev-add} of this JSON text fails with. */
    String error(String json) {
        try {
            add(json);
        } catch (CommandException e) {
            return e.getMessage();
        }
        throw new AssertionError("blockdev-add succeeded: " + json);
    }

    /** A writable user of the node, as a writable export is. */
    Edge user(String node) {
        return graph.attachRoot(BlockGraph.RootUser.export(node), "root", graph.require(node),
                Perm.of(Perm.CONSISTENT_READ, Perm.WRITE), Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED), false);
    }

    @Override
    public void close() {
        graph.close();
    }
}
