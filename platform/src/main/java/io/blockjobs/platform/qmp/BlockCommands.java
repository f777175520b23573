package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonProperty;
import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Options;
import io.blockjobs.platform.image.FileNode;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.platform.image.Qcow2Node;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/** Node graph commands: blockdev-add/-del/-create, snapshots, query-named-block-nodes. */
public final class BlockCommands {
    private BlockCommands() {
    }

    /** {@code blockdev-del}'s arguments. */
    public record NodeNameArgs(String nodeName) {
    }

    /** {@code blockdev-create}'s arguments. */
    public record CreateArgs(String jobId, JsonNode options) {
    }

    /** {@code x-blockdev-amend}'s arguments. */
    public record AmendArgs(String jobId, String nodeName, JsonNode options, Optional<Boolean> force) {
    }

    /** {@code blockdev-snapshot}'s arguments. */
    public record SnapshotArgs(String node, String overlay) {
    }

    /** {@code blockdev-snapshot-sync}'s arguments. */
    public record SnapshotSyncArgs(Optional<String> device, Optional<String> nodeName, String snapshotFile,
                                   Optional<String> snapshotNodeName, Optional<String> format,
                                   Optional<SnapshotMode> mode) {
    }

    /** QMP's {@code NewImageMode}. */
    public enum SnapshotMode {
        EXISTING, ABSOLUTE_PATHS
    }

    /** {@code query-named-block-nodes}' arguments. */
    public record QueryNodesArgs(Optional<Boolean> flat) {
    }

    /** QMP's {@code ImageInfo}. */
    public record ImageInfo(String filename, String format, Optional<Boolean> dirtyFlag, Optional<Long> actualSize,
                            long virtualSize, Optional<Integer> clusterSize, Optional<String> backingFilename,
                            Optional<String> fullBackingFilename, Optional<String> backingFilenameFormat,
                            Optional<ImageInfo> backingImage,
                            Optional<List<InternalSnapshotCommands.SnapshotInfo>> snapshots,
                            Optional<FormatSpecific> formatSpecific) {
    }

    /** QMP's {@code ImageInfoSpecific}: the format's name and its own information. */
    public record FormatSpecific(String type, Object data) {
    }

    /** QMP's {@code ImageInfoSpecificQCow2}, as QEMU fills it for version 2 ({@code 0.10}) and 3 ({@code 1.1}). */
    public record Qcow2Specific(String compat, Optional<Boolean> lazyRefcounts, Optional<Boolean> corrupt,
                                Optional<Boolean> extendedL2, int refcountBits,
                                Optional<List<Qcow2BitmapInfo>> bitmaps, String compressionType) {
    }

    /** QMP's {@code Qcow2BitmapInfo}. */
    public record Qcow2BitmapInfo(String name, long granularity, List<String> flags) {
    }

    /** QMP's {@code ImageInfoSpecificRbd}. */
    public record RbdSpecific(Optional<String> encryptionFormat) {
    }

    /** QMP's {@code BlockdevCacheInfo}. */
    public record CacheInfo(boolean writeback, boolean direct, boolean noFlush) {
    }

    /** QMP's {@code BlockDeviceInfo}. */
    public record BlockDeviceInfo(String file, String nodeName, boolean ro, String drv,
                                  @JsonProperty("backing_file") Optional<String> backingFile,
                                  @JsonProperty("backing_file_depth") int backingFileDepth,
                                  boolean encrypted,
                                  @JsonProperty("detect_zeroes") String detectZeroes,
                                  long bps, @JsonProperty("bps_rd") long bpsRd, @JsonProperty("bps_wr") long bpsWr,
                                  long iops, @JsonProperty("iops_rd") long iopsRd, @JsonProperty("iops_wr") long iopsWr,
                                  ImageInfo image, CacheInfo cache,
                                  @JsonProperty("write_threshold") long writeThreshold,
                                  Optional<List<BlockDirtyInfo>> dirtyBitmaps) {
    }

