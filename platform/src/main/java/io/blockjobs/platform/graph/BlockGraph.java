package io.blockjobs.platform.graph;

import io.blockjobs.platform.image.BlkdebugNode;
import io.blockjobs.platform.image.FileNode;
import io.blockjobs.platform.image.ImageException;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.platform.image.Qcow2Node;
import io.blockjobs.platform.image.RawNode;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;

/**
 * The node graph. Every method is called with the graph's monitor held (QMP commands run one at
 * a time, as under QEMU's big lock); I/O through nodes does not touch the graph.
 */
public final class BlockGraph implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(BlockGraph.class);
    private static final Pattern NODE_NAME = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,30}");

    private final Map<String, GraphNode> nodes = new LinkedHashMap<>();
    private final List<BlockBackend> backends = new CopyOnWriteArrayList<>();
    private int generated;

    /** QMP {@code blockdev-add}: opens a node (and its inline children) from QEMU's options. */
    public synchronized GraphNode add(JsonNode options) {
        List<GraphNode> opened = new ArrayList<>();
        try {
            return open(new Options(options, ""), true, opened);
        } catch (RuntimeException e) {
            closeAll(opened);
            throw e;
        }
    }

    private GraphNode open(Options o, boolean monitorOwned, List<GraphNode> opened) {
        String driver = o.string("driver");
        String name = o.optString("node-name");
        if (name == null) {
            if (monitorOwned) {
                throw o.missing("node-name"); // QEMU: blockdev-add needs a node-name
            }
            name = generateName();
        } else {
            checkNewName(name);
        }
        boolean readOnly = o.bool("read-only", false);
        o.ignore("auto-read-only", "discard", "detect-zeroes", "cache", "force-share");
        GraphNode node = switch (driver) {
            case "file" -> openFile(o, name, readOnly, monitorOwned);
            case "raw" -> {
                GraphNode file = child(o, "file", readOnly, opened);
                if (!(file.node() instanceof FileNode fn)) {
                    throw new CommandException("raw needs a 'file' node as its file child");
                }
                o.checkAllUsed();
                yield new GraphNode(name, new RawNode(fn), monitorOwned, file, null);
            }
            case "qcow2" -> openQcow2(o, name, readOnly, monitorOwned, opened);
            case "blkdebug" -> openBlkdebug(o, name, readOnly, monitorOwned, opened);
            default -> throw new CommandException("Parameter 'driver' does not accept value '" + driver + "'");
        };
        nodes.put(name, node);
        opened.add(node);
        return node;
    }

    private GraphNode openFile(Options o, String name, boolean readOnly, boolean monitorOwned) {
        String filename = o.string("filename");
        o.ignore("aio", "locking", "aio-max-batch", "drop-cache", "x-check-cache-dropped", "pr-manager");
        o.checkAllUsed();
        try {
            FileNode file = FileNode.open(Path.of(filename), !readOnly);
            return new GraphNode(name, file, monitorOwned, null, null);
        } catch (IOException e) {
            throw new CommandException("Could not open '" + filename + "': " + reason(e, filename));
        }
    }

    private GraphNode openQcow2(Options o, String name, boolean readOnly, boolean monitorOwned, List<GraphNode> opened) {
        GraphNode file = child(o, "file", readOnly, opened);
        if (!(file.node() instanceof FileNode fn)) {
            throw new CommandException("qcow2 needs a 'file' node as its file child");
        }
        if (!readOnly && fn.isReadOnly()) {
            throw new CommandException("Node '" + file.name() + "' is read-only; open '" + name + "' with read-only=on");
        }
        boolean backingGiven = o.has("backing") || o.raw("backing") != null;
        JsonNode backingRef = o.raw("backing");
        GraphNode explicitBacking = null;
        if (backingRef != null && !backingRef.isNull()) {
            explicitBacking = ref(backingRef, "backing", true, opened);
        }
        o.ignore("lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
                "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
                "cache-clean-interval", "discard-no-unref");
        o.checkAllUsed();
        GraphNode[] found = new GraphNode[1];
        Path image = fn.path();
        try {
            Qcow2Node qcow2 = Qcow2Node.open(fn, !readOnly, (backingName, backingFormat) -> {
                if (backingGiven) {
                    return null; // given (or null): the header's name is not followed
                }
                found[0] = openBackingChain(Images.resolveBacking(image, backingName), backingFormat, opened,
                        new HashSet<>(Set.of(image.toRealPath())));
                return found[0].node();
            }, false);
            GraphNode backing = explicitBacking != null ? explicitBacking : found[0];
            if (backing != null) {
                qcow2.setBackingNode(backing.node());
            }
            return new GraphNode(name, qcow2, monitorOwned, file, backing);
        } catch (IOException e) {
            throw new CommandException(reason(e, image.toString()));
        }
    }

    /** QEMU's {@code blkdebug} filter, subset: {@code image} and {@code inject-error}, for fault tests. */
    private GraphNode openBlkdebug(Options o, String name, boolean readOnly, boolean monitorOwned, List<GraphNode> opened) {
        GraphNode image = child(o, "image", readOnly, opened);
        List<BlkdebugNode.Rule> rules = new ArrayList<>();
        JsonNode inject = o.raw("inject-error");
        if (inject != null) {
            if (!inject.isArray()) {
                throw o.type("inject-error", "array");
            }
            for (int i = 0; i < inject.size(); i++) {
                Options r = new Options(inject.get(i), "inject-error[" + i + "].");
                String event = r.string("event");
                String iotype = r.optString("iotype");
                if (iotype == null) {
                    iotype = event.startsWith("read") ? "read" : event.startsWith("write") ? "write" : null;
                }
                Long sector = r.optInteger("sector");
                Long errno = r.optInteger("errno");
                boolean once = r.bool("once", false);
                r.ignore("state", "immediately");
                r.checkAllUsed();
                rules.add(new BlkdebugNode.Rule(iotype, sector == null ? -1 : sector, errno == null ? 5 : errno.intValue(), once));
            }
        }
        o.ignore("config", "align", "set-state", "max-transfer", "opt-write-zero", "max-write-zero",
                "opt-discard", "max-discard", "take-child-perms", "unshare-child-perms");
        o.checkAllUsed();
        return new GraphNode(name, new BlkdebugNode(image.node(), rules), monitorOwned, image, null);
    }

    /** Opens a backing chain from the images' own names, read-only, with generated node names. */
    private GraphNode openBackingChain(Path path, String format, List<GraphNode> opened, Set<Path> seen) throws IOException {
        Path real;
        try {
            real = path.toRealPath();
        } catch (java.nio.file.NoSuchFileException e) {
            throw new ImageException(path.toString(), "no such file");
        }
        if (!seen.add(real)) {
            throw new ImageException(path.toString(), "backing chain loops: this image is already part of it");
        }
        FileNode fn = FileNode.open(path, false);
        GraphNode file = new GraphNode(generateName(), fn, false, null, null);
        nodes.put(file.name(), file);
        opened.add(file);
        String fmt = format != null ? format : Images.probe(fn);
        GraphNode node;
        if (fmt.equals("raw")) {
            node = new GraphNode(generateName(), new RawNode(fn), false, file, null);
        } else if (fmt.equals("qcow2")) {
            GraphNode[] below = new GraphNode[1];
            Qcow2Node q = Qcow2Node.open(fn, false, (n, f) -> {
                below[0] = openBackingChain(Images.resolveBacking(path, n), f, opened, seen);
                return below[0].node();
            }, false);
            node = new GraphNode(generateName(), q, false, file, below[0]);
        } else {
            throw new ImageException(path.toString(), "unsupported image format '" + fmt + "'");
        }
        nodes.put(node.name(), node);
        opened.add(node);
        return node;
    }

    private GraphNode child(Options o, String key, boolean readOnly, List<GraphNode> opened) {
        JsonNode ref = o.raw(key);
        if (ref == null || ref.isNull()) {
            throw o.missing(key);
        }
        return ref(ref, key, readOnly, opened);
    }

    /** A BlockdevRef: the name of an existing node, or inline options for a new one. */
    private GraphNode ref(JsonNode ref, String key, boolean readOnly, List<GraphNode> opened) {
        if (ref.isString()) {
            return require(ref.asString());
        }
        if (ref.isObject()) {
            Options inline = new Options(ref, key + ".");
            if (readOnly && !inline.has("read-only")) {
                ((tools.jackson.databind.node.ObjectNode) ref).put("read-only", true);
            }
            return open(new Options(ref, key + "."), false, opened);
        }
        throw new CommandException("Invalid parameter type for '" + key + "', expected: string or object");
    }

    /** The node with this name, or QEMU's error. */
    public synchronized GraphNode require(String name) {
        GraphNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException(ErrorClass.GENERIC_ERROR, "Cannot find device='' nor node-name='" + name + "'");
        }
        return n;
    }

    public synchronized GraphNode find(String name) {
        return nodes.get(name);
    }

    public synchronized List<GraphNode> all() {
        return new ArrayList<>(nodes.values());
    }

    /** QMP {@code blockdev-del}. */
    public synchronized void delete(String name) {
        GraphNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException("Failed to find node with node-name='" + name + "'");
        }
        if (!n.monitorOwned()) {
            throw new CommandException("Node " + name + " is not owned by the monitor");
        }
        String user = userOf(n);
        if (user != null) {
            throw new CommandException("Node '" + name + "' is busy: " + user);
        }
        release(n);
    }

    /** Who uses the node, in words, or null if nobody does. */
    private String userOf(GraphNode n) {
        for (GraphNode p : nodes.values()) {
            if (p.file() == n) {
                return "node is used as file of '" + p.name() + "'";
            }
            if (p.backing() == n) {
                return "node is used as backing hd of '" + p.name() + "'";
            }
        }
        for (BlockBackend b : backends) {
            if (b.root() == n) {
                return "node is in use by " + b.owner();
            }
        }
        return null;
    }

    private void release(GraphNode n) {
        nodes.remove(n.name());
        try {
            n.node().close();
        } catch (IOException e) {
            LOG.warn("closing node {}: {}", n.name(), e.getMessage());
        }
        for (GraphNode child : new GraphNode[] {n.file(), n.backing()}) {
            if (child != null && !child.monitorOwned() && nodes.containsValue(child) && userOf(child) == null) {
                release(child);
            }
        }
    }

    /** A backend on {@code node} for an export or job; it follows snapshots. */
    public synchronized BlockBackend attach(String owner, GraphNode node) {
        BlockBackend b = new BlockBackend(owner, node);
        backends.add(b);
        return b;
    }

    public synchronized void detach(BlockBackend backend) {
        backends.remove(backend);
    }

    /**
     * QMP {@code blockdev-snapshot}: {@code overlay} (no backing yet, unused) goes on top of
     * {@code node}; everything that used {@code node} now uses {@code overlay}.
     */
    public synchronized void snapshot(String nodeName, String overlayName) {
        GraphNode node = require(nodeName);
        GraphNode overlay = require(overlayName);
        for (GraphNode n = node; n != null; n = n.backing()) {
            if (n == overlay) {
                throw new CommandException("The overlay '" + overlayName + "' is part of the backing chain of '"
                        + nodeName + "'; choose a new, unused node as the overlay");
            }
        }
        if (!(overlay.node() instanceof Qcow2Node q)) {
            throw new CommandException("The overlay does not support backing images");
        }
        if (overlay.backing() != null) {
            throw new CommandException("The overlay already has a backing image");
        }
        if (userOf(overlay) != null) {
            throw new CommandException("The overlay is already in use");
        }
        if (overlay.node().isReadOnly()) {
            throw new CommandException("The overlay is read-only");
        }
        append(node, overlay, q);
    }

    private void append(GraphNode node, GraphNode overlay, Qcow2Node q) {
        for (GraphNode p : nodes.values()) {
            if (p != overlay && p.backing() == node && p.node() instanceof Qcow2Node pq) {
                pq.setBackingNode(overlay.node());
                p.setBacking(overlay);
            }
        }
        for (BlockBackend b : backends) {
            if (b.root() == node) {
                b.setRoot(overlay);
            }
        }
        q.setBackingNode(node.node());
        overlay.setBacking(node);
    }

    /**
     * QMP {@code blockdev-snapshot-sync}: creates a qcow2 overlay file whose backing file is the
     * node's image, opens it and puts it on top.
     */
    public synchronized GraphNode snapshotSync(String nodeName, String snapshotFile, String snapshotNodeName,
                                               String format, boolean existing) {
        GraphNode node = require(nodeName);
        if (!"qcow2".equals(format)) {
            throw new CommandException("Format '" + format + "' is not supported for snapshots; use qcow2");
        }
        if (snapshotNodeName != null) {
            checkNewName(snapshotNodeName);
        }
        Path file = Path.of(snapshotFile);
        try {
            if (!existing) {
                String backingFile = node.node().filename();
                Images.createQcow2(file, Qcow2CreateOptions.of(node.node().size())
                        .withBacking(Path.of(backingFile).toAbsolutePath().toString(), node.driver()));
            } else if (!Files.exists(file)) {
                throw new CommandException("Could not open '" + snapshotFile + "': No such file or directory");
            }
        } catch (IOException e) {
            throw new CommandException("Could not create '" + snapshotFile + "': " + reason(e, snapshotFile));
        }
        List<GraphNode> opened = new ArrayList<>();
        try {
            FileNode fn = FileNode.open(file, true);
            GraphNode fileNode = new GraphNode(generateName(), fn, false, null, null);
            nodes.put(fileNode.name(), fileNode);
            opened.add(fileNode);
            Qcow2Node q = Qcow2Node.open(fn, true, (n, f) -> null, false);
            GraphNode overlay = new GraphNode(snapshotNodeName != null ? snapshotNodeName : generateName(),
                    q, false, fileNode, null);
            nodes.put(overlay.name(), overlay);
            opened.add(overlay);
            append(node, overlay, q);
            return overlay;
        } catch (IOException | RuntimeException e) {
            closeAll(opened);
            throw e instanceof CommandException ce ? ce : new CommandException(reason(e, snapshotFile));
        }
    }

    /**
     * Makes {@code backingName} (or nothing) the backing of {@code overlayName}: the overlay's
     * header first, durably; then the graph; then layers nobody uses any more are closed.
     */
    public synchronized void setBacking(String overlayName, String backingName, String backingFile) {
        GraphNode overlay = require(overlayName);
        GraphNode backing = backingName == null ? null : require(backingName);
        if (!(overlay.node() instanceof Qcow2Node q)) {
            throw new CommandException("'" + overlayName + "' (" + overlay.driver() + ") cannot have a backing file");
        }
        String name = backing == null ? null : backingFile != null ? backingFile : backing.node().filename();
        String format = null;
        for (GraphNode f = backing; f != null; f = f.file()) { // a filter's format is its image's
            format = f.driver();
            if (!(f.node() instanceof BlkdebugNode) && !(f.node() instanceof WriteTrackingFilter)) {
                break;
            }
        }
        try {
            q.replaceBacking(backing == null ? null : backing.node(), name, format);
        } catch (IOException e) {
            throw new CommandException("could not change the backing file of '" + overlayName + "': " + e.getMessage());
        }
        GraphNode old = overlay.backing();
        overlay.setBacking(backing);
        for (GraphNode n = old; n != null && n != backing; ) {
            GraphNode next = n.backing();
            if (!n.monitorOwned() && nodes.containsValue(n) && userOf(n) == null) {
                release(n);
            }
            n = next;
        }
    }

    /**
     * Puts a write-tracking filter above {@code nodeName}; every backend on the node except
     * {@code keep} (the job's own) now goes through it.
     */
    public synchronized io.blockjobs.sdk.job.WriteTracker insertTracker(String nodeName, String filterName,
                                                                       java.util.Collection<BlockBackend> keep) {
        GraphNode node = require(nodeName);
        String name = filterName != null ? filterName : generateName();
        if (filterName != null) {
            checkNewName(filterName);
        }
        GraphNode[] self = new GraphNode[1];
        WriteTrackingFilter filter = new WriteTrackingFilter(name, node.node(), () -> drainUsersOf(self[0]));
        GraphNode f = new GraphNode(name, filter, false, node, null);
        self[0] = f;
        nodes.put(name, f);
        for (BlockBackend b : backends) {
            if (b.root() == node && !keep.contains(b)) {
                b.setRoot(f);
            }
        }
        return filter;
    }

    /** Drains every backend on {@code node} until the returned handle is closed (same thread). */
    private AutoCloseable drainUsersOf(GraphNode node) {
        List<BlockBackend> drained = new ArrayList<>();
        for (BlockBackend b : backends) {
            if (b.root() == node) {
                b.drain();
                drained.add(b);
            }
        }
        return () -> drained.forEach(BlockBackend::undrain);
    }

    /** Moves every backend on {@code from} to {@code to}. */
    public synchronized void replaceUsers(String from, String to) {
        GraphNode f = require(from);
        GraphNode t = require(to);
        for (BlockBackend b : backends) {
            if (b.root() == f) {
                b.setRoot(t);
            }
        }
    }

    /** Removes a tracking filter; its backends go to the node beneath. */
    public synchronized void removeFilter(String filterName) {
        GraphNode f = nodes.get(filterName);
        if (f == null || !(f.node() instanceof WriteTrackingFilter)) {
            return;
        }
        for (BlockBackend b : backends) {
            if (b.root() == f) {
                b.setRoot(f.file());
            }
        }
        nodes.remove(filterName);
    }

    private void checkNewName(String name) {
        if (!NODE_NAME.matcher(name).matches()) {
            throw new CommandException("Invalid node-name: '" + name + "'");
        }
        if (nodes.containsKey(name)) {
            throw new CommandException("Duplicate nodes with node-name='" + name + "'");
        }
    }

    private String generateName() {
        String name;
        do {
            name = String.format("#block%03d", ++generated);
        } while (nodes.containsKey(name));
        return name;
    }

    private void closeAll(List<GraphNode> opened) {
        for (int i = opened.size() - 1; i >= 0; i--) {
            GraphNode n = opened.get(i);
            nodes.remove(n.name());
            try {
                n.node().close();
            } catch (IOException e) {
                LOG.warn("closing {}: {}", n.name(), e.getMessage());
            }
        }
    }

    private static String reason(Exception e, String file) {
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }

    /** Flushes and closes every node, tops first. */
    @Override
    public synchronized void close() {
        List<GraphNode> order = new ArrayList<>(nodes.values());
        // Parents before children: a node is closed once nothing left above it uses it.
        while (!order.isEmpty()) {
            boolean progress = false;
            for (GraphNode n : new ArrayList<>(order)) {
                boolean used = order.stream().anyMatch(p -> p != n && (p.file() == n || p.backing() == n));
                if (!used) {
                    try {
                        n.node().flush();
                    } catch (IOException e) {
                        LOG.warn("flushing {}: {}", n.name(), e.getMessage());
                    }
                    try {
                        n.node().close();
                    } catch (IOException e) {
                        LOG.warn("closing {}: {}", n.name(), e.getMessage());
                    }
                    order.remove(n);
                    progress = true;
                }
            }
            if (!progress) {
                break;
            }
        }
        nodes.clear();
        backends.clear();
    }
}
