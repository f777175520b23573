package io.blockjobs.plugins.mirror;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.Convergence;
import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.Drain;
import io.blockjobs.sdk.job.EditsKeptException;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobContext;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A running mirror, QEMU's {@code block/mirror.c}: the job's body and the write hook of its
 * {@code mirror_top} filter.
 *
 * <p>The job's dirty bitmap of the source records every client write from before the first copy.
 * The copy loop takes the next run of dirty granules (up to {@code buf-size}), clears their bits,
 * and copies it in operations, at most 16 in flight: data as a read and a write of up to
 * {@code max(buf-size / 16, 1 MiB)} ({@code buf-size} bytes of buffers in all), a range that reads
 * as zeroes as one write-zeroes of up to the whole run (with unmap unless {@code unmap: false}).
 * QEMU copies a zero range that does not cover whole target clusters as data instead
 * ({@code bdrv_round_to_clusters}); blockjobs zeroes it, so an RBD target stays sparser. An operation holds its granules
 * ({@link InFlight}) and a client write over them waits for it; a failed one marks its range
 * dirty again and meets {@code on-source-error} or {@code on-target-error}. With nothing dirty
 * and nothing in flight the target is flushed and the job says ready; it keeps copying what
 * clients write until {@code job-complete}, which drains the source's users (begun on the job's
 * thread), copies what is left, flushes, and switches them over to the target; a soft cancel
 * at that point ends the job without the switch.
 *
 * <p>In {@code copy-mode: write-blocking} the filter also writes the target inside each client
 * write, after the source, as QEMU's {@code do_sync_target_write}: once the job is ready and
 * nothing is dirty, every write a client sees complete is on the target too
 * ({@code actively-synced}).
 *
 * <p>An active commit is this same job with the source's backing as the target ({@link ActiveCommit},
 * QEMU's {@code commit_active_start}): the layers above the base are the first work, and the
 * switch-over moves the clients onto the base, leaving the layers between out of their chain.
 */
final class Mirror implements JobBody, WriteHook {
    static final int MAX_IN_FLIGHT = 16;
    static final int MAX_IO_BYTES = 1 << 20;
    /** QEMU's BLOCK_JOB_SLICE_TIME: an idle ready job looks again this often. */
    static final long SLICE_MILLIS = 100;
    /** How long the dirty count may fail to fall before the job says it does not converge. */
    static final long CONVERGE_CHECK_NANOS = TimeUnit.SECONDS.toNanos(10);

    /** QEMU's {@code MirrorSyncMode}. */
    enum Sync { TOP, FULL, NONE, INCREMENTAL, BITMAP }

    /** QEMU's {@code MirrorCopyMode}. */
    enum CopyMode { BACKGROUND, WRITE_BLOCKING }

    /** QEMU's {@code NewImageMode}: drive-mirror's target is made or found. */
    enum Mode { EXISTING, ABSOLUTE_PATHS }

    /**
     * The backing the target gets at the switch-over (QEMU's {@code MIRROR_SOURCE_BACKING_CHAIN},
     * drive-mirror's {@code mode: absolute-paths}): {@code backingNode} under the target, with
     * {@code backingFile} as its header names it.
     */
    record TargetBacking(String backingNode, String backingFile) {
    }

    /**
     * What the job copies and how. {@code commitLayers} is 0 for a mirror; for an active commit
     * (the target is the source's backing, QEMU's {@code commit_active_start}) it is how many
     * layers from the source down lie above the target: what they hold is the first work, the
     * target may be larger than the source, and the copy mode stays background. {@code openBacking}:
     * at the switch the target opens the backing its header names (QEMU's
     * {@code MIRROR_OPEN_BACKING_CHAIN}, drive-mirror's {@code mode: existing}).
     */
    record Settings(Sync sync, long granularity, long bufSize, boolean zeroTarget, boolean unmap, CopyMode copyMode,
                    String replaces, TargetBacking targetBacking, boolean openBacking, int commitLayers) {
        boolean commit() {
            return commitLayers > 0;
        }
    }

    /**
     * A client write through the filter, between its hooks: whether the target is written too,
     * whether its unaligned head and tail granules were dirty, and whether a clean one was known
     * to be in sync then (only once the initial marking is done).
     */
    private record ClientWrite(InFlight.Held held, boolean active, boolean headDirty, boolean tailDirty,
                               boolean cleanIsSynced) {
    }

