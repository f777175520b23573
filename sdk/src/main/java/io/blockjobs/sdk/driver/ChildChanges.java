package io.blockjobs.sdk.driver;

import io.blockjobs.sdk.block.BlockNode;

/**
 * A node whose children can be added and removed while it is open: QEMU's
 * {@code bdrv_add_child}/{@code bdrv_del_child}, which {@code x-blockdev-change} calls (in QEMU
 * only {@code quorum} has them). A {@link DriverNode} offers it through
 * {@link DriverNode#childChanges()}. The graph calls it on the daemon's main loop, with the
 * node's users drained, after QEMU's generic checks (the node to add exists and has no parent;
 * the child to remove is one of the node's).
 */
public interface ChildChanges {

    /**
     * Adds the node {@code attacher} names as a new child: choose the child's name, then
     * {@link Attacher#attach} it.
     *
     * @throws io.blockjobs.sdk.error.CommandException to refuse, with QEMU's message
     */
    void add(Attacher attacher);

    /**
     * Removes the child called {@code name} (one the node attached): stop sending requests to it.
     * When this returns, the graph detaches the child (and closes it if nothing else owns it).
     *
     * @throws io.blockjobs.sdk.error.CommandException to refuse, with QEMU's message; the child
     *         then stays
     */
    void remove(String name);

    /** Attaches the node being added. */
    interface Attacher {

        /** The name of the node being added. */
        String nodeName();

        /**
         * Attaches it as child {@code name}, checking permissions at once; the returned node is
         * the child's request entry point.
         *
         * @throws io.blockjobs.sdk.error.CommandException on a permission conflict; nothing is
         *         attached
         */
        BlockNode attach(String name, ChildRole role);
    }
}
