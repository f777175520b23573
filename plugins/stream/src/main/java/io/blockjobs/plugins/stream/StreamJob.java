package io.blockjobs.plugins.stream;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Chains;
import io.blockjobs.sdk.job.ErrorAction;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.JobType;
import io.blockjobs.sdk.job.OnError;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Optional;
import org.pf4j.Extension;

/**
 * QMP {@code block-stream}: copies into {@code device} every range that lives in a layer between
 * it and the base, then makes the base (or nothing) its backing. {@code device} may be an
 * intermediate layer. Copies go through copy-on-read ({@link BlockNode#writeUnallocated}), so a
 * client's write to the device while the job runs always wins over copied data.
 */
@Extension
public final class StreamJob implements JobType {
    static final int CHUNK = 512 * 1024;

    /** {@code block-stream}'s arguments, as QEMU names them. */
    public record Args(Optional<String> jobId, String device, Optional<String> base, Optional<String> baseNode,
                       Optional<String> bottom, Optional<String> backingFile, Optional<Boolean> backingMaskProtocol,
                       Optional<Long> speed, Optional<OnError> onError, Optional<String> filterNodeName,
                       Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss) implements JobArgs {
    }

    @Override
    public List<JobCommand<?>> commands() {
        return List.of(new JobCommand<>("block-stream", "stream", Args.class, StreamJob::prepare));
    }

    static JobBody prepare(Args a, JobSetup setup) {
        List<ChainLink> chain = setup.chain(a.device());
        if (a.bottom().isPresent() && (a.base().isPresent() || a.baseNode().isPresent())) {
            throw new CommandException("'bottom' and 'base'/'base-node' cannot be specified at the same time");
        }
        int base = Chains.find(chain, 0, "base-node", a.baseNode().orElse(null), "base", a.base().orElse(null));
        if (a.bottom().isPresent()) {
            int bottom = Chains.find(chain, 0, "bottom", a.bottom().get(), "bottom", null);
            base = bottom + 1 < chain.size() ? bottom + 1 : -1;
        }
        if (base < 0 && a.backingFile().isPresent()) {
            throw new CommandException("backing file specified, but streaming the entire chain");
        }
        int end = base < 0 ? chain.size() : base; // layers [1, end) are copied
        BlockNode device = setup.claimWritable(a.device());
        for (int i = 1; i < end; i++) {
            setup.claim(chain.get(i).nodeName());
        }
        String deviceName = a.device();
        String baseName = base < 0 ? null : chain.get(base).nodeName();
        String backingFile = a.backingFile().orElse(null);
        int layers = end - 1;
        return new JobBody() {
            @Override
            public void run(JobContext ctx) throws Exception {
                stream(ctx, device, layers);
            }

            @Override
            public void commit(GraphEdit edit) {
                edit.setBacking(deviceName, baseName, backingFile);
            }
        };
    }

    /** Copies up every range whose data lives in one of the {@code layers} layers below the device. */
    static void stream(JobContext ctx, BlockNode device, int layers) throws IOException {
        long size = device.size();
        int chunk = Math.max(CHUNK, device.clusterSize());
        ByteBuffer buffer = ByteBuffer.allocateDirect(chunk);
        long offset = 0;
        IOException ignored = null;
        ctx.progress(0, size);
        while (offset < size) {
            ctx.pausePoint();
            long want = Math.min(chunk - offset % chunk, size - offset);
            BlockStatus here = device.blockStatus(offset, want);
            long length = here.length();
            if (!here.allocated()) {
                BlockStatus where = device.chainStatus(offset, want);
                length = where.length();
                if (where.allocated() && where.depth() >= 1 && where.depth() <= layers) {
                    buffer.clear().limit((int) length);
                    boolean reading = true;
                    try {
                        device.read(offset, buffer);
                        reading = false;
                        buffer.flip();
                        device.writeUnallocated(offset, buffer);
                        ctx.throttle(length);
                    } catch (IOException e) {
                        if (ctx.onIoError(e, reading) == ErrorAction.RETRY) {
                            continue;
                        }
                        ignored = e; // as QEMU: go on, then fail and keep the backing file
                    }
                }
            }
            offset += length;
            ctx.progress(offset, size);
        }
        if (ignored != null) {
            throw ignored;
        }
    }
}