    private final Settings settings;
    private final long granularity;
    private final InFlight inFlight;
    private final Map<WriteRequest, ClientWrite> writes = Collections.synchronizedMap(new IdentityHashMap<>());
    private final AtomicInteger backgroundWrites = new AtomicInteger();
    private final AtomicLong activeBytes = new AtomicLong();
    private final AtomicLong done = new AtomicLong();
    private final ConcurrentLinkedQueue<IOException> activeErrors = new ConcurrentLinkedQueue<>();

    /** The running job, once {@link #run} began: a client's write wakes it ({@link JobContext#wake}). */
    private volatile JobContext context;
    private volatile BlockNode source;
    private volatile BlockNode target;
    private volatile DirtyBitmap dirty;
    private volatile Drain drain;
    private volatile String filterName;
    private volatile String targetName;
    private volatile boolean writeBlocking;
    private volatile boolean activelySynced;
    /** {@code job-complete} or a soft cancel was accepted (set on the main loop by the hooks). */
    private volatile boolean finishAsked;
    private volatile boolean ready;
    /** The run is over or failing: the filter no longer writes the target (QEMU: job->ret < 0 or cancelled). */
    private volatile boolean stopped;
    private volatile AutoCloseable drained;
    /** What must be copied is marked: from now on a clean granule is one the target holds. */
    private volatile boolean marked;
    private long cursor;

    Mirror(Settings settings) {
        this.settings = settings;
        this.granularity = settings.granularity();
        this.inFlight = new InFlight(granularity);
        this.writeBlocking = settings.copyMode() == CopyMode.WRITE_BLOCKING;
    }

    /** The nodes, once the factory has them (the filter, with this hook, comes first). */
    void attach(BlockNode sourceNode, BlockNode targetNode, String target, DirtyBitmap bitmap, String filter,
                Drain sourceDrain) {
        this.source = sourceNode;
        this.target = targetNode;
        this.targetName = target;
        this.dirty = bitmap;
        this.filterName = filter;
        this.drain = sourceDrain;
    }

    // ---- the copy loop (the job's thread) ------------------------------------------------------

    @Override
    public void run(JobContext ctx) throws Exception {
        context = ctx;
        try {
            copy(ctx);
        } finally {
            stopped = true;
        }
    }

    private void copy(JobContext ctx) throws Exception {
        long size = source.size();
        long targetSize = target.size();
        // An active commit's base may be larger (QEMU grows a smaller one; the setup refuses that)
        if (settings.commit() ? targetSize < size : targetSize != size) {
            throw new IOException("Source and target image have different sizes");
        }
        if (size == 0) {
            ready = true;
            activelySynced = true;
            ctx.ready();
            while (!finishing(ctx)) {
                ctx.pausePoint();
                ctx.sleep(SLICE_MILLIS);
            }
            drained = drain.begin();
            return;
        }
        if (settings.sync() != Sync.NONE) {
            markInitial(ctx, size);
        }
        marked = true;
        long bufSize = settings.bufSize();
        long ioBytes = Math.min(bufSize, Math.max(bufSize / MAX_IN_FLIGHT, MAX_IO_BYTES));
        ioBytes = Math.max(granularity, ioBytes - ioBytes % granularity);
        int slots = (int) Math.max(1, Math.min(MAX_IN_FLIGHT, bufSize / ioBytes));
        long checkedAt = System.nanoTime();
        long checkedCount = -1;
        try (Copier copier = ctx.copier(slots, (int) ioBytes)) {
            while (true) {
                handleActiveErrors(ctx);
                ctx.pausePoint();
                long count = dirty.count();
                report(ctx, count);
                if (count > 0) {
                    iterate(ctx, copier, size, bufSize, ioBytes);
                    long now = System.nanoTime();
                    if (now - checkedAt >= CONVERGE_CHECK_NANOS) {
                        if (checkedCount >= 0 && count >= checkedCount && !writeBlocking) {
                            ctx.log().warn("{} {} is not converging: {} bytes still dirty, written as fast as they"
                                    + " are copied{}", settings.commit() ? "active commit" : "mirror", ctx.id(), count,
                                    settings.commit() ? "" : "; copy-mode write-blocking (block-job-change) makes it converge");
                        }
                        checkedAt = now;
                        checkedCount = count;
                    }
                    continue;
                }
                copier.drain();
                if (dirty.count() > 0 || !activeErrors.isEmpty()) {
                    continue;
                }
                if (!ready) {
                    if (!flushTarget(ctx)) {
                        continue;
                    }
                    report(ctx, 0); // BLOCK_JOB_READY says how much was done
                    // before the event: whoever sees READY sees a job that takes a soft cancel
                    ready = true;
                    syncedCheck();
                    ctx.ready();
                }
                syncedCheck();
                report(ctx, 0);
                if (finishing(ctx)) {
                    // The switch-over (or a soft cancel's point-in-time copy): clients wait from here
                    // until the main loop has moved them (or left them), as QEMU's in_drain.
                    drained = drain.begin();
                    if (dirty.count() > 0 || !activeErrors.isEmpty() || !flushTarget(ctx)) {
                        endDrain();
                        continue;
                    }
                    report(ctx, 0);
                    return;
                }
                ctx.sleep(SLICE_MILLIS); // a client's write ends it, as QEMU's job_enter from the filter
            }
        }
    }

