package io.blockjobs.plugins.nulljob;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.job.ErrorAction;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobType;
import io.blockjobs.sdk.job.OnError;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import org.pf4j.Extension;

/**
 * QMP {@code block-null}: reads every allocated sector of the device's whole backing chain and
 * throws the data away, honouring speed, pause and cancel.
 */
@Extension
public final class NullJob implements JobType {

    /** How much one request reads. */
    static final int CHUNK = 1 << 20;

    /** {@code block-null}'s arguments: only the ones every job has. */
    public record Args(Optional<String> jobId, String device, Optional<Long> speed, Optional<OnError> onError,
                       Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss) implements JobArgs {
    }

    @Override
    public List<JobCommand<?>> commands() {
        return List.of(new JobCommand<>("block-null", "null", Args.class, (args, setup) -> body(setup.use(args.device(),
                "main node", EnumSet.noneOf(BlockPermission.class), READERS_AND_WRITERS))));
    }

    /** What the job lets others do with its device: it only reads, so clients keep reading and writing. */
    private static final Set<BlockPermission> READERS_AND_WRITERS = EnumSet.of(BlockPermission.CONSISTENT_READ,
            BlockPermission.WRITE, BlockPermission.WRITE_UNCHANGED);

    /** The job itself: a loop over the chain's allocated ranges. */
    static JobBody body(BlockNode device) {
        return (JobContext ctx) -> {
            long size = device.size();
            ByteBuffer buffer = ByteBuffer.allocateDirect(CHUNK);
            long offset = 0;
            ctx.progress(0, size);
            while (offset < size) {
                ctx.pausePoint();
                BlockStatus status = device.chainStatus(offset, Math.min(CHUNK, size - offset));
                if (status.allocated() && !status.zero()) {
                    buffer.clear().limit((int) status.length());
                    try {
                        device.read(offset, buffer);
                        ctx.throttle(status.length());
                    } catch (IOException e) {
                        if (ctx.onIoError(e, true) == ErrorAction.RETRY) {
                            continue; // the job was stopped and resumed: read it again
                        }
                        // ignored: skip the range
                    }
                }
                offset = status.end();
                ctx.progress(offset, size);
            }
        };
    }
}
