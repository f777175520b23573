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

    void setRoot(GraphNode root) {
        this.root = root;
    }
}
