package io.blockjobs.plugins.stream;

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
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.pf4j.Extension;

/**
 * QMP {@code block-stream}: copies into {@code device} every range that lives in a layer between
 * it and the base, then makes the base (or nothing) its backing. {@code device} may be an
 * intermediate layer. As in QEMU 6 and later, the job puts a {@code copy-on-read} filter above
 * the device (named by {@code filter-node-name}) and reads through it: the filter copies what it
 * reads up into the device without overwriting what a client wrote there meanwhile, and clients'
 * reads through it copy up too.
 */
@Extension
public final class StreamJob implements BlockjobsPlugin {
    static final int CHUNK = 512 * 1024;
    static final int IN_FLIGHT = 8;

    /** {@code block-stream}'s arguments, as QEMU names them. */
    public record Args(Optional<String> jobId, String device, Optional<String> base, Optional<String> baseNode,
                       Optional<String> bottom, Optional<String> backingFile, Optional<Boolean> backingMaskProtocol,
                       Optional<Long> speed, Optional<OnError> onError, Optional<String> filterNodeName,
                       Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss) implements JobArgs {
    }

    @Override
    public List<JobCommand<?>> jobCommands() {
        return List.of(new JobCommand<>("block-stream", "stream", Args.class, StreamJob::prepare));
    }

    /** Checks the arguments in QEMU's order and with its messages ({@code qmp_block_stream}). */
    static JobBody prepare(Args a, JobSetup setup) {
        if (a.base().isPresent() && a.baseNode().isPresent()) {
            throw new CommandException("'base' and 'base-node' cannot be specified at the same time");
        }
        if (a.base().isPresent() && a.bottom().isPresent()) {
            throw new CommandException("'base' and 'bottom' cannot be specified at the same time");
        }
        if (a.bottom().isPresent() && a.baseNode().isPresent()) {
            throw new CommandException("'bottom' and 'base-node' cannot be specified at the same time");
        }
        List<ChainLink> chain = Chains.lookup(setup, a.device());
        int base = -1;
        if (a.base().isPresent()) {
            base = Chains.findBackingImage(chain, 0, a.base().get());
            if (base < 0) {
                throw new CommandException("Can't find '" + a.base().get() + "' in the backing chain");
            }
        }
        if (a.baseNode().isPresent()) {
            String name = a.baseNode().get();
            Chains.requireNode(setup, name);
            base = Chains.indexOfNode(chain, name);
            if (base <= 0) {
                throw new CommandException("Node '" + name + "' is not a backing image of '" + a.device() + "'");
            }
        }
        if (a.bottom().isPresent()) {
            String name = a.bottom().get();
            Chains.requireNode(setup, name);
            int bottom = Chains.indexOfNode(chain, name);
            if (bottom < 0) {
                throw new CommandException("Node '" + name + "' is not in a chain starting from '" + a.device() + "'");
            }
            base = bottom + 1 < chain.size() ? bottom + 1 : -1;
        }
        if (base < 0 && a.backingFile().isPresent()) {
            throw new CommandException("backing file specified, but streaming the entire chain");
        }
        int end = base < 0 ? chain.size() : base; // layers [1, end) are copied
        String deviceName = a.device();
        String baseName = base < 0 ? null : chain.get(base).nodeName();
        // The copy-on-read filter copies from the layers down to the bottom (the device itself
        // when there is nothing to stream: bottom=device, or the base is its backing already).
        String bottomName = base < 0 ? null : chain.get(end - 1).nodeName();

        setup.reopenReadWrite(deviceName);
        Map<String, Object> corOptions = bottomName == null ? Map.of() : Map.of("bottom", bottomName);
        BlockNode filter = setup.insertFilter(deviceName,
                new FilterSpec("copy-on-read", a.filterNodeName().orElse(null), corOptions, List.of()));
        String filterName = filter.nodeName();
        Set<BlockPermission> all = EnumSet.allOf(BlockPermission.class);
        Set<BlockPermission> none = EnumSet.noneOf(BlockPermission.class);
        // As QEMU's stream: the job's child takes nothing, its BlockBackend reads (and keeps resize out).
        setup.use(filterName, "main node", none, all);
        BlockNode reader = setup.use(filterName, "root", EnumSet.of(BlockPermission.CONSISTENT_READ),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
        BlockNode device = setup.use(deviceName, "active node", none,
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
        for (int i = 1; i < end; i++) {
            setup.use(chain.get(i).nodeName(), "intermediate node", none,
                    EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED));
        }
        // As QEMU's stream, the links down to the last layer copied are frozen, not the one into
        // the base: that may lead to another job's filter (which is never frozen), or change
        // meanwhile (the filter goes when its job ends, a snapshot puts an overlay on the base).
        BlockNode bottomLayer = chain.get(end - 1).node();
        setup.freezeBackingChain(filterName, baseName == null ? null : chain.get(end - 1).nodeName());
        String backingFile = a.backingFile().orElse(null);
        boolean mask = a.backingMaskProtocol().orElse(false);
        int layers = end - 1;
        return new JobBody() {
            @Override
            public void run(JobContext ctx) throws Exception {
                stream(ctx, device, reader, layers);
            }

            @Override
            public void prepare(GraphEdit edit) {
                String newBase = baseName == null ? null : bottomLayer.backing().map(BlockNode::nodeName).orElse(null);
                edit.setBacking(deviceName, newBase, backingFile, mask);
            }
        };
    }

    /**
     * Copies up every range whose data lives in one of the {@code layers} layers below the
     * device, by reading it through the copy-on-read filter ({@code reader}).
     */
    static void stream(JobContext ctx, BlockNode device, BlockNode reader, int layers) throws IOException {
        if (layers == 0) {
            ctx.progress(0, 0); // the base is the device's backing already: nothing to stream, as QEMU
            return;
        }
        long size = device.size();
        int chunk = Math.max(CHUNK, device.clusterSize());
        long offset = 0;
        ctx.progress(0, size);
        try (Copier copier = ctx.copier(IN_FLIGHT, chunk)) {
            while (offset < size) {
                ctx.pausePoint();
                long want = Math.min(chunk - offset % chunk, size - offset);
                BlockStatus here = device.blockStatus(offset, want);
                long length = here.length();
                if (!here.allocated()) {
                    BlockStatus where = device.chainStatus(offset, want);
                    length = where.length();
                    if (where.allocated() && where.depth() >= 1 && where.depth() <= layers) {
                        copier.copy(offset, (int) length, reader::read, (o, b) -> { }); // the filter writes
                        ctx.throttle(length);
                    }
                }
                offset += length;
                ctx.progress(offset, size);
            }
            copier.drain();
            if (copier.ignoredError() != null) {
                throw copier.ignoredError(); // as QEMU: go on, then fail and keep the backing file
            }
        }
    }
}