    /**
     * Sync full marks what the chain allocates (everything when the target is zeroed first), top
     * what the top does; an active commit what the layers above the target do (QEMU's
     * {@code mirror_dirty_init} with its {@code base_overlay}).
     */
    private void markInitial(JobContext ctx, long size) throws IOException {
        if (settings.commit()) {
            for (long offset = 0; offset < size; ) {
                ctx.pausePoint();
                BlockStatus where = source.chainStatus(offset, size - offset);
                if (where.allocated() && where.depth() < settings.commitLayers()) {
                    dirty.set(offset, where.length());
                }
                offset += where.length();
            }
            return;
        }
        if (settings.zeroTarget()) {
            dirty.set(0, size); // every range is written, zeroes as write-zeroes: the old target is gone
            return;
        }
        for (long offset = 0; offset < size; ) {
            ctx.pausePoint();
            BlockStatus where = settings.sync() == Sync.TOP ? source.blockStatus(offset, size - offset)
                    : source.chainStatus(offset, size - offset);
            boolean allocated = settings.sync() == Sync.TOP ? where.allocated() && where.depth() == 0
                    : where.allocated();
            if (allocated) {
                dirty.set(offset, where.length());
            }
            offset += where.length();
        }
    }

    /** QEMU's {@code mirror_iteration}: the next dirty run from the cursor, cleared, then copied. */
    private void iterate(JobContext ctx, Copier copier, long size, long bufSize, long ioBytes) throws IOException {
        Optional<DirtyRange> next = dirty.nextDirty(cursor, size);
        if (next.isEmpty()) {
            cursor = 0;
            next = dirty.nextDirty(0, size);
            if (next.isEmpty()) {
                return;
            }
        }
        long offset = next.get().offset() - next.get().offset() % granularity;
        long end = Math.min(size, Math.min(next.get().end(), offset + bufSize));
        // Clear first: a write from now on marks the range again, and it is copied again.
        dirty.reset(offset, end - offset);
        cursor = end;
        for (long pos = offset; pos < end; ) {
            BlockStatus where;
            try {
                where = source.chainStatus(pos, end - pos);
            } catch (IOException e) {
                where = null; // copied as data: the read meets the error and the policy
            }
            long n = where == null ? end - pos : where.length();
            boolean zero = where != null && where.zero();
            // as QEMU, only copies are cut to the I/O size (zeroes need no buffer), zeroes to what an int holds
            n = Math.min(n, zero ? Integer.MAX_VALUE - Integer.MAX_VALUE % granularity : ioBytes);
            n -= n % granularity;
            if (n < granularity) {
                n = granularity; // a whole granule at least, copied as data
                zero = false;
            }
            n = Math.min(n, end - pos);
            submit(copier, pos, (int) n, zero);
            if (!zero) {
                ctx.throttle(n);
            }
            pos += n;
        }
    }

    /** One operation: holds its granules while it reads and writes; a failure marks them dirty again. */
    private void submit(Copier copier, long offset, int length, boolean zero) throws IOException {
        InFlight.Held[] held = new InFlight.Held[1];
        Copier.Read read = zero ? null : (o, buffer) -> {
            held[0] = inFlight.acquire(offset, length, length);
            try {
                source.read(o, buffer);
            } catch (IOException | RuntimeException e) {
                failed(held, offset, length);
                throw e;
            }
        };
        copier.copy(offset, length, read, (o, buffer) -> {
            if (held[0] == null) {
                held[0] = inFlight.acquire(offset, length, length);
            }
            try {
                if (zero && !stillZero(o, length)) {
                    // a client wrote here after the loop looked: the loop looks again, and copies
                    // what is data now, zeroes the rest (in write-blocking mode the client's write
                    // reached the target and left its bits clear; this marks them again)
                    dirty.set(o, length);
                    release(held);
                    return;
                }
                if (zero) {
                    target.writeZeroes(o, length, settings.unmap());
                } else {
                    target.write(o, buffer);
                }
                done.addAndGet(length);
            } catch (IOException | RuntimeException e) {
                failed(held, offset, length);
                throw e;
            }
            release(held);
        });
    }

