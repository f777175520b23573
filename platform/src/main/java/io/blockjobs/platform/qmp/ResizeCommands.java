package io.blockjobs.platform.qmp;

import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.event.QmpEvent;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.util.Collections;
import java.util.Optional;
import java.util.Set;
import java.util.WeakHashMap;

/**
 * {@code block_resize}, {@code change-backing-file} and {@code block-set-write-threshold} (with
 * its {@code BLOCK_WRITE_THRESHOLD} event), as QEMU 7.2's {@code blockdev.c} and
 * {@code block/write-threshold.c} do them, with their messages.
 */
public final class ResizeCommands {
    private ResizeCommands() {
    }

    /** {@code block_resize}'s arguments. */
    public record ResizeArgs(Optional<String> device, Optional<String> nodeName, long size) {
    }

    /** {@code change-backing-file}'s arguments. */
    public record ChangeBackingFileArgs(String device, String imageNodeName, String backingFile) {
    }

    /** {@code block-set-write-threshold}'s arguments. */
    public record WriteThresholdArgs(String nodeName, long writeThreshold) {
    }

    public static void register(QmpDispatcher d, BlockGraph graph, JobManager jobs, Bitmaps bitmaps, EventBus events) {
        d.register(QmpCommand.of("block_resize", ResizeArgs.class, null, a -> {
            resize(graph, jobs, bitmaps, a);
            return null;
        }));
        d.register(QmpCommand.of("change-backing-file", ChangeBackingFileArgs.class, null, a -> {
            changeBackingFile(graph, jobs, a);
            return null;
        }));
        Set<GraphNode> watched = Collections.newSetFromMap(new WeakHashMap<>()); // nodes with the hook, by identity
        d.register(QmpCommand.of("block-set-write-threshold", WriteThresholdArgs.class, null, a -> {
            GraphNode n = graph.find(a.nodeName());
            if (n == null) {
                throw new CommandException("Device '" + a.nodeName() + "' not found"); // QEMU's bdrv_find_node
            }
            if (watched.add(n)) {
                n.addHook(new ThresholdHook(n, events));
            }
            n.setWriteThreshold(a.writeThreshold());
            return null;
        }));
    }

    /**
     * QEMU's {@code bdrv_lookup_bs(device, node_name)}: {@code device} names a BlockBackend, and
     * blockjobd has no named ones (as qemu-storage-daemon), so only {@code node-name} finds a node.
     */
    private static GraphNode lookup(BlockGraph graph, Optional<String> device, Optional<String> nodeName) {
        GraphNode n = nodeName.map(graph::find).orElse(null);
        if (n == null) {
            throw new CommandException("Cannot find device='" + device.orElse("") + "' nor node-name='"
                    + nodeName.orElse("") + "'");
        }
        return n;
    }

    /**
     * QEMU's {@code qmp_block_resize}: refused on a node a job uses (its op blocker), then a
     * temporary user takes {@code resize} (a parent or export that does not share it refuses,
     * named in the permission conflict), and the node is truncated drained.
     */
    static void resize(BlockGraph graph, JobManager jobs, Bitmaps bitmaps, ResizeArgs a) {
        GraphNode n = lookup(graph, a.device(), a.nodeName());
        if (a.size() < 0) {
            throw new CommandException("Parameter 'size' expects a >0 size");
        }
        if (jobs.blocker(n.name()) != null) {
            throw new CommandException("Device '" + a.device().orElse("(null)") + "' is in use");
        }
        for (GraphNode m = n; m != null; m = m.isFilter() ? m.filteredEdge().child() : m.file()) {
            if (!bitmaps.list(m).isEmpty()) { // QEMU resizes them; blockjobs' bitmaps have a fixed size
                throw new CommandException("Cannot resize node '" + m.name() + "' while it has dirty bitmaps "
                        + "(blockjobs cannot resize bitmaps yet)");
            }
        }
        Edge user = graph.attachRoot(BlockGraph.RootUser.export(""), "root", n, Perm.RESIZE.bit(), Perm.ALL, false);
        try (BlockGraph.Drained jobsDrained = jobs.drain(); BlockGraph.Drained drained = graph.drain(n)) {
            n.truncate(a.size());
        } catch (IOException e) {
            throw new CommandException(e.getMessage());
        } finally {
            graph.detachRoot(user);
        }
    }

    /**
     * QEMU's {@code qmp_change_backing_file}: rewrites the backing file name in the header of
     * {@code image-node-name}, an image of {@code device}'s chain that has a backing file; the
     * graph is left as it is. As QEMU, the format recorded is the image's own driver name.
     */
    static void changeBackingFile(BlockGraph graph, JobManager jobs, ChangeBackingFileArgs a) {
        GraphNode bs = graph.find(a.device());
        if (bs == null) {
            throw new CommandException("Cannot find device='" + a.device() + "' nor node-name='" + a.device() + "'");
        }
        if (!bs.parents().stream().allMatch(e -> e.parent() == null)) {
            throw new CommandException("Need a root block node");
        }
        GraphNode image = graph.find(a.imageNodeName());
        if (image == null) {
            throw new CommandException("Cannot find device='' nor node-name='" + a.imageNodeName() + "'");
        }
        if (image.chainNext() == null) {
            throw new CommandException("not allowing backing file change on an image without a backing file");
        }
        String blocker = jobs.blocker(bs.name());
        if (blocker != null) {
            throw new CommandException(blocker);
        }
        boolean inChain = false;
        for (GraphNode m = bs; m != null && !inChain; m = m.filterOrCow()) {
            inChain = m == image;
        }
        if (!inChain) {
            throw new CommandException("'" + a.device() + "' and image file are not in the same chain");
        }
        boolean readOnly = image.isReadOnly();
        try {
            if (readOnly) {
                graph.reopenReadWrite(image); // as QEMU: writable for the change, read-only again after
            }
            image.driverNode().changeBackingFile(a.backingFile(), image.driver());
        } catch (IOException | UnsupportedOperationException e) {
            throw new CommandException("Could not change backing file to '" + a.backingFile() + "': "
                    + (e instanceof UnsupportedOperationException ? "Operation not supported" : e.getMessage()));
        } finally {
            if (readOnly && !image.isReadOnly()) {
                graph.reopenReadOnly(image);
            }
        }
    }

    /**
     * QEMU's {@code bdrv_write_threshold_check_write}, run before each write, write-zeroes and
     * discard of the node (QEMU checks in {@code bdrv_co_write_req_prepare}, on the request
     * aligned to the node): the first request that ends past the threshold sends the event and
     * clears the threshold.
     */
    private record ThresholdHook(GraphNode node, EventBus events) implements WriteHook {
        @Override
        public void before(WriteRequest request) {
            if (node.writeThreshold() == 0) {
                return;
            }
            int align = node.limits().requestAlignment();
            long end = (request.offset() + request.length() + align - 1) & -align;
            long passed = node.passWriteThreshold(end);
            if (passed != 0) {
                events.publish(new QmpEvent.BlockWriteThreshold(node.name(), passed, end - passed));
            }
        }
    }
}
