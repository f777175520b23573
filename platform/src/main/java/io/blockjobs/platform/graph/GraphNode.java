package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;

/**
 * A named node of the graph: its driver's {@link BlockNode} and its children. Nodes added by
 * {@code blockdev-add} belong to the monitor; nodes opened on the way (inline children, backing
 * files found in headers) get generated names and go when their last parent goes.
 */
public final class GraphNode {
    private final String name;
    private final BlockNode node;
    private final boolean monitorOwned;
    private final GraphNode file;
    private volatile GraphNode backing;

    GraphNode(String name, BlockNode node, boolean monitorOwned, GraphNode file, GraphNode backing) {
        this.name = name;
        this.node = node;
        this.monitorOwned = monitorOwned;
        this.file = file;
        this.backing = backing;
    }

    public String name() {
        return name;
    }

    public BlockNode node() {
        return node;
    }

    public String driver() {
        return node.driver();
    }

    public boolean monitorOwned() {
        return monitorOwned;
    }

    /** The protocol child of a format node, or null. */
    public GraphNode file() {
        return file;
    }

    /** The backing child, or null. */
    public GraphNode backing() {
        return backing;
    }

    void setBacking(GraphNode backing) {
        this.backing = backing;
    }

    /**
     * The next layer down the chain: the backing child, or for a filter (blkdebug, a job's
     * write tracker) the backing of the node it filters, as the filter's reads see it.
     */
    public GraphNode chainNext() {
        if (backing != null) {
            return backing;
        }
        boolean filter = node instanceof io.blockjobs.platform.image.BlkdebugNode || node instanceof WriteTrackingFilter;
        return filter && file != null ? file.backing() : null;
    }

    /** Length of the backing chain below this node. */
    public int backingDepth() {
        int depth = 0;
        for (GraphNode b = backing; b != null; b = b.backing()) {
            depth++;
        }
        return depth;
    }

    @Override
    public String toString() {
        return name;
    }
}