    /** QMP's {@code BlockDirtyInfo}; {@code inconsistent} only when true, as QEMU. */
    public record BlockDirtyInfo(Optional<String> name, long count, long granularity, boolean recording,
                                 boolean busy, boolean persistent, Optional<Boolean> inconsistent) {
        static BlockDirtyInfo of(Bitmap b) {
            return new BlockDirtyInfo(b.name(), b.count(), b.granularity(), b.recording(), b.busy(), b.persistent(),
                    b.inconsistent() ? Optional.of(true) : Optional.empty());
        }
    }

    public static void register(QmpDispatcher d, BlockGraph graph, JobManager jobs, Bitmaps bitmaps) {
        d.register(QmpCommand.of("blockdev-add", JsonNode.class, null, a -> {
            graph.add(a);
            return null;
        }));
        d.register(QmpCommand.of("blockdev-reopen", JsonNode.class, null, a -> {
            for (String k : a.propertyNames()) {
                if (!k.equals("options")) {
                    throw new CommandException("Parameter '" + k + "' is unexpected");
                }
            }
            graph.reopen(a.get("options"));
            return null;
        }));
        d.register(QmpCommand.of("x-blockdev-amend", AmendArgs.class, null, a -> {
            Runnable amend = prepareAmend(graph, a);
            jobs.start(a.jobId(), "amend", true, false, job -> {
                job.progress(0, 1);
                try {
                    amend.run();
                } finally {
                    job.progress(1, 1); // as QEMU's blockdev_amend_run, whatever the driver said
                }
            });
            return null;
        }));
        d.register(QmpCommand.of("blockdev-del", NodeNameArgs.class, null, a -> {
            graph.delete(a.nodeName(), jobs::blocker);
            return null;
        }));
        d.register(QmpCommand.of("blockdev-create", CreateArgs.class, null, a -> {
            Runnable create = prepareCreate(graph, a.options());
            jobs.start(a.jobId(), "create", true, false, job -> create.run());
            return null;
        }));
        d.register(QmpCommand.of("blockdev-snapshot", SnapshotArgs.class, null, a -> {
            snapshot(graph, jobs, a);
            return null;
        }));
        d.register(QmpCommand.of("blockdev-snapshot-sync", SnapshotSyncArgs.class, null, a -> {
            snapshotSync(graph, jobs, a);
            return null;
        }));
        d.register(QmpCommand.of("query-named-block-nodes", QueryNodesArgs.class, QmpTypes.listOf(BlockDeviceInfo.class), a -> {
            boolean flat = a.flat().orElse(false);
            List<BlockDeviceInfo> out = new ArrayList<>();
            for (GraphNode n : graph.inCreationOrder().reversed()) { // newest first, as QEMU's list of named nodes
                out.add(info(n, flat, bitmaps));
            }
            return out;
        }));
    }

    /** {@code blockdev-snapshot}, as a command or a transaction action; returns its undo. */
    static BlockGraph.Undo snapshot(BlockGraph graph, JobManager jobs, SnapshotArgs a) {
        jobs.checkNotClaimed(a.node());
        try (BlockGraph.Drained drained = jobs.drain()) {
            return graph.snapshot(a.node(), a.overlay());
        }
    }

    /** {@code blockdev-snapshot-sync}, as a command or a transaction action; returns its undo. */
    static BlockGraph.Undo snapshotSync(BlockGraph graph, JobManager jobs, SnapshotSyncArgs a) {
        String node = graph.lookup(a.device().orElse(null), a.nodeName().orElse(null)).name();
        jobs.checkNotClaimed(node);
        try (BlockGraph.Drained drained = jobs.drain()) {
            return graph.snapshotSync(node, a.snapshotFile(), a.snapshotNodeName().orElse(null),
                    a.format().orElse("qcow2"), a.mode().orElse(SnapshotMode.ABSOLUTE_PATHS) == SnapshotMode.EXISTING);
        }
    }

