package io.blockjobs.plugins.commit;

import io.blockjobs.plugins.mirror.ActiveCommit;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Chains;
import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.pf4j.Extension;

/**
 * QMP {@code block-commit}, intermediate commit: copies every range that lives in {@code top} or
 * a layer between it and {@code base} down into {@code base}, then makes {@code base} the backing
 * of {@code top}'s overlay, dropping the committed layers; active commit when {@code top} is
 * the active layer (see {@link #prepareActive}). As QEMU does, an intermediate commit puts a
 * {@code commit_top} filter above {@code top} (named by {@code filter-node-name}), and freezes
 * the backing links from it down to the base while it runs.
 *
 * <p>{@code x-safe: true} (a blockjobs extension) makes the commit safe for the layers left
 * behind: before a range of the base is overwritten, its old contents are copied up into the
 * image directly above the base, unless that image holds the range itself.
 *
 * <p>{@code x-reclaim: true} (a blockjobs extension) makes it space-reclaiming: the committed
 * layers release each range once it is durable in the base (see {@link Reclaimer}). An active
 * commit refuses it: clients write the top while the job runs, a cancel after {@code ready} must
 * leave the top whole, and the layers between are not the job's to write.
 */
@Extension
public final class CommitJob implements BlockjobsPlugin {
    static final int CHUNK = 512 * 1024;
    static final int IN_FLIGHT = 8;
    private static final Set<BlockPermission> NONE = EnumSet.noneOf(BlockPermission.class);
    private static final Set<BlockPermission> ALL = EnumSet.allOf(BlockPermission.class);

    /** {@code block-commit}'s arguments, as QEMU names them. */
    public record Args(Optional<String> jobId, String device, Optional<String> top, Optional<String> topNode,
                       Optional<String> base, Optional<String> baseNode, Optional<String> backingFile,
                       Optional<Boolean> backingMaskProtocol, Optional<Long> speed, Optional<OnError> onError,
                       Optional<String> filterNodeName, Optional<Boolean> autoFinalize,
                       Optional<Boolean> autoDismiss, Optional<Boolean> xSafe,
                       Optional<Boolean> xReclaim) implements JobArgs {
    }

    @Override
    public List<JobCommand<?>> jobCommands() {
        return List.of(new JobCommand<>("block-commit", "commit", Args.class, CommitJob::prepare));
    }

