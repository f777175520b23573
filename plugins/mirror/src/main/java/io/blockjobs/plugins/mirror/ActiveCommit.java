package io.blockjobs.plugins.mirror;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Chains;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobSetup;
import java.io.IOException;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The mirror loop as an active commit, QEMU's {@code commit_active_start}: the mirror plugin's
 * one public entry point, for the commit plugin (which declares {@code plugin.dependencies=mirror-job},
 * so its class loader finds this class in the mirror plugin's). It mirrors a node into a node of
 * its own backing chain, leaving that chain as it is ({@code MIRROR_LEAVE_BACKING_CHAIN}); on
 * {@code job-complete} the node's users move onto the base, and the layers between drop out of
 * their chain. Everything else is the mirror's: its {@code mirror_top} filter and dirty bitmap,
 * up to 16 copies in flight, {@code BLOCK_JOB_READY}, the drain for the last copy, a soft cancel
 * after ready that leaves the chain as it was with the base in sync.
 *
 * <p>As QEMU's: the base is reopened read-write first, the granularity is the base's default and
 * the buffer 16 MiB, zeroes are written with unmap, the copy mode is background, and the base
 * shares consistent read and writes with the layers' other users (it is their backing file).
 */
public final class ActiveCommit {
    private static final Set<BlockPermission> NONE = EnumSet.noneOf(BlockPermission.class);
    private static final Set<BlockPermission> ALL = EnumSet.allOf(BlockPermission.class);

    private ActiveCommit() {
    }

    /**
     * Prepares the job that commits {@code top} and every layer down to {@code base} into
     * {@code base}; the caller has checked the command's arguments (QEMU's {@code qmp_block_commit}).
     *
     * @param setup          the job's setup, on the main loop
     * @param top            the node clients use (the active layer)
     * @param base           a node of {@code top}'s backing chain, below it
     * @param filterNodeName the {@code mirror_top} filter's node name, or null for a generated one
     * @return the job's body; its type is the caller's command's ({@code commit})
     * @throws CommandException with QEMU's message if a node cannot be used, and if the base is
     *         smaller than the top (QEMU grows it; blockjobs does not resize a base)
     * @throws IllegalArgumentException if {@code base} is not below {@code top}
     */
    public static JobBody start(JobSetup setup, String top, String base, String filterNodeName) {
        List<ChainLink> chain = setup.chain(top);
        int layers = Chains.indexOfNode(chain, base);
        if (layers <= 0) {
            throw new IllegalArgumentException("'" + base + "' is not below '" + top + "'");
        }
        ChainLink baseLink = chain.get(layers);
        try {
            if (baseLink.node().size() < chain.get(0).node().size()) {
                throw new CommandException("'" + base + "' is smaller than '" + top
                        + "'; resizing the base is not supported");
            }
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        }
        setup.reopenReadWrite(base);
        long granularity = MirrorJob.defaultGranularity(baseLink.node());
        Mirror mirror = new Mirror(new Mirror.Settings(Mirror.Sync.TOP, granularity,
                MirrorJob.roundBufSize(0, granularity), false, true, Mirror.CopyMode.BACKGROUND, null, null, false, layers));
        BlockNode filter = setup.insertFilter(top, new FilterSpec("mirror_top", filterNodeName, Map.of(), List.of(mirror)));
        setup.use(filter.nodeName(), "main node", EnumSet.of(BlockPermission.CONSISTENT_READ),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
        // The base is the backing file of the layers above: others may read it and write through them
        BlockNode targetNode = setup.use(base, "root", EnumSet.of(BlockPermission.WRITE),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
        DirtyBitmap bitmap = setup.createBitmap(top, granularity);
        BlockNode sourceNode = setup.use(top, "source", NONE,
                EnumSet.of(BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE, BlockPermission.CONSISTENT_READ));
        setup.use(base, "target", NONE, ALL);
        String baseImage = MirrorJob.imageOf(baseLink);
        for (int i = 1; i < layers; i++) {
            Set<BlockPermission> shared = EnumSet.of(BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE);
            if (MirrorJob.imageOf(chain.get(i)).equals(baseImage)) {
                shared.add(BlockPermission.CONSISTENT_READ); // a filter on the base reads as the base does
            }
            setup.use(chain.get(i).nodeName(), "intermediate node", NONE, shared);
        }
        setup.freezeBackingChain(filter.nodeName(), base);
        mirror.attach(sourceNode, targetNode, base, bitmap, filter.nodeName(), setup.drain(filter.nodeName()));
        return mirror;
    }
}
