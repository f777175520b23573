package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * A test node that can tell what a range reads without making a request: no fault fires, no
 * statistic counts, nothing waits. Assertions read through it.
 */
interface ViewSource {

    /** Reads {@code dst.remaining()} bytes of the node's view at {@code offset}, advancing its position. */
    void readView(long offset, ByteBuffer dst) throws IOException;

    /** The view of any node: through {@link #readView} where it can, else by a request. */
    static void read(BlockNode node, long offset, ByteBuffer dst) throws IOException {
        if (node instanceof ViewSource v) {
            v.readView(offset, dst);
        } else {
            node.read(offset, dst);
        }
    }

    /** The whole view of {@code node}. */
    static byte[] whole(BlockNode node) {
        try {
            ByteBuffer dst = ByteBuffer.allocate((int) node.size());
            read(node, 0, dst);
            return dst.array();
        } catch (IOException e) {
            throw new IllegalStateException(e.getMessage(), e);
        }
    }
}
