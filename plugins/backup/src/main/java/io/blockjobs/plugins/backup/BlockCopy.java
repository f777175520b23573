package io.blockjobs.plugins.backup;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * QEMU's {@code BlockCopyState}: copies clusters of a source to a target once each, whoever asks
 * first — a client's write through the copy-before-write filter or a backup job's background pass.
 * One copy bitmap says what is still to be copied; a cluster being copied is <em>busy</em>, and
 * whoever else needs it waits for that copy rather than copying it again. A failed copy makes its
 * clusters dirty again, so nothing is skipped.
 *
 * <p>Zero ranges of the source (by block status of its whole chain) are written to the target as
 * write-zeroes, without unmapping: a target with a backing file must read zeroes there, not its
 * backing file's data.
 */
final class BlockCopy {
    /** The largest buffer one copy-before-write uses, as QEMU's {@code BLOCK_COPY_MAX_BUFFER}. */
    static final int MAX_BUFFER = 1 << 20;

    /** A run of clusters claimed for one copy. */
    record Run(long offset, long length) {
        long end() {
            return offset + length;
        }
    }

    private final BlockNode source;
    private final BlockNode target;
    private final long size;
    private final int clusterSize;
    private final int clusters;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition settled = lock.newCondition();
    /** Clusters still to be copied. */
    private final BitSet dirty;
    /** Clusters being copied now. */
    private final BitSet busy;
    private final AtomicLong copied = new AtomicLong();
    /** Clusters dirty or busy (the two never overlap): what is left, counted as it changes. */
    private int pending;
    private volatile Set<RequestFlag> writeFlags = RequestFlag.NONE;
    private volatile boolean discardSource;

    BlockCopy(BlockNode source, BlockNode target, long size, int clusterSize) {
        this.source = source;
        this.target = target;
        this.size = size;
        this.clusterSize = clusterSize;
        this.clusters = Math.toIntExact((size + clusterSize - 1) / clusterSize);
        this.dirty = new BitSet(clusters);
        this.busy = new BitSet(clusters);
        dirty.set(0, clusters);
        pending = clusters;
    }

    int clusterSize() {
        return clusterSize;
    }

    /** Backup's {@code discard-source} (QEMU 9.1): each range copied is discarded from the source. */
    void setDiscardSource(boolean discard) {
        discardSource = discard;
    }

    /** Backup's {@code compress}: data is written as compressed clusters (the target must support it). */
    void setCompress(boolean compress) {
        writeFlags = compress ? Set.of(RequestFlag.WRITE_COMPRESSED) : RequestFlag.NONE;
    }

    /**
     * How far from {@code pos} (before {@code end}) the source is uniformly data or zeroes, in
     * whole clusters as QEMU's {@code block_copy_block_status}: less than a cluster of either
     * counts as a cluster of data.
     */
    private long[] status(long pos, long end) throws IOException {
        BlockStatus status = source.chainStatus(pos, end - pos);
        long n = Math.min(status.length(), end - pos);
        if (pos + n < end) {
            n = n / clusterSize * clusterSize;
        }
        if (n == 0) {
            return new long[] {Math.min(clusterSize, end - pos), 0};
        }
        return new long[] {n, status.zero() ? 1 : 0};
    }

    long size() {
        return size;
    }

    /** Bytes copied so far, by anyone: the backup's progress. */
    long copiedBytes() {
        return copied.get();
    }

    /** Bytes still to be copied, counting those being copied now. */
    long remainingBytes() {
        lock.lock();
        try {
            long n = (long) pending * clusterSize;
            if (dirty.get(clusters - 1) || busy.get(clusters - 1)) {
                n -= (long) clusters * clusterSize - size; // the last cluster is partial
            }
            return n;
        } finally {
            lock.unlock();
        }
    }

