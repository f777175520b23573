package io.blockjobs.plugins.commit;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Chains;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.JobType;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.job.WriteTracker;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Optional;
import org.pf4j.Extension;

/**
 * QMP {@code block-commit}, intermediate commit: copies every range that lives in {@code top} or
 * a layer between it and {@code base} down into {@code base}, then makes {@code base} the backing
 * of {@code top}'s overlay, dropping the committed layers; active commit when {@code top} is
 * the active layer (see {@link #prepareActive}).
 *
 * <p>{@code x-safe: true} (a blockjobs extension) makes the commit safe for the layers left
 * behind: before a range of the base is overwritten, its old contents are copied up into the
 * image directly above the base, unless that image holds the range itself.
 *
 * <p>{@code x-reclaim: true} (a blockjobs extension) makes it space-reclaiming: the committed
 * layers release each range once it is durable in the base (see {@link Reclaimer}).
 */
@Extension
public final class CommitJob implements JobType {
    static final int CHUNK = 512 * 1024;

    /** {@code block-commit}'s arguments, as QEMU names them. */
    public record Args(Optional<String> jobId, String device, Optional<String> top, Optional<String> topNode,
                       Optional<String> base, Optional<String> baseNode, Optional<String> backingFile,
                       Optional<Boolean> backingMaskProtocol, Optional<Long> speed, Optional<OnError> onError,
                       Optional<String> filterNodeName, Optional<Boolean> autoFinalize,
                       Optional<Boolean> autoDismiss, Optional<Boolean> xSafe,
                       Optional<Boolean> xReclaim) implements JobArgs {
    }

    @Override
    public List<JobCommand<?>> commands() {
        return List.of(new JobCommand<>("block-commit", "commit", Args.class, CommitJob::prepare));
    }

    static JobBody prepare(Args a, JobSetup setup) {
        List<ChainLink> chain = setup.chain(a.device());
        String topNode = a.topNode().orElse(null);
        String topFile = a.top().orElse(null);
        int top;
        if (topNode == null && topFile == null) {
            top = 0;
        } else if (topNode != null && topNode.equals(a.device()) || topFile != null && topFile.equals(chain.get(0).filename())) {
            top = 0;
        } else {
            top = Chains.find(chain, 0, "top-node", topNode, "top", topFile);
        }
        String baseNode = a.baseNode().orElse(null);
        String baseFile = a.base().orElse(null);
        if (baseNode != null && baseNode.equals(chain.get(top).nodeName())
                || baseFile != null && baseFile.equals(chain.get(top).filename())) {
            throw new CommandException("cannot commit an image into itself");
        }
        int base = Chains.find(chain, top, "base-node", baseNode, "base", baseFile);
        if (base < 0) {
            base = chain.size() - 1;
        }
        if (base <= top) {
            throw new CommandException("cannot commit an image into itself");
        }
        if (top == 0) {
            return prepareActive(a, setup, chain, base);
        }
        BlockNode topLayer = chain.get(top).node();
        BlockNode baseLayer = setup.claimWritable(chain.get(base).nodeName());
        boolean safe = a.xSafe().orElse(false);
        boolean reclaim = a.xReclaim().orElse(false);
        if (safe && reclaim) {
            throw new CommandException("x-safe and x-reclaim cannot be used together");
        }
        List<BlockNode> committed = new java.util.ArrayList<>();
        for (int i = top; i < base; i++) {
            if (safe && i == base - 1 || reclaim) {
                committed.add(setup.claimWritable(chain.get(i).nodeName())); // written by the job
            } else {
                committed.add(setup.claim(chain.get(i).nodeName()));
            }
        }
        BlockNode aboveBase = chain.get(base - 1).node();
        try {
            if (baseLayer.size() < topLayer.size()) {
                throw new CommandException("'" + chain.get(base).nodeName() + "' is smaller than '"
                        + chain.get(top).nodeName() + "'; resizing the base is not supported");
            }
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        }
        String overlay = chain.get(top - 1).nodeName();
        String baseName = chain.get(base).nodeName();
        String backingFile = a.backingFile().orElse(null);
        int layers = base - top; // layers [top, base) are copied
        return new JobBody() {
            @Override
            public void run(JobContext ctx) throws Exception {
                copyDown(ctx, topLayer, baseLayer, layers, safe ? aboveBase : null, reclaim ? committed : List.of());
            }

            @Override
            public void commit(GraphEdit edit) {
                edit.setBacking(overlay, baseName, backingFile);
            }
        };
    }