    /**
     * Whether a range the loop found reading as zeroes still does, asked while the operation
     * holds it: a client's write between the look and the hold must not be zeroed on the target.
     */
    private boolean stillZero(long offset, int length) throws IOException {
        BlockStatus now = source.chainStatus(offset, length);
        return now.zero() && now.length() >= length;
    }

    private void failed(InFlight.Held[] held, long offset, long length) {
        dirty.set(offset, length);
        activelySynced = false;
        release(held);
    }

    private static void release(InFlight.Held[] held) {
        InFlight.Held h = held[0];
        held[0] = null;
        if (h != null) {
            h.close();
        }
    }

    /** In write-blocking mode, ready and clean with no write in flight that bypassed the target: actively synced. */
    private void syncedCheck() {
        if (writeBlocking && backgroundWrites.get() == 0 && dirty.count() == 0 && activeErrors.isEmpty()) {
            activelySynced = true;
        }
    }

    /** QEMU's {@code mirror_flush}: a failure goes through on-target-error; false means look again. */
    private boolean flushTarget(JobContext ctx) throws IOException {
        try {
            target.flush();
            return true;
        } catch (IOException e) {
            activelySynced = false;
            ctx.onIoError(e, false);
            return false;
        }
    }

    /** Failures of the filter's target writes (write-blocking) meet on-target-error here, on the job's thread. */
    private void handleActiveErrors(JobContext ctx) throws IOException {
        IOException e;
        while ((e = activeErrors.poll()) != null) {
            ctx.onIoError(e, false); // the range is dirty again: the loop copies it
        }
    }

    private void report(JobContext ctx, long count) {
        long copied = done.get();
        ctx.progress(copied, copied + count + inFlight.bytes() + activeBytes.get());
    }

    /** A client wrote (or a verb came): the loop looks now, not at its next 100 ms slice. */
    private void wrote() {
        JobContext ctx = context;
        if (ctx != null) {
            ctx.wake();
        }
    }

    // ---- the filter's hook (clients' threads) ------------------------------------------------

    @Override
    public void before(WriteRequest request) {
        if (request.length() == 0 || stopped) {
            return;
        }
        boolean active = writeBlocking;
        InFlight.Held held = inFlight.acquire(request.offset(), request.length(), 0);
        // Whether the unaligned head and tail granules were dirty before this write marks them
        DirtyBitmap d = dirty;
        boolean headDirty = request.offset() % granularity != 0 && d.isDirty(request.offset());
        boolean tailDirty = request.end() % granularity != 0 && d.isDirty(request.end() - 1);
        if (!active) {
            backgroundWrites.incrementAndGet();
        }
        writes.put(request, new ClientWrite(held, active, headDirty, tailDirty, marked));
    }

    @Override
    public void after(WriteRequest request, boolean succeeded) {
        ClientWrite w = writes.remove(request);
        if (w == null) {
            return;
        }
        try {
            if (w.active() && succeeded && !stopped) {
                syncTarget(request, w);
            }
        } finally {
            w.held().close();
            if (!w.active()) {
                backgroundWrites.decrementAndGet();
            }
            wrote();
        }
    }

    /**
     * QEMU's {@code do_sync_target_write}: the client's write, already on the source, goes to the
     * target too; an unaligned head or tail in a granule that was dirty is left to the copy loop,
     * and the granules written are clean again.
     */
    private void syncTarget(WriteRequest request, ClientWrite w) {
        long offset = request.offset();
        long end = request.end();
        if (offset % granularity != 0 && w.headDirty()) {
            offset = offset - offset % granularity + granularity;
            if (end <= offset) {
                return;
            }
        }
        if (end % granularity != 0 && w.tailDirty()) {
            end -= end % granularity;
            if (end <= offset) {
                return;
            }
        }
        long length = end - offset;
        // The granules the write covers whole are in sync now; a partial head or tail one was
        // clean, and so in sync but for this write, only if the initial marking was done then
        // (before it, clean says nothing: its bit may still come, or may have come and be lost)
        boolean partialsSynced = w.cleanIsSynced();
        long first = offset % granularity == 0 || !partialsSynced ? ceil(offset) : offset - offset % granularity;
        long last = end % granularity == 0 || !partialsSynced ? end - end % granularity : ceil(end);
        activeBytes.addAndGet(length);
        try {
            switch (request.kind()) {
                case WRITE -> {
                    // The data as it landed on the source: the granules are held, no one else writes them
                    ByteBuffer data = ByteBuffer.allocate(Math.toIntExact(length));
                    source.read(offset, data);
                    target.write(offset, data.flip(), request.flags());
                }
                case WRITE_ZEROES -> target.writeZeroes(offset, length, request.flags());
                case DISCARD -> target.discard(offset, length);
            }
            if (request.kind() != WriteRequest.Kind.DISCARD) {
                if (last > first) {
                    dirty.reset(first, Math.min(last, dirty.size()) - first);
                }
            } else {
                // a discard need not read back on the target as on the source: the copy loop
                // settles the range, and until then not every write over it reaches the target
                activelySynced = false;
            }
            done.addAndGet(length);
        } catch (IOException | RuntimeException e) {
            long from = offset - offset % granularity;
            dirty.set(from, ceil(end) - from);
            activelySynced = false;
            activeErrors.add(e instanceof IOException io ? io : new IOException(e.toString(), e));
        } finally {
            activeBytes.addAndGet(-length);
        }
    }

