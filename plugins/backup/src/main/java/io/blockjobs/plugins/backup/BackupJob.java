package io.blockjobs.plugins.backup;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.NewImage;
import io.blockjobs.sdk.job.OnError;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * QMP {@code blockdev-backup}: a point-in-time copy of {@code device} into {@code target}, while
 * clients keep writing the device, as QEMU's {@code block/backup.c}. A {@code copy-before-write}
 * filter goes above the device; it copies the old data of a cluster to the target before a
 * client's write lands on it, and the job's background pass copies the rest, each cluster once
 * (one copy bitmap, {@link BlockCopy}).
 *
 * <p>{@code sync}: {@code full} copies every cluster, {@code top} only those the device's own
 * layer allocates, {@code bitmap} (and {@code incremental}, its {@code on-success} form) those a
 * dirty bitmap marks; {@code none} copies only what the filter saves, until the job is cancelled
 * (fleecing, replication). {@code bitmap-mode} says what becomes of the bitmap: see
 * {@link #syncBitmap}.
 */
final class BackupJob {
    /** Memory the background pass may hold in buffers at once, as QEMU's {@code BLOCK_COPY_MAX_MEM}. */
    private static final long MAX_MEM = 128L << 20;

    private BackupJob() {
    }

    /** QEMU's {@code MirrorSyncMode}, as backup takes it. */
    public enum Sync {
        FULL, TOP, NONE, BITMAP, INCREMENTAL;

        String qapi() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /** QEMU's {@code BitmapSyncMode}. */
    public enum BitmapMode {
        ON_SUCCESS, NEVER, ALWAYS;

        String qapi() {
            return name().toLowerCase(Locale.ROOT).replace('_', '-');
        }
    }

    /** QEMU's {@code OnCbwError} (backup's {@code on-cbw-error}, QEMU 10.1). */
    public enum OnCbwError {
        BREAK_GUEST_WRITE, BREAK_SNAPSHOT
    }

    /** QEMU's {@code BackupPerf} ({@code x-perf}). */
    public record Perf(Optional<Boolean> useCopyRange, Optional<Long> maxWorkers, Optional<Long> maxChunk,
                       Optional<Long> minClusterSize) {
    }

    /** {@code blockdev-backup}'s arguments ({@code BackupCommon} and {@code target}), as QEMU names them. */
    public record Args(Optional<String> jobId, String device, String target, Sync sync, Optional<Long> speed,
                       Optional<String> bitmap, Optional<BitmapMode> bitmapMode, Optional<Boolean> compress,
                       Optional<OnError> onSourceError, Optional<OnError> onTargetError,
                       Optional<OnCbwError> onCbwError, Optional<Boolean> autoFinalize,
                       Optional<Boolean> autoDismiss, Optional<String> filterNodeName,
                       Optional<Boolean> discardSource, Optional<Perf> xPerf) implements JobArgs {
        @Override
        public Optional<OnError> onError() {
            return Optional.empty();
        }
    }

    /** QEMU's {@code NewImageMode}. */
    public enum Mode {
        EXISTING, ABSOLUTE_PATHS
    }

    /** {@code drive-backup}'s arguments: {@code BackupCommon} with a target file, as QEMU names them. */
    public record DriveArgs(Optional<String> jobId, String device, String target, Optional<String> format,
                            Optional<Mode> mode, Sync sync, Optional<Long> speed, Optional<String> bitmap,
                            Optional<BitmapMode> bitmapMode, Optional<Boolean> compress,
                            Optional<OnError> onSourceError, Optional<OnError> onTargetError,
                            Optional<OnCbwError> onCbwError, Optional<Boolean> autoFinalize,
                            Optional<Boolean> autoDismiss, Optional<String> filterNodeName,
                            Optional<Boolean> discardSource, Optional<Perf> xPerf) implements JobArgs {
        @Override
        public Optional<OnError> onError() {
            return Optional.empty();
        }
    }

    static JobBody prepare(Args a, JobSetup setup) {
        requireNode(setup, a.device());
        requireNode(setup, a.target());
        return prepare(a, setup, a.target());
    }

    /**
     * QEMU's {@code drive_backup_prepare} (deprecated in QEMU 6.2, still there): the target file
     * is created at the device's size unless {@code mode: existing} — for {@code sync: top} over
     * the device's backing file (a device without one makes it {@code full}), for {@code none}
     * over the device itself, else alone — then opened, and backed up to as by blockdev-backup.
     */
    static JobBody prepareDrive(DriveArgs a, JobSetup setup) {
        List<ChainLink> chain = requireNode(setup, a.device());
        Mode mode = a.mode().orElse(Mode.ABSOLUTE_PATHS);
        String format = a.format().orElse(mode == Mode.EXISTING ? null : chain.get(0).format());
        Sync sync = a.sync();
        ChainLink backing = chain.size() > 1 ? chain.get(1) : null;
        if (sync == Sync.TOP && backing == null) {
            sync = Sync.FULL;
        }
        ChainLink under = sync == Sync.NONE ? chain.get(0) : sync == Sync.TOP ? backing : null;
        long size;
        try {
            size = chain.get(0).node().size();
        } catch (IOException e) {
            throw new CommandException("bdrv_getlength failed: " + e.getMessage());
        }
        BlockNode target;
        if (mode == Mode.EXISTING) {
            target = setup.openImage(a.target(), format, null, a.device());
        } else {
            NewImage image = NewImage.of(a.target(), format, size).withOptionsOf(a.device());
            target = setup.createImage(under == null ? image : image.withBacking(under.filename(), under.format()));
        }
        Args common = new Args(a.jobId(), a.device(), target.nodeName(), sync, a.speed(), a.bitmap(), a.bitmapMode(),
                a.compress(), a.onSourceError(), a.onTargetError(), a.onCbwError(), a.autoFinalize(),
                a.autoDismiss(), a.filterNodeName(), a.discardSource(), a.xPerf());
        return prepare(common, setup, target.nodeName());
    }

    /** QEMU's {@code do_backup_common} and {@code backup_job_create}: checks, then the filter and the job. */
    static JobBody prepare(Args a, JobSetup setup, String targetName) {
        long maxWorkers = a.xPerf().flatMap(Perf::maxWorkers).orElse(64L);
        long maxChunk = a.xPerf().flatMap(Perf::maxChunk).orElse(0L);
        Sync sync = a.sync();
        if ((sync == Sync.BITMAP || sync == Sync.INCREMENTAL) && a.bitmap().isEmpty()) {
            throw new CommandException("must provide a valid bitmap name for '" + sync.qapi() + "' sync mode");
        }
        Optional<BitmapMode> mode = a.bitmapMode();
        if (sync == Sync.INCREMENTAL) {
            if (mode.isPresent() && mode.get() != BitmapMode.ON_SUCCESS) {
                throw new CommandException("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
            }
            sync = Sync.BITMAP;
            mode = Optional.of(BitmapMode.ON_SUCCESS);
        }
        DirtyBitmap bitmap = null;
        if (a.bitmap().isPresent()) {
            String name = a.bitmap().get();
            try {
                bitmap = setup.useBitmap(a.device(), name);
            } catch (CommandException e) {
                if (!e.getMessage().startsWith("Bitmap '")) { // not busy nor inconsistent: not there
                    throw new CommandException("Bitmap '" + name + "' could not be found");
                }
                if (mode.isEmpty()) {
                    throw new CommandException("Bitmap sync mode must be given when providing a bitmap");
                }
                throw e;
            }
            if (mode.isEmpty()) {
                throw new CommandException("Bitmap sync mode must be given when providing a bitmap");
            }
            if (sync == Sync.NONE) {
                throw new CommandException("sync mode 'none' does not produce meaningful bitmap outputs");
            }
            if (mode.get() == BitmapMode.NEVER && sync != Sync.BITMAP) {
                throw new CommandException("Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '"
                        + sync.qapi() + "'");
            }
        } else if (mode.isPresent()) {
            throw new CommandException("Cannot specify bitmap sync mode without a bitmap");
        }
        if (a.device().equals(targetName)) {
            throw new CommandException("Source and target cannot be the same");
        }
        if (maxWorkers < 1 || maxWorkers > Integer.MAX_VALUE) {
            throw new CommandException("max-workers must be between 1 and " + Integer.MAX_VALUE);
        }
        if (maxChunk < 0) {
            throw new CommandException("max-chunk must be zero (which means no limit) or positive");
        }
        Set<BlockPermission> none = EnumSet.noneOf(BlockPermission.class);
        Set<BlockPermission> all = EnumSet.allOf(BlockPermission.class);
        // The op blockers of QEMU's backup source and target; the filter takes the permissions.
        boolean discardSource = a.discardSource().orElse(false);
        BlockNode source = setup.use(a.device(), "source", none, all);
        BlockNode target = setup.use(targetName, "target", none, all);
        boolean compress = a.compress().orElse(false);
        if (compress && !target.supportsCompressedWrites()) {
            // QEMU names the BlockBackend here, and a node has none: its message ends with a blank.
            throw new CommandException("Compression is not supported for this drive ");
        }
        try {
            if (source.size() != target.size()) {
                throw new CommandException("Source and target image have different sizes");
            }
        } catch (IOException e) {
            throw new CommandException("Unable to get length for '" + a.device() + "': " + e.getMessage());
        }
        if (bitmap != null) {
            bitmap.createSuccessor(); // frozen: from here on writes go to the successor
        }
        Map<String, Object> options = new HashMap<>();
        options.put("target", targetName);
        if (discardSource) {
            options.put("discard-source", true);
        }
        a.onCbwError().ifPresent(o -> options.put("on-cbw-error", o.name().toLowerCase(Locale.ROOT).replace('_', '-')));
        BlockNode filter = setup.insertFilter(a.device(),
                new FilterSpec("copy-before-write", a.filterNodeName().orElse(null), options, List.of()));
        CopyBeforeWrite.Node cbw = CopyBeforeWrite.lookup(filter.nodeName())
                .orElseThrow(() -> new IllegalStateException("copy-before-write filter " + filter.nodeName() + " is not open"));
        BlockCopy copy = cbw.blockCopy();
        if (maxChunk > 0 && maxChunk < copy.clusterSize()) {
            throw new CommandException("Required max-chunk (" + maxChunk + ") is less than backup cluster size ("
                    + copy.clusterSize() + ")");
        }
        copy.setCompress(compress);
        if (sync == Sync.BITMAP) {
            // Only what the bitmap marks; clusters the filter may have saved already stay saved.
            copy.restrictTo(bitmapRuns(bitmap, copy.size()));
        }
        setup.use(filter.nodeName(), "main node", none, all);
        // QEMU's block_copy_max_transfer: a compressed copy goes a cluster at a time.
        int chunk = compress ? copy.clusterSize() : (int) Math.max(copy.clusterSize(),
                maxChunk > 0 ? Math.min(maxChunk, BlockCopy.MAX_BUFFER) : BlockCopy.MAX_BUFFER);
        chunk = chunk / copy.clusterSize() * copy.clusterSize();
        int workers = (int) Math.max(1, Math.min(maxWorkers, MAX_MEM / chunk));
        return new Body(sync, mode.orElse(null), bitmap, cbw, source, chunk, workers);
    }

    private static List<ChainLink> requireNode(JobSetup setup, String name) {
        try {
            return setup.chain(name);
        } catch (CommandException e) {
            throw new CommandException("Cannot find device='" + name + "' nor node-name='" + name + "'");
        }
    }

    private static List<BlockCopy.Run> bitmapRuns(DirtyBitmap bitmap, long size) {
        List<BlockCopy.Run> runs = new ArrayList<>();
        long pos = 0;
        while (pos < size) {
            Optional<DirtyRange> r = bitmap.nextDirty(pos, size);
            if (r.isEmpty()) {
                break;
            }
            runs.add(new BlockCopy.Run(r.get().offset(), r.get().length()));
            pos = r.get().end();
        }
        return runs;
    }

    /** The running backup. */
    private static final class Body implements JobBody {
        private final Sync sync;
        private final BitmapMode mode;
        private final DirtyBitmap bitmap;
        private final CopyBeforeWrite.Node cbw;
        private final BlockCopy copy;
        private final BlockNode source;
        private final int chunk;
        private final int workers;

        Body(Sync sync, BitmapMode mode, DirtyBitmap bitmap, CopyBeforeWrite.Node cbw, BlockNode source, int chunk,
             int workers) {
            this.sync = sync;
            this.mode = mode;
            this.bitmap = bitmap;
            this.cbw = cbw;
            this.copy = cbw.blockCopy();
            this.source = source;
            this.chunk = chunk;
            this.workers = workers;
        }

        @Override
        public void run(JobContext ctx) throws Exception {
            if (sync == Sync.TOP) {
                resetUnallocated(ctx);
            }
            progress(ctx);
            if (sync == Sync.NONE) {
                // Nothing to copy but what the filter saves, until the job is cancelled (QEMU's backup_run
                // yields until woken): wake for a copy that ended, or to look for a cancel, not in a spin.
                while (true) {
                    ctx.pausePoint();
                    checkSnapshot();
                    copy.awaitCopy(100);
                    progress(ctx);
                }
            }
            try (Copier copier = ctx.copier(workers, chunk)) {
                while (true) {
                    long pos = 0;
                    BlockCopy.Run next;
                    while ((next = copy.nextDirty(pos, chunk)) != null) {
                        checkSnapshot();
                        BlockCopy.Chunk chunk = copy.chunk(next.offset(), next.length());
                        copier.copy(next.offset(), (int) next.length(), chunk::read, chunk::write);
                        ctx.throttle(next.length());
                        progress(ctx);
                        pos = next.end();
                    }
                    copier.drain();
                    while (!copy.finished()) {
                        if (copy.nextDirty(0, chunk) != null) {
                            break; // a copy failed and left clusters behind: another pass
                        }
                        copy.awaitSettled(100); // the filter's copies in flight end (or fail)
                    }
                    if (copy.finished()) {
                        break;
                    }
                    ctx.pausePoint();
                }
            }
            checkSnapshot();
            cbw.target().flush(); // durable before the job reports success
            progress(ctx);
        }

        /** {@code sync: top}: clusters the device's own layer does not allocate are left out. */
        private void resetUnallocated(JobContext ctx) throws IOException {
            long size = copy.size();
            long pos = 0;
            while (pos < size) {
                ctx.pausePoint();
                BlockStatus s = source.blockStatus(pos, size - pos);
                if (!s.allocated()) {
                    copy.reset(pos, s.length());
                }
                pos = s.end();
            }
        }

        private void checkSnapshot() throws IOException {
            IOException broken = cbw.snapshotError();
            if (broken != null) {
                throw new IOException("copy-before-write failed: " + broken.getMessage(), broken);
            }
        }

        private void progress(JobContext ctx) {
            long done = copy.copiedBytes();
            ctx.progress(done, done + copy.remainingBytes());
        }

        @Override
        public void commit(GraphEdit edit) {
            syncBitmap(true);
        }

        @Override
        public void abort(GraphEdit edit) {
            syncBitmap(false);
        }

        /**
         * QEMU's {@code backup_cleanup_sync_bitmap}. On success with {@code on-success}, and with
         * {@code always}, the successor (the writes since the backup began) takes the bitmap's
         * place; else (failure, or {@code never}) the successor's bits are merged back, and nothing
         * is forgotten. With {@code always} a failed backup also keeps the clusters it did not copy.
         */
        private void syncBitmap(boolean succeeded) {
            if (bitmap == null) {
                return;
            }
            boolean abdicate = (succeeded || mode == BitmapMode.ALWAYS) && mode != BitmapMode.NEVER;
            if (abdicate && !succeeded) {
                // always + failure: the bitmap becomes what was not copied plus the new writes. The
                // frozen bitmap is made "what was not copied", then takes the successor's bits back.
                bitmap.reset(0, bitmap.size());
                for (BlockCopy.Run r : copy.dirtyRuns()) {
                    bitmap.set(r.offset(), r.length());
                }
                bitmap.reclaim();
            } else if (abdicate) {
                bitmap.abdicate();
            } else {
                bitmap.reclaim();
            }
        }
    }
}
