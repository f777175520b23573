package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * What a secondary replication node runs once it starts, QEMU's {@code replication_start} for
 * the secondary with its internal jobs, over the chain <em>active disk</em> (the node's
 * {@code file}, taking the secondary VM's writes) → <em>hidden disk</em> → <em>secondary
 * disk</em> (taking the primary's writes, through an NBD export):
 *
 * <ul>
 *   <li>the {@code sync: none} backup from the secondary disk into the hidden disk, as a write
 *       hook on the secondary disk: before the primary's write overwrites a cluster for the first
 *       time since the last checkpoint, the cluster's old data is copied into the hidden disk, so
 *       that the secondary VM still reads the disk as it was at the checkpoint;</li>
 *   <li>the checkpoint, QEMU's {@code secondary_do_checkpoint}: the active and hidden disks are
 *       emptied under a barrier that holds off every write to the secondary disk and every
 *       request of the secondary VM, so none is half-applied and the secondary VM's view becomes
 *       the primary's at that instant;</li>
 *   <li>the failover, QEMU's internal active commit: the active and hidden disks are committed
 *       into the secondary disk while the secondary VM's writes go to both, and then the secondary
 *       disk alone serves.</li>
 * </ul>
 */
final class SecondarySide implements WriteHook {
    private static final int STRIPES = 64;
    private static final int COMMIT_CHUNK = 1 << 20;
    /** The most one copy of old data reads and writes: a run of clusters is cut there. */
    private static final int MAX_RUN_BYTES = 4 << 20;

    private final BlockNode active;
    private final BlockNode hidden;
    private final BlockNode disk;
    private final long size;
    private final int cluster;
    /** The most clusters one copy covers: at most one per stripe, and {@link #MAX_RUN_BYTES}. */
    private final int maxRun;
    /** Clusters of the secondary disk whose data as at the last checkpoint is in the hidden disk. */
    private final AtomicLongArray copied;
    private final ReentrantLock[] stripes = new ReentrantLock[STRIPES];
    /** Shared by every write to the secondary disk and every request of the secondary VM; a checkpoint takes it alone. */
    private final ReentrantReadWriteLock barrier = new ReentrantReadWriteLock();
    private final AtomicLong committed = new AtomicLong();
    private volatile String error; // the first failure to copy into the hidden disk, null for none
    private volatile boolean hooked;

    /** Over the chain {@code active} → {@code hidden} → {@code disk}, each {@code size} bytes; {@link #over} checks it first. */
    SecondarySide(BlockNode active, BlockNode hidden, BlockNode disk, long size) {
        this.active = active;
        this.hidden = hidden;
        this.disk = disk;
        this.size = size;
        this.cluster = Math.max(64 * 1024, hidden.clusterSize());
        this.maxRun = Math.max(1, Math.min(STRIPES, MAX_RUN_BYTES / cluster));
        this.copied = new AtomicLongArray((int) ((size / cluster + 64) / 64));
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new ReentrantLock();
        }
    }

    /**
     * QEMU's checks of the chain below a secondary, in its order and words, and what blockjobs
     * needs beyond them: hidden and secondary disks it can write (QEMU reopens them read-write;
     * here they are added writable, as {@code blockdev-add} adds nodes).
     */
    static SecondarySide over(BlockNode active, boolean diskHasUser) throws IOException {
        BlockNode hidden = active.backing().orElseThrow(() -> new CommandException("Active disk doesn't have backing file"));
        BlockNode disk = hidden.backing().orElseThrow(() -> new CommandException("Hidden disk doesn't have backing file"));
        if (!diskHasUser) {
            // the primary's writes come in through an export of it: without one, none would
            throw new CommandException("The secondary disk doesn't have block backend");
        }
        long size = active.size();
        if (hidden.size() != size || disk.size() != size) {
            throw new CommandException("Active disk, hidden disk, secondary disk's length are not the same");
        }
        if (!makesEmpty(active) || !makesEmpty(hidden)) {
            throw new CommandException("Active disk or hidden disk doesn't support make_empty");
        }
        for (BlockNode n : new BlockNode[] {active, hidden, disk}) {
            if (n.isReadOnly()) {
                throw new CommandException("Block replication cannot start: node '" + n.nodeName()
                        + "' is read-only; add it with blockdev-add (read-only: false) and name it in the backing option of the node above");
            }
        }
        return new SecondarySide(active, hidden, disk, size);
    }

    private static boolean makesEmpty(BlockNode n) {
        return n.driver().equals("qcow2"); // the formats whose layers can be emptied (unallocate)
    }

    BlockNode disk() {
        return disk;
    }

    /** Starts copying before the primary's writes. */
    void startCopying() {
        disk.addWriteHook(this);
        hooked = true;
    }

    /** Stops it (QEMU cancels its backup job). */
    void stopCopying() {
        if (hooked) {
            hooked = false;
            disk.removeWriteHook(this);
        }
    }

    /** The first failure to copy into the hidden disk since the start, or null. */
    String error() {
        return error;
    }

    // ---- the secondary VM's requests ----------------------------------------------------------------

    /** Runs a request of the secondary VM inside the barrier, so that a checkpoint never cuts it in half. */
    void vm(IoCall call) throws IOException {
        barrier.readLock().lock();
        try {
            call.run();
        } finally {
            barrier.readLock().unlock();
        }
    }

    /** A request. */
    interface IoCall {
        void run() throws IOException;
    }

    // ---- the backup of the secondary disk into the hidden disk -----------------------------------------

    @Override
    public void before(WriteRequest request) throws IOException {
        barrier.readLock().lock();
        try {
            copyOld(request.offset(), request.end());
        } catch (IOException | RuntimeException e) {
            barrier.readLock().unlock();
            if (error == null) {
                error = "copying to hidden disk '" + hidden.nodeName() + "' failed: " + e.getMessage();
            }
            throw e; // QEMU's break-guest-write: the primary's forwarded write fails, and the primary records it
        }
    }

    @Override
    public void after(WriteRequest request, boolean succeeded) {
        barrier.readLock().unlock();
    }

    private boolean isCopied(long c) {
        return (copied.get((int) (c >>> 6)) & (1L << c)) != 0;
    }

    private void markCopied(long c) {
        copied.getAndAccumulate((int) (c >>> 6), 1L << c, (a, b) -> a | b);
    }

    /**
     * Copies the old data of the clusters of {@code [offset, end)} not yet copied since the last
     * checkpoint into the hidden disk, before the write lands: each run of such clusters with one
     * read and one write. A run holds the stripe locks of its clusters (at most {@link #maxRun}
     * clusters, so one lock each, taken in the stripes' order, so that two writers never wait on
     * each other in a cycle); under them the run is looked at again, since another writer may have
     * copied some of it meanwhile, and a second writer of a cluster waits until its old data is safe.
     */
    private void copyOld(long offset, long end) throws IOException {
        ByteBuffer buf = null;
        long last = (Math.min(end, size) - 1) / cluster;
        for (long c = offset / cluster; c <= last; ) {
            if (isCopied(c)) {
                c++;
                continue;
            }
            long runEnd = c + 1;
            while (runEnd <= last && runEnd - c < maxRun && !isCopied(runEnd)) {
                runEnd++;
            }
            ReentrantLock[] held = lock(c, runEnd);
            try {
                for (long a = c; a < runEnd; ) {
                    if (isCopied(a)) {
                        a++;
                        continue;
                    }
                    long b = a + 1;
                    while (b < runEnd && !isCopied(b)) {
                        b++;
                    }
                    long pos = a * cluster;
                    int n = (int) (Math.min(b * cluster, size) - pos);
                    if (buf == null || buf.capacity() < n) {
                        buf = ByteBuffer.allocate((int) Math.min(last - c + 1, maxRun) * cluster);
                    }
                    disk.read(pos, buf.clear().limit(n));
                    hidden.write(pos, buf.flip());
                    for (long x = a; x < b; x++) {
                        markCopied(x);
                    }
                    a = b;
                }
            } finally {
                for (int i = held.length - 1; i >= 0; i--) {
                    held[i].unlock();
                }
            }
            c = runEnd;
        }
    }

    /** Takes the stripe locks of clusters {@code [from, to)} (at most {@link #maxRun} of them), in the stripes' order. */
    private ReentrantLock[] lock(long from, long to) {
        int count = (int) (to - from);
        int first = (int) (from % STRIPES);
        ReentrantLock[] held = new ReentrantLock[count];
        // the clusters' stripes are first, first + 1, ... modulo STRIPES: in ascending order, those
        // that wrap past the last stripe come first
        int wrapped = Math.max(0, first + count - STRIPES);
        int k = 0;
        for (int i = 0; i < wrapped; i++) {
            held[k++] = stripes[i];
        }
        for (int i = first; i < first + count - wrapped; i++) {
            held[k++] = stripes[i];
        }
        for (int i = 0; i < k; i++) {
            held[i].lock();
        }
        return held;
    }

    // ---- the checkpoint ---------------------------------------------------------------------------

    /** QEMU's secondary_do_checkpoint: empties the active and hidden disks at one instant. */
    void checkpoint() {
        barrier.writeLock().lock();
        try {
            makeEmpty(active);
            makeEmpty(hidden);
            for (int i = 0; i < copied.length(); i++) {
                copied.set(i, 0);
            }
        } finally {
            barrier.writeLock().unlock();
        }
    }

    /** QEMU's bdrv_make_empty, with its message. */
    private void makeEmpty(BlockNode n) {
        try {
            for (long pos = 0; pos < size; ) {
                BlockStatus s = n.blockStatus(pos, size - pos);
                if (s.allocated()) {
                    n.unallocate(pos, s.length());
                }
                pos = s.end();
            }
            n.flush();
        } catch (IOException e) {
            throw new CommandException("Failed to empty " + n.filename() + ": " + e.getMessage());
        }
    }

    // ---- the failover ------------------------------------------------------------------------------

    /**
     * Runs {@code switchOver} with no request of the secondary VM in flight, so that every write
     * from then on goes to the secondary disk as well as the active disk.
     */
    void quiesced(Runnable switchOver) {
        barrier.writeLock().lock();
        try {
            switchOver.run();
        } finally {
            barrier.writeLock().unlock();
        }
    }

    /** Bytes committed so far, and the disk's size, for the status of a failover in progress. */
    long committed() {
        return committed.get();
    }

    long size() {
        return size;
    }

    /**
     * The internal active commit: what the active or hidden disk holds is copied into the
     * secondary disk, each chunk under a serialising request on the active disk so that a write of
     * the secondary VM (which, from the switch-over, writes both) is never overwritten by older
     * data; then the secondary disk is flushed.
     */
    void commit() throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(COMMIT_CHUNK);
        for (long pos = 0; pos < size; ) {
            BlockStatus s = active.chainStatus(pos, size - pos);
            if (s.allocated() && s.depth() <= 1) { // in the active or the hidden disk
                for (long p = pos; p < s.end(); ) {
                    int n = (int) Math.min(COMMIT_CHUNK, s.end() - p);
                    try (SerialisedRange held = active.serialise(p, n)) {
                        held.read(p, buf.clear().limit(n));
                        disk.write(p, buf.flip(), RequestFlag.NONE);
                    }
                    p += n;
                    committed.set(p);
                }
            }
            pos = s.end();
            committed.set(pos);
        }
        disk.flush();
    }
}
