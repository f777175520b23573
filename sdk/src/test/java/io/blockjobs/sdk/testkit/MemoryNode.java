package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.BitSet;
import java.util.Optional;

/**
 * An image in memory for plugin unit tests: 64 KiB clusters, allocation tracked per cluster,
 * an optional backing node, and optional failures to inject.
 */
public final class MemoryNode implements BlockNode {
    private static final int CLUSTER = 64 * 1024;

    private final String name;
    private final byte[] data;
    private final BitSet allocated = new BitSet();
    private final BlockNode backing;
    private volatile long failReadsAt = -1;
    private volatile int reads;

    /** A node of {@code size} bytes over {@code backing} (or none). */
    public MemoryNode(String name, int size, BlockNode backing) {
        this.name = name;
        this.data = new byte[size];
        this.backing = backing;
    }

    /** Makes reads covering {@code offset} fail with an I/O error (-1: none). */
    public void failReadsAt(long offset) {
        failReadsAt = offset;
    }

    /** How many reads this node served. */
    public int reads() {
        return reads;
    }

    /** Fills {@code [offset, offset + length)} with {@code value}, allocating it. */
    public MemoryNode fill(int offset, int length, byte value) {
        java.util.Arrays.fill(data, offset, offset + length, value);
        allocated.set(offset / CLUSTER, (offset + length + CLUSTER - 1) / CLUSTER);
        return this;
    }

    @Override
    public String driver() {
        return "memory";
    }

    @Override
    public String filename() {
        return name;
    }

    @Override
    public long size() {
        return data.length;
    }

    @Override
    public boolean isReadOnly() {
        return false;
    }

    @Override
    public int clusterSize() {
        return CLUSTER;
    }

    @Override
    public Optional<BlockNode> backing() {
        return Optional.ofNullable(backing);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        check(offset, length);
        reads++;
        long fail = failReadsAt;
        if (fail >= offset && fail < offset + length) {
            throw new IOException(name + ": Input/output error at offset " + fail);
        }
        for (long pos = offset; pos < offset + length; ) {
            int cluster = (int) (pos / CLUSTER);
            int n = (int) Math.min(offset + length - pos, (long) (cluster + 1) * CLUSTER - pos);
            if (allocated.get(cluster) || backing == null) {
                dst.put(data, (int) pos, n);
            } else {
                ByteBuffer part = dst.slice(dst.position(), n);
                backing.read(pos, part);
                dst.position(dst.position() + n);
            }
            pos += n;
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        int length = src.remaining();
        check(offset, length);
        src.get(data, (int) offset, length);
        allocated.set((int) (offset / CLUSTER), (int) ((offset + length + CLUSTER - 1) / CLUSTER));
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        check(offset, length);
        java.util.Arrays.fill(data, (int) offset, (int) (offset + length), (byte) 0);
        allocated.set((int) (offset / CLUSTER), (int) ((offset + length + CLUSTER - 1) / CLUSTER));
    }

    @Override
    public void discard(long offset, long length) {
        // keeps the data: discard is advisory
    }

    @Override
    public void flush() {
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) {
        int cluster = (int) (offset / CLUSTER);
        boolean state = allocated.get(cluster);
        long end = Math.min(data.length, offset + maxLength);
        long pos = (long) (cluster + 1) * CLUSTER;
        while (pos < end && allocated.get((int) (pos / CLUSTER)) == state) {
            pos += CLUSTER;
        }
        long length = Math.min(pos, end) - offset;
        return new BlockStatus(offset, length, state, !state && backing == null, state ? 0 : 1);
    }

    @Override
    public void close() {
    }

    private void check(long offset, long length) throws IOException {
        if (offset < 0 || length < 0 || offset + length > data.length) {
            throw new IOException(name + ": request past the end of the " + data.length + "-byte image");
        }
    }
}