    /** The copy bitmap's clusters still to be copied, as byte runs (for a bitmap merge). */
    List<Run> dirtyRuns() {
        lock.lock();
        try {
            BitSet left = (BitSet) dirty.clone();
            left.or(busy);
            List<Run> runs = new ArrayList<>();
            for (int c = left.nextSetBit(0); c >= 0; ) {
                int e = left.nextClearBit(c);
                runs.add(byteRun(c, e));
                c = left.nextSetBit(e);
            }
            return runs;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Keeps to be copied only the clusters that {@code runs} touch: the start of a
     * {@code sync: bitmap} backup. Clusters copied already stay copied: the old data is saved.
     */
    void restrictTo(List<Run> runs) {
        BitSet keep = new BitSet(clusters);
        for (Run r : runs) {
            keep.set((int) (r.offset() / clusterSize), clusterEnd(r.end()));
        }
        lock.lock();
        try {
            dirty.and(keep);
            pending = dirty.cardinality() + busy.cardinality();
        } finally {
            lock.unlock();
        }
    }

    /** Clusters {@code [offset, offset + length)} covers need not be copied (unallocated, or discarded by the snapshot's user). */
    void reset(long offset, long length) {
        lock.lock();
        try {
            int first = (int) ((offset + clusterSize - 1) / clusterSize);
            int end = offset + length >= size ? clusters : (int) ((offset + length) / clusterSize);
            for (int c = first < end ? dirty.nextSetBit(first) : -1; c >= 0 && c < end; c = dirty.nextSetBit(c + 1)) {
                pending--;
            }
            if (first < end) {
                dirty.clear(first, end);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * The first cluster at or after {@code offset} that is to be copied and not busy, with the
     * dirty clusters after it, up to {@code maxLength} bytes; null if there is none.
     */
    Run nextDirty(long offset, long maxLength) {
        lock.lock();
        try {
            int c = (int) (offset / clusterSize);
            while (c >= 0 && c < clusters) {
                c = dirty.nextSetBit(c);
                if (c < 0) {
                    return null;
                }
                if (!busy.get(c)) {
                    int limit = (int) Math.min(clusters, c + Math.max(1, maxLength / clusterSize));
                    int e = Math.min(dirty.nextClearBit(c), limit);
                    int b = busy.nextSetBit(c);
                    if (b >= 0 && b < e) {
                        e = b;
                    }
                    return byteRun(c, e);
                }
                c++;
            }
            return null;
        } finally {
            lock.unlock();
        }
    }

    /** Whether nothing is left to copy and nobody is copying. */
    boolean finished() {
        lock.lock();
        try {
            return dirty.isEmpty() && busy.isEmpty();
        } finally {
            lock.unlock();
        }
    }

    /** Waits until no copy is in flight, or {@code millis} passed. */
    void awaitSettled(long millis) throws InterruptedException {
        lock.lock();
        try {
            if (!busy.isEmpty()) {
                settled.await(millis, TimeUnit.MILLISECONDS);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until a copy ends, or {@code millis} passed, whether or not one is in flight now: the
     * wait of a job that has nothing to copy itself ({@code sync: none}).
     */
    void awaitCopy(long millis) throws InterruptedException {
        lock.lock();
        try {
            settled.await(millis, TimeUnit.MILLISECONDS);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Claims the clusters of {@code [offset, end)} that are to be copied and that nobody copies:
     * they are busy until {@link #finish}ed.
     */
    List<Run> claim(long offset, long end) {
        lock.lock();
        try {
            int first = (int) (offset / clusterSize);
            int last = clusterEnd(end);
            List<Run> runs = new ArrayList<>(1);
            for (int c = dirty.nextSetBit(first); c >= 0 && c < last; ) {
                int e = Math.min(dirty.nextClearBit(c), last);
                int b = busy.nextSetBit(c);
                if (b >= 0 && b < e) {
                    e = b; // cannot be: a dirty cluster is never busy; kept as a guard
                }
                if (e > c) {
                    dirty.clear(c, e);
                    busy.set(c, e);
                    runs.add(byteRun(c, e));
                }
                c = e >= last ? -1 : dirty.nextSetBit(e);
            }
            return runs;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Ends claimed runs: copied, or (failed) to be copied again. With {@code discard-source} the
     * source gives up a copied run first, while it is still busy (a failed discard is no loss).
     */
    void finish(List<Run> runs, boolean copiedOk) {
        if (copiedOk && discardSource) {
            for (Run r : runs) {
                try {
                    source.discard(r.offset(), r.length());
                } catch (IOException | RuntimeException e) {
                    // the data stays in the source: nothing is lost
                }
            }
        }
        lock.lock();
        try {
            for (Run r : runs) {
                int c = (int) (r.offset() / clusterSize);
                int e = clusterEnd(r.end());
                busy.clear(c, e);
                if (!copiedOk) {
                    dirty.set(c, e);
                } else {
                    pending -= e - c;
                    copied.addAndGet(r.length());
                }
            }
            settled.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Copy-before-write: copies the old data of every cluster {@code [offset, offset + length)}
     * touches that is still to be copied, and waits for the copies others have in flight there,
     * until none of them is left to copy. Then the range may be overwritten.
     */
    void copyBeforeWrite(long offset, long length) throws IOException {
        long end = Math.min(size, offset + length);
        int first = (int) (offset / clusterSize);
        int last = clusterEnd(end);
        ByteBuffer buffer = null;
        while (true) {
            List<Run> runs = claim(offset, end);
            if (!runs.isEmpty()) {
                if (buffer == null) {
                    buffer = ByteBuffer.allocate((int) Math.min(Math.max(MAX_BUFFER, clusterSize),
                            (long) (last - first) * clusterSize));
                }
                try {
                    for (Run r : runs) {
                        copyRun(r, buffer);
                    }
                } catch (IOException | RuntimeException e) {
                    finish(runs, false);
                    throw e;
                }
                finish(runs, true);
            }
            lock.lock();
            try {
                int b = busy.nextSetBit(first);
                boolean othersCopying = b >= 0 && b < last;
                int d = dirty.nextSetBit(first);
                boolean left = d >= 0 && d < last;
                if (!othersCopying && !left) {
                    return;
                }
                if (othersCopying && !left) {
                    settled.awaitUninterruptibly(); // their copy may fail and leave the clusters to us
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /** Copies one claimed run through {@code buffer}, chunk by chunk, zero ranges as write-zeroes. */
    void copyRun(Run run, ByteBuffer buffer) throws IOException {
        long pos = run.offset();
        long end = Math.min(size, run.end());
        while (pos < end) {
            long[] st = status(pos, end);
            long n = st[0];
            if (st[1] == 1) {
                target.writeZeroes(pos, n, false);
            } else {
                int chunk = (int) Math.min(n, buffer.capacity());
                buffer.clear().limit(chunk);
                source.read(pos, buffer);
                buffer.flip();
                target.write(pos, buffer, writeFlags);
                n = chunk;
            }
            pos += n;
        }
    }

    /**
     * One chunk of a background pass, for a copier: {@link #read} claims what is still to be
     * copied in it when the copy runs (the filter may have saved some meanwhile) and reads it;
     * {@link #write} writes it and ends the claim. A failed half gives the clusters back, so that
     * a retry (which reads again) or the next pass copies them.
     */
    final class Chunk {
        private final long end;
        private final List<Run> zeroes = new ArrayList<>();
        private List<Run> claimed;

        private Chunk(long end) {
            this.end = end;
        }

        void read(long offset, ByteBuffer dst) throws IOException {
            zeroes.clear();
            claimed = claim(offset, end);
            try {
                readRuns(offset, claimed, dst, zeroes);
            } catch (IOException | RuntimeException e) {
                finish(claimed, false);
                claimed = null;
                throw e;
            }
            dst.position(dst.limit());
        }

        void write(long offset, ByteBuffer src) throws IOException {
            List<Run> runs = claimed;
            claimed = null;
            if (runs == null || runs.isEmpty()) {
                return;
            }
            try {
                writeRuns(offset, runs, src, zeroes);
            } catch (IOException | RuntimeException e) {
                finish(runs, false);
                throw e;
            }
            finish(runs, true);
        }
    }

    /** A chunk of {@code length} bytes from {@code offset}, for one copy of a background pass. */
    Chunk chunk(long offset, long length) {
        return new Chunk(offset + length);
    }

    /** Reads the claimed runs of a background chunk into its buffer, at their place in the chunk. */
    private void readRuns(long chunkOffset, List<Run> runs, ByteBuffer buffer, List<Run> zeroes) throws IOException {
        for (Run r : runs) {
            long pos = r.offset();
            long end = Math.min(size, r.end());
            while (pos < end) {
                long[] st = status(pos, end);
                long n = st[0];
                if (st[1] == 1) {
                    zeroes.add(new Run(pos, n));
                } else {
                    ByteBuffer slice = buffer.duplicate();
                    slice.limit((int) (pos + n - chunkOffset)).position((int) (pos - chunkOffset));
                    source.read(pos, slice);
                }
                pos += n;
            }
        }
    }

    /** Writes what {@link #readRuns} read: data runs from the buffer, zero runs as write-zeroes. */
    private void writeRuns(long chunkOffset, List<Run> runs, ByteBuffer buffer, List<Run> zeroes) throws IOException {
        int z = 0;
        for (Run r : runs) {
            long pos = r.offset();
            long end = Math.min(size, r.end());
            while (pos < end) {
                Run zero = z < zeroes.size() && zeroes.get(z).offset() < end ? zeroes.get(z) : null;
                long dataEnd = zero == null ? end : zero.offset();
                if (pos < dataEnd) {
                    ByteBuffer slice = buffer.duplicate();
                    slice.limit((int) (dataEnd - chunkOffset)).position((int) (pos - chunkOffset));
                    target.write(pos, slice, writeFlags);
                    pos = dataEnd;
                }
                if (zero != null && pos == zero.offset()) {
                    target.writeZeroes(zero.offset(), zero.length(), false);
                    pos = zero.end();
                    z++;
                }
            }
        }
    }

    private int clusterEnd(long byteEnd) {
        return (int) Math.min(clusters, (byteEnd + clusterSize - 1) / clusterSize);
    }

    private Run byteRun(int firstCluster, int endCluster) {
        long start = (long) firstCluster * clusterSize;
        long end = Math.min(size, (long) endCluster * clusterSize);
        return new Run(start, end - start);
    }
}
