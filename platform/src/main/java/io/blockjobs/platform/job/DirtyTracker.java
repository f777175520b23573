package io.blockjobs.platform.job;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.job.WriteTracker;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The write tracker of a converging job (active commit): an after-write hook on the job's
 * {@code mirror_top} filter that marks every range clients changed, by the node's cluster size
 * (at least 4 KiB), as QEMU's mirror marks its dirty bitmap.
 */
final class DirtyTracker implements WriteTracker, WriteHook {
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition written = lock.newCondition();
    private long wakes;
    private final BitSet dirty = new BitSet();
    private volatile int granularity = 64 * 1024;
    private volatile GraphNode filter;
    private volatile BlockGraph graph;

    void attach(GraphNode filterNode, BlockGraph g) {
        this.filter = filterNode;
        this.graph = g;
        this.granularity = Math.max(4096, filterNode.clusterSize());
    }

    @Override
    public void after(WriteRequest request, boolean succeeded) {
        if (request.length() == 0) {
            return;
        }
        int g = granularity;
        lock.lock();
        try {
            dirty.set((int) (request.offset() / g), (int) ((request.end() + g - 1) / g));
            written.signalAll();
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String filterNodeName() {
        return filter.name();
    }

    @Override
    public List<Range> takeDirty() {
        int g = granularity;
        lock.lock();
        try {
            List<Range> ranges = new ArrayList<>();
            for (int i = dirty.nextSetBit(0); i >= 0; ) {
                int end = dirty.nextClearBit(i);
                ranges.add(new Range((long) i * g, (long) (end - i) * g));
                i = dirty.nextSetBit(end);
            }
            dirty.clear();
            return ranges;
        } finally {
            lock.unlock();
        }
    }

    /** Bytes marked and not yet taken. */
    long dirtyBytes() {
        lock.lock();
        try {
            return (long) dirty.cardinality() * granularity;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public boolean awaitDirty(long millis) throws InterruptedException {
        lock.lock();
        try {
            long nanos = TimeUnit.MILLISECONDS.toNanos(millis);
            long seen = wakes;
            while (dirty.isEmpty() && nanos > 0 && wakes == seen) {
                nanos = written.awaitNanos(nanos);
            }
            return !dirty.isEmpty();
        } finally {
            lock.unlock();
        }
    }

    /** A verb for the job arrived ({@code job-complete}): a wait for writes ends now, as QEMU's job_enter. */
    void wake() {
        lock.lock();
        try {
            wakes++;
            written.signalAll();
        } finally {
            lock.unlock();
        }
    }

    @Override
    public AutoCloseable blockWrites() {
        return graph.drain(filter); // clients of the filter wait; the job's own requests go on
    }
}