    /**
     * Checks {@code x-blockdev-amend}'s arguments as QEMU 7.2's {@code qmp_x_blockdev_amend}
     * does (the {@code BlockdevAmendOptions} union first, then the node, its driver, the driver's
     * support), and returns the job's work: QEMU's {@code qcow2_co_amend}, which can only change
     * an encrypted image's keyslots, and blockjobs opens no encrypted image.
     */
    static Runnable prepareAmend(BlockGraph graph, AmendArgs a) {
        Options o = new Options(a.options(), "options.");
        String driver = o.string("driver");
        if (graph.drivers().get(driver) == null && !driver.equals("luks")) {
            throw new CommandException("Parameter 'options.driver' does not accept value '" + driver + "'");
        }
        boolean encrypt = false;
        switch (driver) {
            case "qcow2" -> {
                if (o.has("encrypt")) {
                    Options e = o.object("encrypt");
                    String format = e.string("format");
                    if (format.equals("luks")) {
                        luksAmendOptions(e);
                    } else if (!format.equals("qcow")) {
                        throw new CommandException("Parameter 'options.encrypt.format' does not accept value '" + format + "'");
                    }
                    e.checkAllUsed();
                    encrypt = true;
                }
            }
            case "luks" -> luksAmendOptions(o);
            default -> {
            }
        }
        o.checkAllUsed();
        GraphNode n = graph.lookup(null, a.nodeName());
        if (!n.driver().equals(driver)) {
            throw new CommandException("x-blockdev-amend doesn't support changing the block driver");
        }
        if (!driver.equals("qcow2")) {
            throw new CommandException("Driver does not support x-blockdev-amend");
        }
        boolean changesEncryption = encrypt;
        return () -> {
            if (changesEncryption) {
                throw new CommandException("image is not encrypted, can't amend"); // blockjobs opens no encrypted qcow2
            }
        };
    }

    /** QEMU's {@code QCryptoBlockAmendOptionsLUKS}: what a keyslot change takes. */
    private static void luksAmendOptions(Options o) {
        String state = o.string("state");
        if (!state.equals("active") && !state.equals("inactive")) {
            throw new CommandException("Parameter '" + o.prefix() + "state' does not accept value '" + state + "'");
        }
        o.optString("new-secret");
        o.optString("old-secret");
        o.optInteger("keyslot");
        o.optInteger("iter-time");
        o.optString("secret");
    }

