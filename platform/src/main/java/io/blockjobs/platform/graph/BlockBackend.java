package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;

/**
 * What an export or a job holds instead of a node: when a snapshot puts an overlay on top of
 * the node, the backend follows the overlay, as QEMU's BlockBackend does.
 */
public final class BlockBackend {
    private final String owner;
    private volatile GraphNode root;

    BlockBackend(String owner, GraphNode root) {
        this.owner = owner;
        this.root = root;
    }

    /** Who holds it, for messages ("export 'exp0'"). */
    public String owner() {
        return owner;
    }

    public GraphNode root() {
        return root;
    }

    /** The node requests go to now. */
    public BlockNode node() {
        return root.node();
    }

    /** One request: runs with the node it goes to, which no graph change can swap meanwhile. */
    public <T> T io(Request<T> request) throws java.io.IOException {
        inFlight.readLock().lock();
        try {
            return request.run(root.node());
        } finally {
            inFlight.readLock().unlock();
        }
    }

    /** A request through a backend. */
    @FunctionalInterface
    public interface Request<T> {
        T run(BlockNode node) throws java.io.IOException;
    }

    /** Waits for requests in flight and holds off new ones until {@link #undrain()} (QEMU's drain). */
    void drain() {
        inFlight.writeLock().lock();
    }

    void undrain() {
        inFlight.writeLock().unlock();
    }

    /** Points the backend at another node, between requests. */
    void setRoot(GraphNode root) {
        drain();
        try {
            this.root = root;
        } finally {
            undrain();
        }
    }

    private final java.util.concurrent.locks.ReentrantReadWriteLock inFlight =
            new java.util.concurrent.locks.ReentrantReadWriteLock();
}