    /**
     * Active commit: the top is the active layer, written by clients while the job runs. The job
     * copies everything above the base down, then keeps copying what clients write (through a
     * write-tracking filter) and says {@code ready}; on {@code job-complete} it copies the last
     * writes with clients held off and switches them over to the base. A cancel after
     * {@code ready} leaves the chain as it was, the data in both.
     */
    static JobBody prepareActive(Args a, JobSetup setup, List<ChainLink> chain, int base) {
        if (a.backingFile().isPresent()) {
            throw new CommandException("backing-file cannot be given for an active commit: the top has no overlay");
        }
        if (a.xSafe().orElse(false)) {
            throw new CommandException("x-safe is not supported for an active commit");
        }
        BlockNode topLayer = setup.claim(chain.get(0).nodeName());
        BlockNode baseLayer = setup.claimWritable(chain.get(base).nodeName());
        for (int i = 1; i < base; i++) {
            setup.claim(chain.get(i).nodeName());
        }
        WriteTracker tracker = setup.trackWrites(chain.get(0).nodeName(), a.filterNodeName().orElse(null));
        String baseName = chain.get(base).nodeName();
        return new JobBody() {
            @Override
            public boolean completable() {
                return true;
            }

            @Override
            public void run(JobContext ctx) throws Exception {
                copyDown(ctx, topLayer, baseLayer, base, null, List.of());
                boolean ready = false;
                while (true) {
                    List<WriteTracker.Range> dirty = tracker.takeDirty();
                    for (WriteTracker.Range r : dirty) {
                        copyRange(ctx, topLayer, baseLayer, r.offset(), r.length());
                    }
                    if (dirty.isEmpty()) {
                        if (!ready) {
                            baseLayer.flush();
                            ctx.ready();
                            ready = true;
                        }
                        if (ctx.completeRequested()) {
                            return; // the last writes are copied at the switch-over
                        }
                        tracker.awaitDirty(100); // as QEMU's mirror, wake at least every 100 ms
                    }
                    ctx.pausePoint();
                }
            }

            @Override
            public void commit(GraphEdit edit) throws Exception {
                try (AutoCloseable held = tracker.blockWrites()) {
                    for (WriteTracker.Range r : tracker.takeDirty()) {
                        copyRange(null, topLayer, baseLayer, r.offset(), r.length());
                    }
                    baseLayer.flush();
                    edit.replaceUsers(tracker.filterNodeName(), baseName);
                }
                edit.removeFilter(tracker.filterNodeName());
            }

            @Override
            public void abort(GraphEdit edit) {
                // A soft cancel after ready leaves a point-in-time copy in the base: copy the last writes.
                try (AutoCloseable held = tracker.blockWrites()) {
                    for (WriteTracker.Range r : tracker.takeDirty()) {
                        copyRange(null, topLayer, baseLayer, r.offset(), r.length());
                    }
                    baseLayer.flush();
                } catch (Exception e) {
                    // a failed or cancelled job leaves the base as far as it got
                } finally {
                    edit.removeFilter(tracker.filterNodeName());
                }
            }
        };
    }

    /** Copies one range of the top's view into the base ({@code ctx} null: no throttling). */
    static void copyRange(JobContext ctx, BlockNode top, BlockNode base, long offset, long length) throws IOException {
        long size = top.size();
        long end = Math.min(size, offset + length);
        ByteBuffer buffer = ByteBuffer.allocate((int) Math.min(CHUNK, end - offset));
        for (long pos = offset; pos < end; ) {
            int n = (int) Math.min(buffer.capacity(), end - pos);
            buffer.clear().limit(n);
            top.read(pos, buffer);
            base.write(pos, buffer.flip());
            if (ctx != null) {
                ctx.throttle(n);
            }
            pos += n;
        }
    }

    /**
     * Copies down every range whose data lives in one of the {@code layers} layers from top.
     * With {@code keepOld} (safe commit), the base's old contents of each range are first copied
     * up, durably, into {@code keepOld} (the layer right above the base) wherever that layer does
     * not hold the range itself: every intermediate image stays a valid delta over the base.
     */
    static void copyDown(JobContext ctx, BlockNode top, BlockNode base, int layers, BlockNode keepOld,
                         List<BlockNode> reclaim) throws IOException {
        Reclaimer reclaimer = new Reclaimer(base, reclaim);
        long size = top.size();
        int chunk = Math.max(CHUNK, top.clusterSize());
        ByteBuffer buffer = ByteBuffer.allocateDirect(chunk);
        ByteBuffer old = keepOld == null ? null : ByteBuffer.allocateDirect(chunk);
        long offset = 0;
        ctx.progress(0, size);
        while (offset < size) {
            ctx.pausePoint();
            BlockStatus where = top.chainStatus(offset, Math.min(chunk - offset % chunk, size - offset));
            long length = where.length();
            if (where.allocated() && where.depth() < layers) {
                boolean reading = true;
                try {
                    if (keepOld != null) {
                        old.clear().limit((int) length);
                        base.read(offset, old);
                        keepOld.writeUnallocated(offset, old.flip());
                        keepOld.flush(); // the old data is safe before the base changes
                    }
                    if (where.zero()) {
                        reading = false;
                        base.writeZeroes(offset, length, true);
                    } else {
                        buffer.clear().limit((int) length);
                        top.read(offset, buffer);
                        reading = false;
                        base.write(offset, buffer.flip());
                    }
                    reclaimer.copied(offset, length);
                    ctx.throttle(length);
                } catch (IOException e) {
                    ctx.onIoError(e, reading); // report rethrows; stop and ignore retry, as QEMU's commit does
                    continue;
                }
            }
            offset += length;
            ctx.progress(offset, size);
        }
        base.flush(); // durable before the chain changes
        reclaimer.release();
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
        private final List<long[]> pending = new java.util.ArrayList<>();
        private long pendingBytes;

        Reclaimer(BlockNode base, List<BlockNode> layers) {
            this.base = base;
            this.layers = layers;
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