    /**
     * Checks {@code blockdev-create}'s options now (types, known driver, nodes) and returns the
     * work the job does.
     */
    static Runnable prepareCreate(BlockGraph graph, JsonNode options) {
        Options o = new Options(options, "options.");
        String driver = o.string("driver");
        switch (driver) {
            case "file" -> {
                Path path = Path.of(o.string("filename"));
                long size = o.integer("size");
                String prealloc = o.optString("preallocation");
                if (prealloc != null && !prealloc.equals("off")) {
                    throw new CommandException("Unsupported preallocation mode '" + prealloc + "'; use 'off'");
                }
                o.ignore("nocow", "extent-size-hint");
                o.checkAllUsed();
                return () -> unchecked(() -> Images.createRaw(path, size));
            }
            case "qcow2" -> {
                JsonNode fileRef = o.raw("file");
                if (fileRef == null) {
                    throw o.missing("file");
                }
                if (!fileRef.isString()) {
                    throw new CommandException("blockdev-create needs 'file' to name an existing file node");
                }
                GraphNode fileNode = graph.require(fileRef.asString());
                if (!(fileNode.driverNode() instanceof FileNode fn) || fn.isReadOnly()) {
                    throw new CommandException("Node '" + fileNode.name() + "' must be a writable 'file' node");
                }
                long size = o.integer("size");
                String version = o.optString("version");
                int v = version == null || version.equals("v3") ? 3 : version.equals("v2") ? 2 : -1;
                if (v < 0) {
                    throw new CommandException("Parameter 'options.version' does not accept value '" + version + "'");
                }
                Long clusterSize = o.optInteger("cluster-size");
                Long refcountBits = o.optInteger("refcount-bits");
                String backingFile = o.optString("backing-file");
                String backingFmt = o.optString("backing-fmt");
                if (o.bool("lazy-refcounts", false)) {
                    throw new CommandException("lazy-refcounts is not supported");
                }
                if (o.bool("extended-l2", false)) {
                    throw new CommandException("extended-l2 is not supported");
                }
                String compression = o.optString("compression-type");
                if (compression != null && !compression.equals("zlib")) {
                    throw new CommandException("compression-type '" + compression + "' is not supported; use zlib");
                }
                for (String unsupported : new String[] {"data-file", "data-file-raw", "encrypt"}) {
                    if (o.has(unsupported)) {
                        throw new CommandException("'" + unsupported + "' is not supported");
                    }
                }
                String prealloc = o.optString("preallocation");
                if (prealloc != null && !prealloc.equals("off")) {
                    throw new CommandException("Unsupported preallocation mode '" + prealloc + "'; use 'off'");
                }
                o.checkAllUsed();
                Qcow2CreateOptions opts = new Qcow2CreateOptions(size,
                        clusterSize == null ? Qcow2CreateOptions.DEFAULT_CLUSTER_SIZE : Math.toIntExact(clusterSize),
                        v, backingFile, backingFmt, refcountBits == null ? 16 : Math.toIntExact(refcountBits));
                return () -> unchecked(() -> Images.createQcow2(fn, opts));
            }
            case "rbd" -> { // QEMU's BlockdevCreateOptionsRbd
                Options location = o.object("location");
                long size = o.integer("size");
                Long clusterSize = o.optInteger("cluster-size");
                if (o.has("encrypt")) {
                    throw new CommandException("rbd image encryption is not supported");
                }
                o.checkAllUsed();
                io.blockjobs.platform.image.RbdNode.Config config = io.blockjobs.platform.image.ImageDrivers.rbdConfig(
                        location, id -> {
                            if (graph.object(id) instanceof io.blockjobs.platform.image.Secret s) {
                                return s;
                            }
                            throw new CommandException("No secret with id '" + id + "'");
                        }, false);
                if (config.snapshot() != null) {
                    throw new CommandException("Can't use snapshot name for image creation");
                }
                return () -> io.blockjobs.platform.image.RbdNode.create(config, size, clusterSize == null ? 0 : clusterSize);
            }
            default -> throw new CommandException("Parameter 'options.driver' does not accept value '" + driver
                    + "' (blockjobs creates 'file', 'qcow2' and 'rbd')");
        }
    }

    private interface IoAction {
        void run() throws IOException;
    }

    private static void unchecked(IoAction action) {
        try {
            action.run();
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        }
    }

    static BlockDeviceInfo info(GraphNode n, boolean flat, Bitmaps bitmaps) {
        ImageInfo image = imageInfo(n, !flat);
        GraphNode image0 = n.skipFilters();
        GraphNode backing = n.isFilter() ? null : n.backingNode();
        Optional<String> backingFile = Optional.ofNullable(backing).map(b -> b.skipFilters().filename());
        var o = n.options();
        int depth = 0; // as QEMU: 0 in a flat listing
        for (GraphNode below = flat ? null : filterOrCow(n); below != null; below = filterOrCow(below)) {
            depth++;
        }
        return new BlockDeviceInfo(image0.filename(), n.name(), n.isReadOnly(), n.driver(), backingFile,
                depth, false, o.detectZeroesName(), 0, 0, 0, 0, 0, 0, image,
                new CacheInfo(true, o.cacheDirect(), o.noFlush()), n.writeThreshold(), dirtyInfo(n, bitmaps));
    }

    /** A node's bitmaps as QEMU lists them: absent when it has none. */
    static Optional<List<BlockDirtyInfo>> dirtyInfo(GraphNode n, Bitmaps bitmaps) {
        List<Bitmap> list = bitmaps.list(n);
        return list.isEmpty() ? Optional.empty() : Optional.of(list.stream().map(BlockDirtyInfo::of).toList());
    }

