package io.blockjobs.sdk.driver;

import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.util.Optional;

/**
 * One open node as its driver implements it. The graph wraps it: nobody but the graph calls it,
 * so a driver sees only requests that were already tracked, hooked, aligned to
 * {@link Limits#requestAlignment()} and split at {@link Limits#maxTransfer()}. Its children are
 * the {@link BlockNode}s its {@link DriverContext} gave it, through which its own requests go
 * back into the graph.
 *
 * <p>{@link #close()} releases what the driver holds itself; the graph closes the children.
 */
public interface DriverNode extends BlockNode {

    /** What the node can take in one request. */
    default Limits limits() {
        return new Limits(1, 0, clusterSize());
    }

    /**
     * For a filter, the name of the child it forwards requests to ({@code file},
     * {@code image}); chains are walked through filters by it. Empty for other nodes.
     */
    default Optional<String> filteredChild() {
        return Optional.empty();
    }

    /**
     * Permissions the node takes on its child {@code childName} beyond what its own users need
     * (none by default): a copy-before-write filter that discards what it copied
     * ({@code discard-source}) writes its file even when nobody writes through it.
     */
    default java.util.Set<io.blockjobs.sdk.block.BlockPermission> extraChildPermissions(String childName) {
        return java.util.Set.of();
    }

    /**
     * Whether the format can have a backing file (qcow2 can, raw cannot): the graph then gives
     * it its backing child through {@link #setBacking}.
     */
    default boolean supportsBacking() {
        return false;
    }

    /**
     * Gives the node its backing child (null: none): reads of data the node does not hold go
     * there. Called by the graph, on the main loop, between requests.
     */
    default void setBacking(BlockNode backing) {
        throw new UnsupportedOperationException(driver() + " cannot have a backing file");
    }

    /**
     * Records a backing file name and format in the image, durably (QEMU's
     * {@code bdrv_change_backing_file}); null for none. The graph calls it before it relinks.
     */
    default void changeBackingFile(String name, String format) throws IOException {
        throw new UnsupportedOperationException(driver() + " cannot record a backing file");
    }

    /**
     * Makes a node opened read-only writable (QEMU's reopen), after the graph made its children
     * writable.
     *
     * @throws UnsupportedOperationException if the driver cannot
     */
    default void reopenReadWrite() throws IOException {
        throw new UnsupportedOperationException(driver() + " cannot be reopened read-write");
    }

    /**
     * How the node's children are added and removed while it is open ({@code x-blockdev-change}),
     * or empty if they cannot be (the default: QEMU's "The node ... does not support adding a
     * child").
     */
    default Optional<ChildChanges> childChanges() {
        return Optional.empty();
    }
}
