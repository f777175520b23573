package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.image.Qcow2Node;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.time.Instant;
import java.util.List;
import java.util.Optional;

/**
 * {@code blockdev-snapshot-internal-sync} and {@code blockdev-snapshot-delete-internal-sync}
 * (also as a {@code transaction} action), as QEMU 7.2's {@code blockdev.c} and
 * {@code block/snapshot.c} do them, with their messages: {@code device} is a root node's name
 * (qemu-storage-daemon has no named devices), a filter or a {@code raw} node stands for the
 * qcow2 image below it, and the node is drained while the snapshot tables change.
 */
public final class InternalSnapshotCommands {
    private InternalSnapshotCommands() {
    }

    /** {@code blockdev-snapshot-internal-sync}'s arguments ({@code BlockdevSnapshotInternal}). */
    public record CreateArgs(String device, String name) {
    }

    /** {@code blockdev-snapshot-delete-internal-sync}'s arguments. */
    public record DeleteArgs(String device, Optional<String> id, Optional<String> name) {
    }

    /** QEMU's {@code SnapshotInfo}. */
    public record SnapshotInfo(String id, String name, long vmStateSize, long dateSec, long dateNsec,
                               long vmClockSec, long vmClockNsec, Optional<Long> icount) {
    }

    public static void register(QmpDispatcher d, BlockGraph graph, JobManager jobs) {
        d.register(QmpCommand.of("blockdev-snapshot-internal-sync", CreateArgs.class, null, a -> {
            create(graph, jobs, a);
            return null;
        }));
        d.register(QmpCommand.of("blockdev-snapshot-delete-internal-sync", DeleteArgs.class, SnapshotInfo.class,
                a -> delete(graph, jobs, a)));
    }

    /**
     * QEMU's {@code qmp_get_root_bs}. A job's nodes are not roots: in QEMU the job is their
     * parent ({@code block_job_add_bdrv}), so this comes before the job's op blocker.
     */
    private static GraphNode rootNode(BlockGraph graph, JobManager jobs, String device) {
        GraphNode n = graph.lookup(device, device);
        if (!n.parents().stream().allMatch(e -> e.parent() == null) || jobs.blocker(n.name()) != null) {
            throw new CommandException("Need a root block node");
        }
        return n;
    }

    /**
     * The qcow2 image that takes a snapshot of {@code n} (QEMU's {@code bdrv_snapshot_fallback}:
     * down through a node's only child, its filtered or {@code file} child), or null.
     */
    static Qcow2Node image(GraphNode n) {
        for (GraphNode m = n; m != null; ) {
            if (m.driverNode() instanceof Qcow2Node q) {
                return q;
            }
            List<Edge> children = m.children();
            if (children.size() != 1) {
                return null;
            }
            Edge only = children.get(0);
            Edge filtered = m.filteredEdge();
            if (only != filtered && !only.name().equals("file")) {
                return null;
            }
            m = only.child();
        }
        return null;
    }

    /**
     * QEMU's {@code internal_snapshot_prepare}; returns the undo a transaction's abort runs
     * ({@code internal_snapshot_abort}: the snapshot is deleted again).
     */
    static BlockGraph.Undo create(BlockGraph graph, JobManager jobs, CreateArgs a) {
        GraphNode n = rootNode(graph, jobs, a.device());
        try (BlockGraph.Drained drained = graph.drain(n)) {
            String blocker = jobs.blocker(n.name());
            if (blocker != null) {
                throw new CommandException(blocker);
            }
            if (n.isReadOnly()) {
                throw new CommandException("Device '" + a.device() + "' is read only");
            }
            Qcow2Node image = image(n);
            if (image == null || image.isReadOnly()) {
                throw new CommandException("Block format '" + n.driver() + "' used by device '" + a.device()
                        + "' does not support internal snapshots");
            }
            if (a.name().isEmpty()) {
                throw new CommandException("Name is empty");
            }
            if (image.findSnapshot(null, a.name()).isPresent()) {
                throw new CommandException("Snapshot with name '" + a.name() + "' already exists on device '"
                        + a.device() + "'");
            }
            // qemu_gettimeofday for the date; QSD's virtual clock is the real-time clock, in microseconds too.
            Instant now = Instant.now();
            long micros = now.getNano() / 1000;
            Qcow2Node.InternalSnapshot sn;
            try {
                sn = image.createSnapshot(truncated(a.name()), now.getEpochSecond(), micros * 1000,
                        now.getEpochSecond() * 1_000_000_000L + micros * 1000);
            } catch (IOException e) {
                throw new CommandException("Failed to create snapshot '" + a.name() + "' on device '" + a.device()
                        + "': " + Errno.of(e).message());
            }
            return () -> {
                try (BlockGraph.Drained again = graph.drain(n)) {
                    image.deleteSnapshot(sn.id(), sn.name());
                } catch (IOException e) {
                    throw new CommandException(e.getMessage());
                }
            };
        }
    }

    /**
     * The snapshots {@code ImageInfo} lists for {@code n} (QEMU's
     * {@code bdrv_query_snapshot_info_list}): none if it has none or cannot have any.
     */
    static Optional<List<SnapshotInfo>> list(GraphNode n) {
        Qcow2Node image = image(n);
        if (image == null || image.snapshots().isEmpty()) {
            return Optional.empty();
        }
        return Optional.of(image.snapshots().stream().map(InternalSnapshotCommands::info).toList());
    }

    private static SnapshotInfo info(Qcow2Node.InternalSnapshot sn) {
        return new SnapshotInfo(sn.id(), sn.name(), sn.vmStateSize(), sn.dateSec(), sn.dateNsec(),
                Long.divideUnsigned(sn.vmClockNsec(), 1_000_000_000L), Long.remainderUnsigned(sn.vmClockNsec(),
                1_000_000_000L), sn.icount() == -1 ? Optional.empty() : Optional.of(sn.icount()));
    }

    /** The name as QEMU keeps it: {@code pstrcpy} into 256 bytes, so at most 255 (here whole characters). */
    private static String truncated(String name) {
        byte[] utf8 = name.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        if (utf8.length <= 255) {
            return name;
        }
        int end = 255;
        while (end > 0 && (utf8[end] & 0xc0) == 0x80) { // not inside a character
            end--;
        }
        return new String(utf8, 0, end, java.nio.charset.StandardCharsets.UTF_8);
    }

    /** QEMU's {@code qmp_blockdev_snapshot_delete_internal_sync}. */
    static SnapshotInfo delete(BlockGraph graph, JobManager jobs, DeleteArgs a) {
        GraphNode n = rootNode(graph, jobs, a.device());
        String id = a.id().orElse(null);
        String name = a.name().orElse(null);
        if (id == null && name == null) {
            throw new CommandException("Name or id must be provided");
        }
        String blocker = jobs.blocker(n.name());
        if (blocker != null) {
            throw new CommandException(blocker);
        }
        Qcow2Node image = image(n);
        if (image == null) {
            throw new CommandException("Failed to get a snapshot list: " + Errno.ENOTSUP.message());
        }
        Qcow2Node.InternalSnapshot sn = image.findSnapshot(id, name).orElseThrow(() -> new CommandException(
                "Snapshot with id '" + (id == null ? "null" : id) + "' and name '" + (name == null ? "null" : name)
                        + "' does not exist on device '" + a.device() + "'"));
        try (BlockGraph.Drained drained = graph.drain(n)) {
            image.deleteSnapshot(sn.id(), sn.name());
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        }
        return info(sn);
    }
}
