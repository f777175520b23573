package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.job.WriteTracker;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A filter node that forwards everything to the node beneath and records which clusters
 * clients wrote (QEMU's commit_top/mirror_top with a dirty bitmap). The switch-over drains
 * the backends that write through it.
 */
final class WriteTrackingFilter implements BlockNode, WriteTracker {
    private final String name;
    private final BlockNode below;
    private final int granularity;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition written = lock.newCondition();
    private final BitSet dirty = new BitSet();
    private final java.util.function.Supplier<AutoCloseable> drainUsers;

    WriteTrackingFilter(String name, BlockNode below, java.util.function.Supplier<AutoCloseable> drainUsers) {
        this.name = name;
        this.below = below;
        this.drainUsers = drainUsers;
        this.granularity = Math.max(4096, below.clusterSize());
    }

    private interface Write {
        void run() throws IOException;
    }

    private void tracked(long offset, long length, Write write) throws IOException {
        write.run();
        if (length > 0) {
            lock.lock();
            try {
                dirty.set((int) (offset / granularity), (int) ((offset + length + granularity - 1) / granularity));
                written.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    @Override
    public String filterNodeName() {
        return name;
    }

    @Override
    public List<Range> takeDirty() {
        lock.lock();
        try {
            List<Range> ranges = new ArrayList<>();
            for (int i = dirty.nextSetBit(0); i >= 0; ) {
                int end = dirty.nextClearBit(i);
                ranges.add(new Range((long) i * granularity, (long) (end - i) * granularity));
                i = dirty.nextSetBit(end);
            }
            dirty.clear();
            return ranges;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public boolean awaitDirty(long millis) throws InterruptedException {
        lock.lock();
        try {
            long nanos = TimeUnit.MILLISECONDS.toNanos(millis);
            while (dirty.isEmpty() && nanos > 0) {
                nanos = written.awaitNanos(nanos);
            }
            return !dirty.isEmpty();
        } finally {
            lock.unlock();
        }
    }

    @Override
    public AutoCloseable blockWrites() {
        return drainUsers.get(); // the backends on this filter: requests in flight end, new ones wait
    }

    @Override
    public String driver() {
        return "commit_top";
    }

    @Override
    public String filename() {
        return below.filename();
    }

    @Override
    public long size() throws IOException {
        return below.size();
    }

    @Override
    public boolean isReadOnly() {
        return below.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return below.clusterSize();
    }

    @Override
    public Optional<BlockNode> backing() {
        return below.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        below.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        int length = src.remaining();
        tracked(offset, length, () -> below.write(offset, src));
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        tracked(offset, length, () -> below.writeZeroes(offset, length, mayUnmap));
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        tracked(offset, length, () -> below.discard(offset, length));
    }

    @Override
    public void flush() throws IOException {
        below.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return below.blockStatus(offset, maxLength);
    }

    @Override
    public void close() {
        // the graph closes the node beneath
    }
}