    /**
     * The next node down as QEMU's {@code bdrv_filter_or_cow_bs} finds it: a filter's child, or
     * a format's backing. QEMU's depths and nested images count every such step, a filter too.
     */
    private static GraphNode filterOrCow(GraphNode n) {
        Edge f = n.filteredEdge();
        return f != null ? f.child() : n.backingNode();
    }

    private static ImageInfo imageInfo(GraphNode n, boolean withBacking) {
        long size;
        try {
            size = n.size();
        } catch (IOException e) {
            size = 0;
        }
        GraphNode image = n.skipFilters();
        Optional<Long> actual = Optional.empty();
        try {
            actual = Optional.of(Files.size(Path.of(image.filename())));
        } catch (IOException | RuntimeException e) {
            // not a local file
        }
        Optional<Integer> cluster = Optional.empty();
        Optional<String> backingName = Optional.empty();
        Optional<String> backingFormat = Optional.empty();
        Optional<Boolean> dirty = Optional.empty();
        if (n.driverNode() instanceof Qcow2Node q) {
            cluster = Optional.of(q.clusterSize());
            backingName = Optional.ofNullable(q.backingFileName());
            backingFormat = Optional.ofNullable(q.backingFormat());
            dirty = Optional.of(false);
        } else {
            // QEMU's rbd_getinfo: the object size, for the rbd node and a raw node over it
            Edge file = n.driver().equals("raw") ? n.child("file") : null;
            GraphNode protocol = file != null ? file.child() : n;
            if (protocol.driverNode() instanceof io.blockjobs.platform.image.RbdNode r) {
                cluster = Optional.of(r.clusterSize());
                dirty = Optional.of(false);
            }
        }
        GraphNode next = filterOrCow(n);
        Optional<String> fullBacking = n.isFilter() ? Optional.empty()
                : Optional.ofNullable(next).map(b -> b.skipFilters().filename());
        Optional<ImageInfo> backingImage = withBacking && next != null
                ? Optional.of(imageInfo(next, true)) : Optional.empty();
        return new ImageInfo(image.filename(), n.driver(), dirty, actual, size, cluster, backingName, fullBacking,
                backingFormat, backingImage, InternalSnapshotCommands.list(n), formatSpecific(n));
    }

    /** QEMU's {@code bdrv_get_specific_info}: qcow2's and rbd's; other drivers have none. */
    private static Optional<FormatSpecific> formatSpecific(GraphNode n) {
        if (n.driverNode() instanceof Qcow2Node q) {
            Qcow2Node.SpecificInfo i = q.specificInfo();
            if (i.version() == 2) {
                return Optional.of(new FormatSpecific("qcow2", new Qcow2Specific("0.10", Optional.empty(),
                        Optional.empty(), Optional.empty(), i.refcountBits(), Optional.empty(), "zlib")));
            }
            List<Qcow2BitmapInfo> bitmaps = i.bitmaps().stream().map(b -> {
                List<String> flags = new java.util.ArrayList<>();
                if (b.inUse()) {
                    flags.add("in-use");
                }
                if (b.auto()) {
                    flags.add("auto");
                }
                return new Qcow2BitmapInfo(b.name(), b.granularity(), flags);
            }).toList();
            return Optional.of(new FormatSpecific("qcow2", new Qcow2Specific("1.1", Optional.of(i.lazyRefcounts()),
                    Optional.of(i.corrupt()), Optional.of(false), i.refcountBits(),
                    bitmaps.isEmpty() ? Optional.empty() : Optional.of(bitmaps), "zlib")));
        }
        if (n.driverNode() instanceof io.blockjobs.platform.image.RbdNode r) {
            return Optional.of(new FormatSpecific("rbd", new RbdSpecific(Optional.ofNullable(r.encryptionFormat()))));
        }
        return Optional.empty();
    }
}