    private long ceil(long offset) {
        return offset % granularity == 0 ? offset : offset - offset % granularity + granularity;
    }

    // ---- the job's other hooks (main loop) ------------------------------------------------------

    @Override
    public boolean completable() {
        return true;
    }

    @Override
    public void complete(JobContext ctx) {
        if (!ready) {
            throw new CommandException("The active block job '" + ctx.id() + "' cannot be completed");
        }
        finishAsked = true;
        wrote(); // as QEMU's job_enter: the loop looks now, not at its next 100 ms slice
    }

    /** Before ready a cancel is always forced, as QEMU's {@code mirror_cancel}. */
    @Override
    public boolean cancel(boolean force) {
        boolean forced = force || !ready;
        if (!forced) {
            finishAsked = true; // a soft cancel ends as a completion without the switch
        }
        wrote();
        return forced;
    }

    /**
     * Whether the job is to finish: {@code job-complete} or a soft cancel, as the platform says,
     * or as the hooks above saw it a moment before the platform records it.
     */
    private boolean finishing(JobContext ctx) {
        return finishAsked || ctx.completeRequested();
    }

    /**
     * {@code block-job-change}: background to write-blocking, as QEMU 8.2's {@code mirror_change};
     * an active commit changes nothing (QEMU's commit job driver has no {@code change}).
     */
    @Override
    public void change(Map<String, Object> options) {
        if (settings.commit()) {
            JobBody.super.change(options);
            return;
        }
        Object mode = options.get("copy-mode");
        if (mode == null) {
            return;
        }
        String current = writeBlocking ? "write-blocking" : "background";
        if (current.equals(mode)) {
            return;
        }
        if (!"write-blocking".equals(mode)) {
            throw new CommandException("Change to copy mode '" + mode + "' is not implemented");
        }
        writeBlocking = true;
        wrote(); // the loop looks again: it may be actively synced now
    }

    @Override
    public Optional<Convergence> convergence() {
        DirtyBitmap d = dirty;
        long count = d == null ? 0 : d.count();
        return Optional.of(new Convergence(count + inFlight.bytes() + activeBytes.get(), activelySynced));
    }

    /**
     * The switch-over, clients still held off: every user of the source (or of {@code replaces})
     * now uses the target; undone if another member of the transaction fails.
     */
    @Override
    public void prepare(GraphEdit edit) {
        String from = settings.replaces() != null ? settings.replaces() : filterName;
        edit.dropUses(targetName); // the target's users now need not share with the job's writes
        TargetBacking b = settings.targetBacking();
        String failure = null;
        if (b != null) {
            edit.setBacking(targetName, b.backingNode(), b.backingFile());
        } else if (settings.openBacking()) {
            try {
                edit.openBacking(targetName);
            } catch (CommandException e) {
                // As QEMU's mirror_exit_common: reported, the switch goes on, the job ends with EINVAL
                JobContext ctx = context;
                if (ctx != null) {
                    ctx.log().error("Could not open backing file: {}", e.getMessage());
                }
                failure = "Invalid argument";
            }
        }
        edit.replaceUsers(from, targetName);
        if (failure != null) {
            throw new EditsKeptException(failure);
        }
    }

    @Override
    public void commit(GraphEdit edit) {
        edit.removeFilter(filterName);
        endDrain();
    }

    @Override
    public void clean() {
        endDrain();
    }

    private void endDrain() {
        AutoCloseable d = drained;
        drained = null;
        if (d != null) {
            try {
                d.close();
            } catch (Exception e) {
                // ending a drain does not fail
            }
        }
    }
}
