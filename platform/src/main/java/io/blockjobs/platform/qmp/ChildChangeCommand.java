package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.error.CommandException;
import java.util.Optional;

/**
 * {@code x-blockdev-change}, as QEMU 7.2's {@code qmp_x_blockdev_change}: adds {@code node} as a
 * new child of {@code parent}, or removes its child named {@code child}. In QEMU only
 * {@code quorum} can (its {@code bdrv_add_child}/{@code bdrv_del_child}); blockjobs has no driver
 * that can yet, so after QEMU's checks every driver answers as one without those hooks does.
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
            throw new CommandException("The node " + parent.name() + " does not support removing a child");
        }
        if (graph.find(a.node().get()) == null) {
            throw new CommandException("Node '" + a.node().get() + "' not found");
        }
        throw new CommandException("The node " + parent.name() + " does not support adding a child");
    }
}