    /** Checks the arguments in QEMU's order and with its messages ({@code qmp_block_commit}). */
    static JobBody prepare(Args a, JobSetup setup) {
        // As QEMU: an unknown device is DeviceNotFound (libvirt probes for it), before anything else.
        List<ChainLink> chain = setup.chain(a.device());
        if (!setup.isRootNode(a.device())) {
            throw new CommandException("Need a root block node");
        }
        String topNode = a.topNode().orElse(null);
        String topFile = a.top().orElse(null);
        int top = 0;
        if (topNode != null && topFile != null) {
            throw new CommandException("'top-node' and 'top' are mutually exclusive");
        } else if (topNode != null) {
            Chains.requireNode(setup, topNode);
            top = Chains.indexOfNode(chain, topNode);
            if (top < 0) {
                throw new CommandException("'" + topNode + "' is not in this backing file chain");
            }
        } else if (topFile != null && !topFile.equals(chain.get(0).filename())) {
            top = Chains.findBackingImage(chain, 0, topFile);
            if (top < 0) {
                throw new CommandException("Top image file " + topFile + " not found");
            }
        }
        String baseNode = a.baseNode().orElse(null);
        String baseFile = a.base().orElse(null);
        int base;
        if (baseNode != null && baseFile != null) {
            throw new CommandException("'base-node' and 'base' are mutually exclusive");
        } else if (baseNode != null) {
            Chains.requireNode(setup, baseNode);
            base = Chains.indexOfNode(chain, baseNode);
            if (base < top) {
                throw new CommandException("'" + baseNode + "' is not in this backing file chain");
            }
        } else if (baseFile != null) {
            base = Chains.findBackingImage(chain, top, baseFile);
            if (base < 0) {
                throw new CommandException("Can't find '" + baseFile + "' in the backing chain");
            }
        } else {
            base = chain.size() - 1;
        }
        if (base == top) {
            throw new CommandException("cannot commit an image into itself");
        }
        if (top == 0) {
            return prepareActive(a, setup, chain, base);
        }
        boolean safe = a.xSafe().orElse(false);
        boolean reclaim = a.xReclaim().orElse(false);
        if (safe && reclaim) {
            throw new CommandException("x-safe and x-reclaim cannot be used together");
        }
        try {
            if (chain.get(base).node().size() < chain.get(top).node().size()) {
                throw new CommandException("'" + chain.get(base).nodeName() + "' is smaller than '"
                        + chain.get(top).nodeName() + "'; resizing the base is not supported");
            }
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        }
        String overlay = chain.get(top - 1).nodeName();
        String topName = chain.get(top).nodeName();
        String baseName = chain.get(base).nodeName();
        // The overlay's header gets the new backing file name: QEMU reopens a read-only overlay
        // read-write for that (bdrv_child_cb_update_filename); done here, it fails before any copy.
        setup.reopenReadWrite(overlay);
        BlockNode filter = setup.insertFilter(topName,
                new FilterSpec("commit_top", a.filterNodeName().orElse(null), Map.of(), List.of()));
        setup.use(a.device(), "main node", NONE, ALL);
        List<BlockNode> layers = new java.util.ArrayList<>();
        List<BlockNode> committed = new java.util.ArrayList<>();
        BlockNode aboveBase = null;
        for (int i = top; i < base; i++) {
            String name = chain.get(i).nodeName();
            boolean written = reclaim || safe && i == base - 1; // the job gives up or keeps data in these
            if (written) {
                setup.reopenReadWrite(name);
            }
            BlockNode layer = setup.use(name, "intermediate node",
                    written ? EnumSet.of(BlockPermission.WRITE_UNCHANGED) : NONE,
                    EnumSet.of(BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
            layers.add(layer);
            if (reclaim) {
                committed.add(layer);
            }
            if (i == base - 1) {
                aboveBase = layer;
            }
        }
        setup.freezeBackingChain(filter.nodeName(), baseName);
        setup.reopenReadWrite(baseName);
        setup.use(baseName, "base", NONE, ALL);
        BlockNode baseLayer = setup.use(baseName, "root",
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED));
        setup.use(topName, "root", NONE, ALL); // QEMU's commit reads the top through a BlockBackend that takes nothing
        BlockNode topLayer = layers.get(0);
        BlockNode keepOld = safe ? aboveBase : null;
        String backingFile = a.backingFile().orElse(null);
        boolean mask = a.backingMaskProtocol().orElse(false);
        int count = base - top; // layers [top, base) are copied
        return new JobBody() {
            @Override
            public void run(JobContext ctx) throws Exception {
                copyDown(ctx, topLayer, baseLayer, count, keepOld, committed);
            }

            @Override
            public void prepare(GraphEdit edit) {
                edit.setBacking(overlay, baseName, backingFile, mask);
                // As QEMU's bdrv_drop_intermediate: whoever else stands on the filter (a side
                // overlay, an export) moves onto the base too, not onto the committed layer.
                edit.replaceUsers(filter.nodeName(), baseName);
            }
        };
    }

    /**
     * Active commit: the top is the active layer, written by clients while the job runs. As in
     * QEMU, where {@code commit_active_start} is {@code mirror_start_job}, this is the mirror
     * plugin's loop ({@link ActiveCommit}): a {@code mirror_top} filter marks what clients write,
     * the job copies everything above the base down, says {@code ready} and keeps copying; on
     * {@code job-complete} it holds clients off for the last copy and the switch-over moves them
     * to the base. A cancel after {@code ready} leaves the chain as it was, the data in both.
     */
    static JobBody prepareActive(Args a, JobSetup setup, List<ChainLink> chain, int base) {
        if (a.backingFile().isPresent()) {
            throw new CommandException("'backing-file' specified, but 'top' is the active layer");
        }
        if (a.xSafe().orElse(false)) {
            throw new CommandException("x-safe is not supported for an active commit");
        }
        if (a.xReclaim().orElse(false)) {
            throw new CommandException("x-reclaim is not supported for an active commit");
        }
        return ActiveCommit.start(setup, chain.get(0).nodeName(), chain.get(base).nodeName(),
                a.filterNodeName().orElse(null));
    }

    /**
     * Copies down every range whose data lives in one of the {@code layers} layers from top,
     * several at once. With {@code keepOld} (safe commit), the base's old contents of each range
     * are first copied up, durably, into {@code keepOld} (the layer right above the base) wherever
     * that layer does not hold the range itself: every intermediate image stays a valid delta
     * over the base. Progress counts the whole disk, as QEMU's commit does. A range whose copy
     * failed and was ignored ({@code on-error ignore}) is copied again, as QEMU's commit retries
     * it: the layers are dropped only once the base holds all.
     */
    static void copyDown(JobContext ctx, BlockNode top, BlockNode base, int layers, BlockNode keepOld,
                         List<BlockNode> reclaim) throws IOException {
        long size = top.size();
        int chunk = Math.max(CHUNK, top.clusterSize());
        long offset = 0;
        ctx.progress(0, size);
        try (Copier copier = ctx.copier(IN_FLIGHT, chunk)) {
            Retrying copies = new Retrying(ctx, copier);
            Reclaimer reclaimer = new Reclaimer(base, reclaim, copies);
            while (offset < size) {
                ctx.pausePoint();
                BlockStatus where = top.chainStatus(offset, Math.min(chunk - offset % chunk, size - offset));
                long length = where.length();
                if (where.allocated() && where.depth() < layers) {
                    long at = offset;
                    int n = (int) length;
                    if (keepOld != null) {
                        copies.copy(at, n, null, (o, b) -> {
                            ByteBuffer old = ByteBuffer.allocate(n);
                            base.read(o, old);
                            keepOld.writeUnallocated(o, old.flip());
                            keepOld.flush(); // the old data is safe before the base changes
                            copyOne(top, base, where.zero(), o, n);
                        });
                    } else if (where.zero()) {
                        copies.copy(at, n, null, (o, b) -> base.writeZeroes(o, n, true));
                    } else {
                        copies.copy(at, n, top::read, base::write);
                    }
                    reclaimer.copied(offset, length);
                    ctx.throttle(length);
                }
                offset += length;
                ctx.progress(offset, size);
            }
            copies.drain();
            base.flush(); // durable before the chain changes
            reclaimer.release();
        }
    }

    /**
     * Hands copies to the copier and remembers those that failed until they succeed, so that the
     * ones the {@code ignore} policy skipped are copied again after the pass (each again through
     * the policy, with a pause point between passes), as QEMU's commit retries a failed range.
     */
    static final class Retrying {
        private record Copy(long offset, int length, Copier.Read read, Copier.Write write) {
        }

        private final JobContext ctx;
        private final Copier copier;
        private final java.util.Set<Copy> failed = java.util.concurrent.ConcurrentHashMap.newKeySet();

        Retrying(JobContext ctx, Copier copier) {
            this.ctx = ctx;
            this.copier = copier;
        }

        void copy(long offset, int length, Copier.Read read, Copier.Write write) throws IOException {
            submit(new Copy(offset, length, read, write));
        }

        private void submit(Copy c) throws IOException {
            Copier.Read read = c.read() == null ? null : (o, b) -> {
                try {
                    c.read().read(o, b);
                } catch (IOException | RuntimeException e) {
                    failed.add(c);
                    throw e;
                }
            };
            copier.copy(c.offset(), c.length(), read, (o, b) -> {
                try {
                    c.write().write(o, b);
                } catch (IOException | RuntimeException e) {
                    failed.add(c);
                    throw e;
                }
                failed.remove(c); // a retry after stop succeeded
            });
        }

        /** Waits for every copy, copying again those that were skipped, until none is left. */
        void drain() throws IOException {
            while (true) {
                copier.drain();
                if (failed.isEmpty()) {
                    return;
                }
                List<Copy> again = new java.util.ArrayList<>(failed);
                failed.removeAll(again);
                ctx.pausePoint();
                for (Copy c : again) {
                    submit(c);
                }
            }
        }
    }

    private static void copyOne(BlockNode top, BlockNode base, boolean zero, long offset, int length)
            throws IOException {
        if (zero) {
            base.writeZeroes(offset, length, true);
        } else {
            ByteBuffer data = ByteBuffer.allocate(length);
            top.read(offset, data);
            base.write(offset, data.flip());
        }
    }

    /**
     * The space-reclaiming commit ({@code x-reclaim}): once ranges are durable in the base, the
     * committed layers give up their clusters for them, so committing a large overlay does not
     * need its size again in free space. Batched: one flush of the base per 8 MiB.
     */
    static final class Reclaimer {
        private static final long BATCH = 8L << 20;
        private final BlockNode base;
        private final List<BlockNode> layers;
        private final Retrying copier;
        private final List<long[]> pending = new java.util.ArrayList<>();
        private long pendingBytes;

        Reclaimer(BlockNode base, List<BlockNode> layers, Retrying copier) {
            this.base = base;
            this.layers = layers;
            this.copier = copier;
        }

        void copied(long offset, long length) throws IOException {
            if (layers.isEmpty()) {
                return;
            }
            pending.add(new long[] {offset, length});
            pendingBytes += length;
            if (pendingBytes >= BATCH) {
                release();
            }
        }

        void release() throws IOException {
            if (pending.isEmpty()) {
                return;
            }
            copier.drain(); // the copies of the batch have landed, skipped ones copied again
            base.flush(); // the data is safe in the base before the layers let it go
            // Bottom layer first: a layer above still holds the data until its own turn, so the
            // view from the top never falls through to an older copy, whenever the job stops.
            for (int i = layers.size() - 1; i >= 0; i--) {
                BlockNode layer = layers.get(i);
                for (long[] r : pending) {
                    layer.unallocate(r[0], r[1]);
                }
                layer.flush();
            }
            pending.clear();
            pendingBytes = 0;
        }
    }
}
