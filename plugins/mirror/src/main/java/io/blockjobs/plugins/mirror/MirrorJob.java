package io.blockjobs.plugins.mirror;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.NewImage;
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
 * QMP {@code blockdev-mirror} and {@code drive-mirror}: copies a disk that clients keep writing onto another node, keeps
 * it in sync, and on {@code job-complete} switches every user of the disk over to it (see
 * {@link Mirror} for the algorithm). The arguments, their checks and messages are QEMU 7.2's
 * ({@code qapi/block-core.json}, {@code blockdev.c}'s {@code blockdev_mirror_common},
 * {@code block/mirror.c}'s {@code mirror_start_job}).
 */
@Extension
public final class MirrorJob implements BlockjobsPlugin {
    /** QEMU's DEFAULT_MIRROR_BUF_SIZE: 16 operations of 1 MiB. */
    static final long DEFAULT_BUF_SIZE = (long) Mirror.MAX_IN_FLIGHT * Mirror.MAX_IO_BYTES;
    private static final Set<BlockPermission> NONE = EnumSet.noneOf(BlockPermission.class);
    private static final Set<BlockPermission> ALL = EnumSet.allOf(BlockPermission.class);

    /** {@code blockdev-mirror}'s arguments, as QEMU 7.2 names them. */
    public record BlockdevArgs(Optional<String> jobId, String device, String target, Optional<String> replaces,
                               Mirror.Sync sync, Optional<Long> speed, Optional<Long> granularity,
                               Optional<Long> bufSize, Optional<OnError> onSourceError,
                               Optional<OnError> onTargetError, Optional<String> filterNodeName,
                               Optional<Mirror.CopyMode> copyMode, Optional<Boolean> autoFinalize,
                               Optional<Boolean> autoDismiss) implements JobArgs {
        /** Mirror has no {@code on-error}: reads follow on-source-error, writes on-target-error. */
        @Override
        public Optional<OnError> onError() {
            return Optional.empty();
        }
    }

    /** {@code drive-mirror}'s arguments, as QEMU 7.2 names them. */
    public record DriveArgs(Optional<String> jobId, String device, String target, Optional<String> format,
                            Optional<String> nodeName, Optional<String> replaces, Mirror.Sync sync,
                            Optional<Mirror.Mode> mode, Optional<Long> speed, Optional<Long> granularity,
                            Optional<Long> bufSize, Optional<OnError> onSourceError,
                            Optional<OnError> onTargetError, Optional<Boolean> unmap,
                            Optional<Mirror.CopyMode> copyMode, Optional<Boolean> autoFinalize,
                            Optional<Boolean> autoDismiss) implements JobArgs {
        /** Mirror has no {@code on-error}: reads follow on-source-error, writes on-target-error. */
        @Override
        public Optional<OnError> onError() {
            return Optional.empty();
        }
    }

    @Override
    public List<JobCommand<?>> jobCommands() {
        return List.of(new JobCommand<>("blockdev-mirror", "mirror", BlockdevArgs.class, MirrorJob::prepareBlockdev),
                new JobCommand<>("drive-mirror", "mirror", DriveArgs.class, MirrorJob::prepareDrive));
    }

    /**
     * QEMU's {@code qmp_drive_mirror}: the target is a file, made as the sync mode needs it (none:
     * backed by the source; top: by the source's backing; full: alone) unless {@code mode:
     * existing}, opened without its backing chain, and given that backing at the switch-over; an
     * existing one opens the backing its header names then, its header untouched.
     */
    static JobBody prepareDrive(DriveArgs a, JobSetup setup) {
        List<ChainLink> source = rootLookup(setup, a.device());
        Mirror.Mode mode = a.mode().orElse(Mirror.Mode.ABSOLUTE_PATHS);
        String format = a.format().orElse(mode == Mirror.Mode.EXISTING ? null : source.get(0).node().driver());
        Mirror.Sync sync = a.sync();
        ChainLink backing = source.size() > 1 ? source.get(1) : null; // bdrv_cow_bs(bdrv_skip_filters(bs))
        if (backing == null && sync == Mirror.Sync.TOP) {
            sync = Mirror.Sync.FULL;
        }
        ChainLink targetBacking = sync == Mirror.Sync.NONE ? source.get(0) : backing;
        long size;
        try {
            size = source.get(0).node().size();
        } catch (IOException e) {
            throw new CommandException("bdrv_getlength failed: " + e.getMessage());
        }
        if (a.replaces().isPresent() && a.nodeName().isEmpty()) {
            throw new CommandException("a node-name must be provided when replacing a named node of the graph");
        }
        String nodeName = a.nodeName().orElse(null);
        BlockNode target;
        Mirror.TargetBacking atSwitch = null;
        if ((sync == Mirror.Sync.FULL || targetBacking == null) && mode != Mirror.Mode.EXISTING) {
            target = setup.createImage(NewImage.of(a.target(), format, size).withNodeName(nodeName)
                    .withOptionsOf(a.device()));
        } else if (mode == Mirror.Mode.ABSOLUTE_PATHS) {
            target = setup.createImage(NewImage.of(a.target(), format, size).withNodeName(nodeName)
                    .withOptionsOf(a.device()).withBacking(targetBacking.filename(), targetBacking.format()));
            atSwitch = new Mirror.TargetBacking(targetBacking.nodeName(), targetBacking.filename());
        } else {
            // QEMU's MIRROR_OPEN_BACKING_CHAIN: at the switch the target opens the backing its own
            // header names, whatever the sync mode, and the header stays as the user made it
            target = setup.openImage(a.target(), format, nodeName, a.device());
        }
        boolean zeroTarget = sync == Mirror.Sync.FULL && mode == Mirror.Mode.EXISTING; // a new image reads zeroes
        Options o = new Options(a.replaces().orElse(null), sync, a.granularity().orElse(0L), a.bufSize().orElse(0L),
                zeroTarget, a.unmap().orElse(true), null, a.copyMode().orElse(Mirror.CopyMode.BACKGROUND), atSwitch,
                mode == Mirror.Mode.EXISTING);
        return start(setup, a.device(), source, target.nodeName(), o);
    }

    static JobBody prepareBlockdev(BlockdevArgs a, JobSetup setup) {
        List<ChainLink> source = rootLookup(setup, a.device());
        lookup(setup, a.target());
        Options o = new Options(a.replaces().orElse(null), a.sync(), a.granularity().orElse(0L),
                a.bufSize().orElse(0L), a.sync() == Mirror.Sync.FULL, true, a.filterNodeName().orElse(null),
                a.copyMode().orElse(Mirror.CopyMode.BACKGROUND), null, false);
        return start(setup, a.device(), source, a.target(), o);
    }

    /** What {@code blockdev-mirror} and {@code drive-mirror} hand to {@code mirror_start}. */
    record Options(String replaces, Mirror.Sync sync, long granularity, long bufSize, boolean zeroTarget,
                   boolean unmap, String filterNodeName, Mirror.CopyMode copyMode, Mirror.TargetBacking targetBacking,
                   boolean openBacking) {
    }

    /** QEMU's {@code qmp_get_root_bs}: a node by name that no other node uses, or QEMU's message. */
    static List<ChainLink> rootLookup(JobSetup setup, String name) {
        List<ChainLink> chain = lookup(setup, name);
        if (!setup.isRootNode(name)) {
            throw new CommandException("Need a root block node");
        }
        return chain;
    }

    /** QEMU's {@code bdrv_lookup_bs(name, name)}: a node by name, or QEMU's message. */
    static List<ChainLink> lookup(JobSetup setup, String name) {
        try {
            return setup.chain(name);
        } catch (CommandException e) {
            if (e.errorClass() == ErrorClass.DEVICE_NOT_FOUND) {
                throw new CommandException("Cannot find device='" + name + "' nor node-name='" + name + "'");
            }
            throw e;
        }
    }

    /**
     * QEMU's {@code blockdev_mirror_common}, {@code mirror_start} and {@code mirror_start_job}.
     * A target inside the source's backing chain is refused when it is a backing file (its op
     * blocker); one reached only through a filter of the chain (QEMU's {@code target_is_backing})
     * runs as QEMU runs it: a mirror into its own chain, sharing as an active commit's base.
     */
    static JobBody start(JobSetup setup, String device, List<ChainLink> source, String targetName, Options o) {
        long granularity = o.granularity();
        if (granularity != 0 && (granularity < 512 || granularity > 64L << 20)) {
            throw new CommandException("Parameter 'granularity' expects a value in range [512B, 64MB]");
        }
        if ((granularity & (granularity - 1)) != 0) {
            throw new CommandException("Parameter 'granularity' expects a power of 2");
        }
        // BLOCK_OP_TYPE_MIRROR_TARGET: blocked on a backing file and on a node a job uses
        setup.checkReplaceable(targetName);
        Mirror.Sync sync = o.sync();
        if (sync == Mirror.Sync.TOP && source.size() == 1) {
            sync = Mirror.Sync.FULL; // nothing below the top: top is all of it
        }
        String replaces = o.replaces();
        if (replaces != null) {
            checkReplaces(setup, source, replaces);
        }
        if (sync == Mirror.Sync.INCREMENTAL || sync == Mirror.Sync.BITMAP) {
            throw new CommandException("Sync mode '" + sync.name().toLowerCase(java.util.Locale.ROOT)
                    + "' not supported");
        }
        List<ChainLink> target = lookup(setup, targetName);
        if (granularity == 0) {
            granularity = defaultGranularity(target.get(0).node());
        }
        long bufSize = o.bufSize();
        if (bufSize < 0) {
            throw new CommandException("Invalid parameter 'buf-size'");
        }
        bufSize = roundBufSize(bufSize, granularity);
        if (imageOf(source.get(0)).equals(imageOf(target.get(0)))) {
            throw new CommandException("Can't mirror node into itself");
        }
        // QEMU's bdrv_chain_contains(bs, target): the layer of the source's chain holding the target
        int layer = 0;
        for (int i = 1; i < source.size() && layer == 0; i++) {
            if (setup.reachesThroughFilters(source.get(i).nodeName(), targetName)) {
                layer = i;
            } else if (imageOf(source.get(i)).equals(imageOf(target.get(0)))) {
                throw new CommandException("Cannot mirror to a filter on top of a node in the source's backing chain");
            }
        }
        Mirror mirror = new Mirror(new Mirror.Settings(sync, granularity, bufSize, o.zeroTarget(), o.unmap(),
                o.copyMode(), replaces, o.targetBacking(), o.openBacking(), 0));
        BlockNode filter = setup.insertFilter(device,
                new FilterSpec("mirror_top", o.filterNodeName(), Map.of(), List.of(mirror)));
        setup.use(filter.nodeName(), "main node", EnumSet.of(BlockPermission.CONSISTENT_READ),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE));
        // As QEMU's target BlockBackend: writes, and lets others write only what does not change data;
        // a target in the chain is the backing of the layers above: they read it and write through it
        Set<BlockPermission> targetShared = layer == 0 ? EnumSet.of(BlockPermission.WRITE_UNCHANGED)
                : EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE);
        BlockNode targetNode = setup.use(targetName, "root", EnumSet.of(BlockPermission.WRITE), targetShared);
        DirtyBitmap bitmap = setup.createBitmap(device, granularity);
        BlockNode sourceNode = setup.use(device, "source", NONE,
                EnumSet.of(BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE, BlockPermission.CONSISTENT_READ));
        setup.use(targetName, "target", NONE, ALL);
        if (layer > 0) {
            // The layers between go out of the chain at the switch: as QEMU's, nothing else may use them
            for (int i = 1; i <= layer; i++) {
                if (source.get(i).nodeName().equals(targetName)) {
                    continue;
                }
                Set<BlockPermission> shared = EnumSet.of(BlockPermission.WRITE_UNCHANGED, BlockPermission.WRITE);
                if (i == layer) {
                    shared.add(BlockPermission.CONSISTENT_READ); // a filter on the target reads as the target does
                }
                setup.use(source.get(i).nodeName(), "intermediate node", NONE, shared);
            }
            setup.freezeBackingChain(filter.nodeName(), targetName);
        }
        mirror.attach(sourceNode, targetNode, targetName, bitmap, filter.nodeName(), setup.drain(filter.nodeName()));
        return mirror;
    }

    /** QEMU's {@code bdrv_get_default_bitmap_granularity}: the target's cluster size within 4 to 64 KiB, else 64 KiB. */
    static long defaultGranularity(BlockNode target) {
        int cluster = target.clusterSize();
        return cluster > 0 ? Math.min(65536, Math.max(4096, cluster)) : 65536;
    }

    /** {@code buf-size} 0 is QEMU's default, 16 MiB; rounded up to whole granules. */
    static long roundBufSize(long bufSize, long granularity) {
        long b = bufSize == 0 ? DEFAULT_BUF_SIZE : bufSize;
        return (b + granularity - 1) / granularity * granularity;
    }

    /** The image a link stands for, through filters: its file name and format. */
    static String imageOf(ChainLink link) {
        return link.format() + ":" + link.filename();
    }

    /**
     * QEMU's {@code check_to_replace_node} and the size check of {@code blockdev_mirror_common}:
     * {@code replaces} must be the source or a node below it through filters only
     * ({@code bdrv_recurse_can_replace}), never a node above the source or beside it.
     */
    private static void checkReplaces(JobSetup setup, List<ChainLink> source, String replaces) {
        List<ChainLink> replaced;
        try {
            replaced = setup.chain(replaces);
        } catch (CommandException e) {
            if (e.errorClass() == ErrorClass.DEVICE_NOT_FOUND) {
                throw new CommandException("Failed to find node with node-name='" + replaces + "'");
            }
            throw e;
        }
        setup.checkReplaceable(replaces);
        if (!setup.reachesThroughFilters(source.get(0).nodeName(), replaces)) {
            throw new CommandException("Cannot replace '" + replaces + "' by a node mirrored from '"
                    + source.get(0).nodeName() + "', because it cannot be guaranteed that doing so would not lead"
                    + " to an abrupt change of visible data");
        }
        try {
            if (source.get(0).node().size() != replaced.get(0).node().size()) {
                throw new CommandException("cannot replace image with a mirror image of different size");
            }
        } catch (IOException e) {
            throw new CommandException("Failed to query device's size: " + e.getMessage());
        }
    }
}
