package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * QEMU's {@code copy-on-read} filter: a read of data that its child does not hold itself, but a
 * layer between the child and {@code bottom} does, also writes the data into the child, without
 * overwriting anything written there meanwhile. {@code block-stream} reads through one.
 */
final class CopyOnReadFilter extends ForwardingFilter {
    private final GraphNode bottom;

    /** @param bottom the lowest layer data is copied from, or null for the whole chain */
    CopyOnReadFilter(BlockNode child, GraphNode bottom) {
        super("copy-on-read", "file", child);
        this.bottom = bottom;
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        long pos = offset;
        long end = offset + dst.remaining();
        while (pos < end) {
            BlockStatus here = child.blockStatus(pos, end - pos);
            long n = here.length();
            int layers = layersAbove();
            boolean copy = false;
            if (!here.allocated()) {
                BlockStatus where = child.chainStatus(pos, n);
                n = where.length();
                copy = where.allocated() && where.depth() >= 1 && (layers < 0 || where.depth() <= layers);
            }
            ByteBuffer part = dst.slice(dst.position(), (int) n);
            child.read(pos, part);
            if (copy && !child.isReadOnly()) {
                child.writeUnallocated(pos, part.flip());
            }
            dst.position(dst.position() + (int) n);
            pos += n;
        }
    }

    /** Layers between the child and {@code bottom} inclusive (-1: every layer). */
    private int layersAbove() {
        if (bottom == null) {
            return -1;
        }
        int depth = 0;
        GraphNode top = ((Edge) child).child();
        if (top.skipFilters() == bottom.skipFilters()) {
            return 0; // the bottom is the child itself: nothing below it to copy
        }
        for (GraphNode n = top.chainNext(); n != null; n = n.chainNext()) {
            depth++;
            if (n.skipFilters() == bottom.skipFilters()) {
                return depth;
            }
        }
        return depth;
    }
}
