package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.error.CommandException;
import java.util.Optional;

/**
 * {@code x-blockdev-change}, as QEMU 7.2's {@code qmp_x_blockdev_change}: adds {@code node} as a
 * new child of {@code parent}, or removes its child named {@code child}, through the parent's
 * driver ({@code bdrv_add_child}/{@code bdrv_del_child}); as in QEMU only {@code quorum} can, and
 * every other driver answers that it does not support it.
 */
public final class ChildChangeCommand {
    private ChildChangeCommand() {
    }

    /** {@code x-blockdev-change}'s arguments. */
    public record Args(String parent, Optional<String> child, Optional<String> node) {
    }

    public static void register(QmpDispatcher d, BlockGraph graph) {
        d.register(QmpCommand.of("x-blockdev-change", Args.class, null, a -> {
            change(graph, a);
            return null;
        }));
    }

    static void change(BlockGraph graph, Args a) {
        GraphNode parent = graph.lookup(a.parent(), a.parent());
        if (a.child().isPresent() == a.node().isPresent()) {
            throw new CommandException(a.child().isPresent() ? "The parameters child and node are in conflict"
                    : "Either child or node must be specified");
        }
        if (a.child().isPresent()) {
            if (parent.child(a.child().get()) == null) {
                throw new CommandException("Node '" + a.parent() + "' does not have child '" + a.child().get() + "'");
            }
            graph.removeChild(parent, a.child().get());
            return;
        }
        GraphNode node = graph.find(a.node().get());
        if (node == null) {
            throw new CommandException("Node '" + a.node().get() + "' not found");
        }
        graph.addChild(parent, node);
    }
}
