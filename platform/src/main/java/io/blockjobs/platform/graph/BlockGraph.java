package io.blockjobs.platform.graph;

import io.blockjobs.platform.image.BlkdebugNode;
import io.blockjobs.platform.image.ImageDrivers;
import io.blockjobs.platform.image.ImageException;
import io.blockjobs.platform.image.Images;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.driver.OpenFlags;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.JsonNodeFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * The node graph: named nodes, the edges between them (with QEMU's roles and permissions), the
 * root edges of exports and jobs, the driver registry and user-created objects. Structural
 * methods are called on the daemon's main loop (QMP commands run one at a time, as under QEMU's
 * big lock) and hold the graph's monitor; I/O through nodes does not touch the graph.
 *
 * <p>Every change that adds, moves or removes an edge is checked against QEMU's permission rules
 * afterwards and undone if it conflicts, with QEMU's message.
 */
public final class BlockGraph implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(BlockGraph.class);
    private static final Pattern NODE_NAME = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,30}");
    /** The job filters only jobs insert; they never appear in {@code BlockdevDriver}. */
    static final Set<String> JOB_FILTERS = Set.of("commit_top", "mirror_top");

    /** Who holds a root edge: QEMU's BlockBackend owner or block job, as messages and the graph dump name it. */
    public record RootUser(String kind, String name, String description) {
        /** An export's user: QEMU's exports' BlockBackends have no name. */
        public static RootUser export(String id) {
            return new RootUser("block-backend", "", "an unnamed block device");
        }

        /** A job's user. */
        public static RootUser job(String type, String id) {
            return new RootUser("block-job", id, type + " job '" + id + "'");
        }
    }

    private final Map<String, GraphNode> nodes = new LinkedHashMap<>();
    private final List<Edge> roots = new CopyOnWriteArrayList<>();
    private final Map<Edge, RootUser> rootUsers = new IdentityHashMap<>();
    private final Map<Edge, List<Object>> frozenBy = new IdentityHashMap<>();
    private final Set<GraphNode> neverFreeze = new HashSet<>();
    private final Set<GraphNode> writesUnchanged = new HashSet<>();
    private final Map<String, Object> objects = new LinkedHashMap<>();
    private final List<Drain> drains = new ArrayList<>(); // in progress; guarded by itself
    private final DriverRegistry drivers;
    private final List<NodeListener> listeners = new CopyOnWriteArrayList<>();
    private int generated;

    /**
     * Told when a node has opened and before it closes, on the main loop: how the layers above
     * the graph (dirty bitmaps) load and store what a node carries, as QEMU's open and close
     * paths call the driver's bitmap hooks.
     */
    public interface NodeListener {
        /** The node's driver has opened, its children attached. */
        default void opened(GraphNode node) {
        }

        /** The node was read-only and is now writable (QEMU's reopen, as commit reopens its base). */
        default void reopenedReadWrite(GraphNode node) {
        }

        /**
         * The node is about to become read-only ({@code blockdev-reopen}): nothing writes to it
         * now, its driver is still writable (QEMU's {@code qcow2_reopen_bitmaps_ro} stores here).
         */
        default void reopeningReadOnly(GraphNode node) {
        }

        /** The node is about to close: nothing writes to it any more, its driver is still open. */
        default void closing(GraphNode node) {
        }
    }

    /**
     * Where drivers' events go ({@link io.blockjobs.sdk.driver.DriverEvents}): the daemon sets it
     * to its event bus; until then they are logged and dropped.
     */
    public void setDriverEvents(io.blockjobs.sdk.driver.DriverEvents sink) {
        eventSink = sink;
    }

    private volatile io.blockjobs.sdk.driver.DriverEvents eventSink =
            (name, data) -> LOG.info("event {} {} (no event bus)", name, data);
    private final io.blockjobs.sdk.driver.DriverEvents driverEvents = (name, data) -> eventSink.send(name, data);

    public void addNodeListener(NodeListener listener) {
        listeners.add(listener);
    }

    List<NodeListener> listeners() {
        return listeners;
    }

    private void closing(GraphNode n) {
        for (NodeListener l : listeners) {
            try {
                l.closing(n);
            } catch (RuntimeException e) {
                LOG.warn("closing {}: {}", n.name(), message(e));
            }
        }
    }

    public BlockGraph(DriverRegistry drivers) {
        this.drivers = drivers;
    }

    /** A graph whose registry holds the built-in drivers (image drivers and the graph's filters). */
    public static BlockGraph withBuiltInDrivers() {
        DriverRegistry registry = new DriverRegistry();
        BlockGraph graph = new BlockGraph(registry);
        io.blockjobs.platform.image.ImageDrivers.all().forEach(d -> registry.register(d, "built-in"));
        FilterDrivers.all(graph).forEach(d -> registry.register(d, "built-in"));
        return graph;
    }

    public DriverRegistry drivers() {
        return drivers;
    }

    // ---- opening nodes ---------------------------------------------------------------------------

    /** QMP {@code blockdev-add}: opens a node (and its inline children) from QEMU's options. */
    public synchronized GraphNode add(JsonNode options) {
        List<GraphNode> opened = new ArrayList<>();
        try {
            GraphNode node = open(new Options(options, ""), null, true, opened, new HashSet<>());
            refreshPermissions();
            return node;
        } catch (RuntimeException e) {
            closeAll(opened);
            throw e;
        }
    }

    /**
     * Opens an image file for a job (drive-mirror's target): read-write, without its backing
     * chain, owned by its users, so it closes when none is left ({@link #releaseUnused}).
     *
     * @param format      the format, or null to probe it
     * @param optionsFrom the node whose cache and discard options it takes, or null for the defaults
     */
    public synchronized GraphNode openForJob(String filename, String format, String nodeName, GraphNode optionsFrom) {
        String driver = format;
        if (driver == null) {
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(Path.of(filename))) {
                java.nio.ByteBuffer magic = java.nio.ByteBuffer.allocate(4);
                ch.read(magic, 0);
                driver = magic.position() == 4 && magic.getInt(0) == 0x514649fb
                        ? "qcow2" : "raw"; // "QFI\xfb", the qcow2 magic
            } catch (IOException e) {
                throw new CommandException("Could not open '" + filename + "': " + message(e));
            }
        }
        ObjectNode o = JsonNodeFactory.instance.objectNode().put("driver", driver);
        if (nodeName != null) {
            o.put("node-name", nodeName);
        }
        o.putObject("file").put("driver", "file").put("filename", filename);
        if (driver.equals("qcow2")) {
            o.putNull("backing"); // QEMU's BDRV_O_NO_BACKING: the job defines the data
        }
        List<GraphNode> opened = new ArrayList<>();
        try {
            NodeOptions like = optionsFrom == null ? null : NodeOptions.like(optionsFrom.options());
            GraphNode node = open(new Options(o, ""), like, false, opened, new HashSet<>());
            refreshPermissions();
            return node;
        } catch (RuntimeException e) {
            closeAll(opened);
            throw e;
        }
    }

    private GraphNode open(Options o, NodeOptions parent, boolean monitorOwned, List<GraphNode> opened,
                           Set<Path> chain) {
        return open(o, parent, monitorOwned, opened, chain, null);
    }

    /** Opens a node; {@code generatedName}, if given, is the name the graph chose for it. */
    private GraphNode open(Options o, NodeOptions parent, boolean monitorOwned, List<GraphNode> opened,
                           Set<Path> chain, String generatedName) {
        String driverName = o.string("driver");
        String name = generatedName != null ? generatedName : o.optString("node-name");
        if (generatedName != null) {
            o.ignore("node-name");
        } else if (name == null) {
            if (monitorOwned) {
                throw o.missing("node-name"); // QEMU: blockdev-add needs a node-name
            }
            name = generateName();
        } else {
            checkNewName(name);
        }
        BlockDriver driver = JOB_FILTERS.contains(driverName) ? null : drivers.get(driverName);
        if (driver == null) {
            throw new CommandException("Parameter '" + o.prefix() + "driver' does not accept value '" + driverName + "'");
        }
        parseFilename(driverName, o);
        NodeOptions nodeOptions = NodeOptions.read(o, parent);
        GraphNode node = new GraphNode(name, driverName, monitorOwned, nodeOptions);
        node.setExplicitOptions(o.json().deepCopy());
        nodes.put(name, node);
        Opening ctx = new Opening(node, o, opened, chain);
        DriverNode driverNode = null;
        try {
            driverNode = driver.open(ctx);
            o.checkAllUsed();
        } catch (IOException e) {
            ctx.abandon(null);
            throw new CommandException(message(e));
        } catch (RuntimeException e) {
            closeQuietly(driverNode); // opened, then refused for a member nobody read
            ctx.abandon(null);
            throw e;
        }
        node.attachDriver(driverNode);
        if (driverName.equals("copy-on-read")) {
            writesUnchanged.add(node);
        }
        opened.add(node); // after its children: closing in reverse closes parents first
        for (NodeListener l : listeners) {
            l.opened(node); // a failure closes what was opened, this node too
        }
        return node;
    }

    /**
     * QEMU's {@code bdrv_parse_filename}: a {@code filename} that stands for other options
     * ({@code blkdebug:CONFIG:IMAGE}, {@code null-co://}) is replaced by them before the driver
     * opens the node.
     */
    private static void parseFilename(String driverName, Options o) {
        JsonNode f = o.json().get("filename");
        if (f == null || !f.isString()) {
            return;
        }
        Set<String> given = new HashSet<>(o.json().propertyNames());
        Map<String, Object> parsed = ImageDrivers.parseFilename(driverName, f.asString(), given);
        if (parsed != null) {
            o.json().remove("filename");
            put(o.json(), parsed);
        }
    }

    @SuppressWarnings("unchecked")
    private static void put(ObjectNode target, Map<String, Object> members) {
        members.forEach((k, v) -> {
            if (v instanceof Map<?, ?> m) {
                put(target.putObject(k), (Map<String, Object>) m);
            } else if (v instanceof List<?> l) {
                tools.jackson.databind.node.ArrayNode a = target.putArray(k); // strings: an rbd: name's settings
                l.forEach(x -> a.add(String.valueOf(x)));
            } else {
                target.put(k, String.valueOf(v));
            }
        });
    }

    /** What a driver sees while it opens one node. */
    private final class Opening implements DriverContext {
        private final GraphNode node;
        private final Options options;
        private final List<GraphNode> opened;
        private final Set<Path> chain;
        private final List<Edge> attached = new ArrayList<>();

        Opening(GraphNode node, Options options, List<GraphNode> opened, Set<Path> chain) {
            this.node = node;
            this.options = options;
            this.opened = opened;
            this.chain = chain;
        }

        @Override
        public String nodeName() {
            return node.name();
        }

        @Override
        public DriverOptions options() {
            return options;
        }

        @Override
        public boolean readOnly() {
            return node.options().readOnly();
        }

        @Override
        public OpenFlags flags() {
            NodeOptions n = node.options();
            return new OpenFlags(n.readOnly(), n.autoReadOnly(), n.forceShare(), n.cacheDirect());
        }

        @Override
        public BlockNode child(String key, ChildRole role) {
            JsonNode ref = options.raw(key);
            if (ref == null || ref.isNull()) {
                throw options.missing(key);
            }
            return attach(key, role, ref(ref, key));
        }

        @Override
        public List<BlockNode> children(String key, ChildRole role) {
            JsonNode list = options.raw(key);
            if (list == null || list.isNull()) {
                throw options.missing(key);
            }
            if (!list.isArray()) {
                throw options.type(key, "array");
            }
            List<BlockNode> out = new ArrayList<>();
            for (int i = 0; i < list.size(); i++) {
                String name = key + "." + i;
                out.add(attach(name, role, ref(list.get(i), name)));
            }
            return out;
        }

        @Override
        public io.blockjobs.sdk.driver.DriverEvents events() {
            return driverEvents;
        }

        @Override
        public io.blockjobs.sdk.driver.GraphQuery graph() {
            return query;
        }

        @Override
        public Optional<BlockNode> optionalChild(String key, ChildRole role) {
            JsonNode ref = options.raw(key);
            if (ref == null || ref.isNull()) {
                return Optional.empty();
            }
            return Optional.of(attach(key, role, ref(ref, key)));
        }

        @Override
        public Optional<BlockNode> backing(String recordedName, String recordedFormat) {
            JsonNode ref = options.raw("backing");
            if (ref != null) {
                if (ref.isNull()) {
                    return Optional.empty(); // backing: null: the header's name is not followed
                }
                return Optional.of(attach("backing", ChildRole.COW, ref(ref, "backing")));
            }
            if (recordedName == null) {
                return Optional.empty();
            }
            Edge file = node.child("file");
            Path overlay = Path.of(file != null ? file.filename() : node.name());
            if (JsonFilename.is(recordedName)) { // QEMU's json: name: a node tree, opened as blockdev-add opens one
                ObjectNode spec = JsonFilename.options(recordedName);
                if (!spec.has("read-only")) {
                    spec.put("read-only", true); // a backing file, as QEMU opens it
                }
                Set<Path> below = chain(overlay);
                JsonNode target = spec.path("file").isObject() ? spec.path("file").path("filename") : spec.path("filename");
                if (target.isString()) {
                    try {
                        if (below.contains(Path.of(target.asString()).toRealPath())) {
                            throw new CommandException(overlay + ": could not open backing file '" + recordedName
                                    + "': backing chain loops: this image is already part of it");
                        }
                    } catch (IOException e) {
                        // not there: the open below says so in its own words
                    }
                }
                try {
                    return Optional.of(attach("backing", ChildRole.COW, open(new Options(spec, options.prefix() + "backing."),
                            NodeOptions.inherited(node.options(), true), false, opened, below)));
                } catch (CommandException e) {
                    throw new CommandException(overlay + ": could not open backing file '" + recordedName + "': "
                            + e.getMessage());
                }
            }
            if (recordedName.startsWith("rbd:")) { // an RBD image: the rbd driver parses the name
                ObjectNode rbd = JsonNodeFactory.instance.objectNode().put("driver", "rbd").put("filename", recordedName);
                try {
                    return Optional.of(attach("backing", ChildRole.COW, openOver(rbd, recordedFormat,
                            NodeOptions.inherited(node.options(), true), opened, chain(overlay))));
                } catch (IOException | CommandException e) {
                    throw new CommandException(overlay + ": could not open backing file '" + recordedName + "': "
                            + message(e));
                }
            }
            try {
                Path path = Images.resolveBacking(overlay, recordedName);
                GraphNode backing = openImage(path, recordedFormat, NodeOptions.inherited(node.options(), true),
                        opened, chain(overlay));
                return Optional.of(attach("backing", ChildRole.COW, backing));
            } catch (IOException e) {
                throw new CommandException(overlay + ": could not open backing file '" + recordedName + "': "
                        + message(e));
            }
        }

        private Set<Path> chain(Path overlay) {
            try {
                chain.add(overlay.toRealPath());
            } catch (IOException e) {
                // not a local file: nothing to loop on
            }
            return chain;
        }

        @Override
        public <T> T object(String id, Class<T> type) {
            Object o = objects.get(id);
            if (!type.isInstance(o)) {
                throw new CommandException("No " + objectTypeName(type) + " object with id '" + id + "'");
            }
            return type.cast(o);
        }

        private GraphNode ref(JsonNode ref, String key) {
            if (ref.isString()) {
                return lookup(ref.asString(), ref.asString());
            }
            if (ref.isObject()) {
                return open(new Options(ref, options.prefix() + key + "."), node.options(), false, opened, chain);
            }
            throw new CommandException("Invalid parameter type for '" + options.prefix() + key
                    + "', expected: string or object");
        }

        /**
         * Attaches a child and checks permissions at once, as QEMU's {@code bdrv_open_child}
         * does: a conflict is reported before the driver goes on (to a backing file named in
         * the header, say, whose lock would fail first).
         */
        private Edge attach(String key, ChildRole role, GraphNode child) {
            Edge e = new Edge(node, key, role, child);
            node.children.add(e);
            child.parents.add(0, e);
            attached.add(e);
            refreshPermissions();
            return e;
        }

        /** A failed open: the node goes, its edges to children that stay go with it. */
        void abandon(Throwable cause) {
            for (Edge e : attached) {
                e.child().parents.remove(e);
            }
            node.children.clear();
            nodes.remove(node.name());
        }
    }

    /**
     * Opens an image file as QEMU opens a backing file named in a header: a {@code file} node and
     * a format node over it (probed if {@code format} is null), with generated names.
     */
    private GraphNode openImage(Path path, String format, NodeOptions options, List<GraphNode> opened, Set<Path> chain)
            throws IOException {
        Path real;
        try {
            real = path.toRealPath();
        } catch (NoSuchFileException e) {
            throw new ImageException(path.toString(), "no such file");
        }
        if (chain.contains(real)) {
            throw new ImageException(path.toString(), "backing chain loops: this image is already part of it");
        }
        ObjectNode fileOptions = JsonNodeFactory.instance.objectNode().put("driver", "file").put("filename", path.toString());
        Set<Path> below = new HashSet<>(chain);
        below.add(real);
        return openOver(fileOptions, format, options, opened, below);
    }

    /** A protocol node of {@code fileOptions} and a format node over it (probed if {@code format} is null). */
    private GraphNode openOver(ObjectNode fileOptions, String format, NodeOptions options, List<GraphNode> opened,
                               Set<Path> below) throws IOException {
        GraphNode file = open(new Options(fileOptions, "file."), options, false, opened, below);
        String fmt = format != null ? format : Images.probe(file);
        ObjectNode formatOptions = JsonNodeFactory.instance.objectNode().put("driver", fmt).put("file", file.name());
        return open(new Options(formatOptions, ""), options, false, opened, below);
    }

    /** The node with this name, or QEMU's error for a node name ({@code bdrv_lookup_bs(NULL, name)}). */
    public synchronized GraphNode require(String name) {
        return lookup(null, name);
    }

    /**
     * QEMU's {@code bdrv_lookup_bs(device, nodeName)}: the node named {@code device} or
     * {@code nodeName} (either may be null; blockjobs' devices are node names), or QEMU's
     * {@code GenericError} "Cannot find device='D' nor node-name='N'" with both as given. QEMU's
     * commands that take one name for both, as {@code blockdev-snapshot} and block references
     * do, pass it twice.
     */
    public synchronized GraphNode lookup(String device, String nodeName) {
        GraphNode n = device == null ? null : nodes.get(device);
        if (n == null && nodeName != null) {
            n = nodes.get(nodeName);
        }
        if (n == null) {
            throw new CommandException(ErrorClass.GENERIC_ERROR, "Cannot find device='" + (device == null ? "" : device)
                    + "' nor node-name='" + (nodeName == null ? "" : nodeName) + "'");
        }
        return n;
    }

    public synchronized GraphNode find(String name) {
        return nodes.get(name);
    }

    public synchronized List<GraphNode> all() {
        return new ArrayList<>(nodes.values());
    }

    /**
     * Every node in the order QEMU creates nodes, as its node lists show them: a node after the
     * children it opens first ({@code file} and the like), before the backing file it opens after.
     */
    public synchronized List<GraphNode> inCreationOrder() {
        java.util.LinkedHashSet<GraphNode> out = new java.util.LinkedHashSet<>();
        for (GraphNode n : nodes.values()) {
            addInCreationOrder(n, out);
        }
        return new ArrayList<>(out);
    }

    private static void addInCreationOrder(GraphNode n, java.util.Set<GraphNode> out) {
        if (out.contains(n)) {
            return;
        }
        for (Edge e : n.children) {
            if (!e.name().equals("backing")) {
                addInCreationOrder(e.child(), out);
            }
        }
        out.add(n);
    }

    /** The graph's answers to drivers' questions, under its lock. */
    private final io.blockjobs.sdk.driver.GraphQuery query = new io.blockjobs.sdk.driver.GraphQuery() {
        @Override
        public String lookup(String name) {
            synchronized (BlockGraph.this) {
                GraphNode n = nodes.get(name);
                return n == null ? null : n.name();
            }
        }

        @Override
        public boolean isRoot(String nodeName) {
            synchronized (BlockGraph.this) {
                GraphNode n = nodes.get(nodeName);
                return n != null && n.parents().stream().allMatch(BlockGraph.this::isBackend);
            }
        }

        @Override
        public boolean reaches(String top, String nodeName) {
            synchronized (BlockGraph.this) {
                GraphNode t = nodes.get(top);
                return t != null && reaches(t, nodeName);
            }
        }

        private boolean reaches(GraphNode n, String nodeName) {
            if (n.name().equals(nodeName)) {
                return true;
            }
            for (Edge e : n.children()) {
                if (reaches(e.child(), nodeName)) {
                    return true;
                }
            }
            return false;
        }

        @Override
        public boolean hasUser(String nodeName) {
            synchronized (BlockGraph.this) {
                GraphNode n = nodes.get(nodeName);
                return n != null && n.parents().stream().anyMatch(BlockGraph.this::isBackend);
            }
        }
    };

    /**
     * Whether an edge is a BlockBackend's, QEMU's {@code child_root}: an export's, or a job's own
     * (its {@code root} role); not the edges a job holds on the nodes it works on ({@code main
     * node}, {@code target}, {@code intermediate node}: QEMU's {@code child_job}), nor a node's.
     */
    private boolean isBackend(Edge e) {
        RootUser user = e.isRoot() ? rootUsers.get(e) : null;
        return user != null && user.kind().equals("block-backend");
    }

    /** Root edges (exports', jobs'), oldest first. */
    public synchronized List<Edge> roots() {
        return new ArrayList<>(roots);
    }

    /** Who holds a root edge. */
    public synchronized RootUser rootUser(Edge root) {
        return rootUsers.get(root);
    }

    // ---- objects -----------------------------------------------------------------------------------

    /** Adds a user-created object ({@code --object}, {@code object-add}). */
    public synchronized void addObject(String id, Object object) {
        if (objects.containsKey(id)) {
            throw new CommandException("attempt to add duplicate property '" + id + "' to object (type 'container')");
        }
        objects.put(id, object);
    }

    /** Removes an object; {@code inUse} says whether a node still uses it. */
    public synchronized Object removeObject(String id) {
        Object o = objects.get(id);
        if (o == null) {
            throw new CommandException("object '" + id + "' not found");
        }
        objects.remove(id);
        return o;
    }

    public synchronized Object object(String id) {
        return objects.get(id);
    }

    public synchronized Map<String, Object> objects() {
        return new LinkedHashMap<>(objects);
    }

    private static String objectTypeName(Class<?> type) {
        return type.getSimpleName().replaceAll("([a-z])([A-Z])", "$1-$2").toLowerCase(java.util.Locale.ROOT);
    }

    // ---- deleting ------------------------------------------------------------------------------------

    /**
     * QMP {@code blockdev-del}, with QEMU's checks in QEMU's order: a user such as an export
     * ("Node x is in use"), an op blocker (a job, or a parent using the node as its backing
     * file), ownership, then any other parent ("Block device x is in use").
     *
     * @param blocker the op blocker's message for a node name, or null (jobs' claims)
     */
    public synchronized void delete(String name, java.util.function.Function<String, String> blocker) {
        GraphNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException("Failed to find node with node-name='" + name + "'");
        }
        for (Edge e : n.parents) {
            if (e.isRoot() && e.name().equals("root")) {
                throw new CommandException("Node " + name + " is in use");
            }
        }
        String blocked = blocker.apply(name);
        if (blocked != null) {
            throw new CommandException(blocked);
        }
        for (Edge e : n.parents) {
            if (!e.isRoot() && e.name().equals("backing")) {
                throw new CommandException("Node '" + name + "' is busy: node is used as backing hd of '"
                        + e.parent().name() + "'");
            }
        }
        if (!n.monitorOwned()) {
            throw new CommandException("Node " + name + " is not owned by the monitor");
        }
        if (!n.parents.isEmpty()) {
            throw new CommandException("Block device " + name + " is in use");
        }
        release(n);
    }

    private void release(GraphNode n) {
        nodes.remove(n.name());
        neverFreeze.remove(n);
        writesUnchanged.remove(n);
        closing(n);
        n.markClosed();
        try {
            n.driverNode().close();
        } catch (IOException e) {
            LOG.warn("closing node {}: {}", n.name(), e.getMessage());
        }
        for (Edge e : n.children) {
            GraphNode child = e.child();
            child.parents.remove(e);
            frozenBy.remove(e);
            if (!child.monitorOwned() && nodes.get(child.name()) == child && child.parents.isEmpty()) {
                release(child);
            }
        }
        n.children.clear();
    }

    /** Closes every node that lost its last parent and belongs to no one (after chain edits). */
    public synchronized void releaseUnused() {
        boolean again = true;
        while (again) {
            again = false;
            for (GraphNode n : new ArrayList<>(nodes.values())) {
                if (!n.monitorOwned() && n.parents.isEmpty()) {
                    release(n);
                    again = true;
                }
            }
        }
    }

    // ---- run-time child changes ------------------------------------------------------------------------

    /**
     * QEMU's {@code bdrv_add_child}: {@code child} becomes a new child of {@code parent}, if the
     * parent's driver can take one ({@link io.blockjobs.sdk.driver.ChildChanges}) and the child
     * has no parent yet (an export or a job counts as one, as QEMU's BlockBackends do).
     */
    public synchronized void addChild(GraphNode parent, GraphNode child) {
        io.blockjobs.sdk.driver.ChildChanges changes = parent.driverNode().childChanges().orElseThrow(
                () -> new CommandException("The node " + parent.name() + " does not support adding a child"));
        if (!child.parents.isEmpty()) {
            throw new CommandException("The node " + child.name() + " already has a parent");
        }
        if (child.subtree().contains(parent)) {
            throw new CommandException("Making '" + child.name() + "' a child of '" + parent.name()
                    + "' would create a cycle");
        }
        try (Drained drained = drain(parent)) {
            changes.add(new io.blockjobs.sdk.driver.ChildChanges.Attacher() {
                @Override
                public String nodeName() {
                    return child.name();
                }

                @Override
                public BlockNode attach(String name, ChildRole role) {
                    if (parent.child(name) != null) {
                        throw new CommandException("Node '" + parent.name() + "' already has a child '" + name + "'");
                    }
                    Edge e = new Edge(parent, name, role, child);
                    parent.children.add(e);
                    child.parents.add(0, e);
                    try {
                        refreshPermissions();
                    } catch (RuntimeException ex) {
                        parent.children.remove(e);
                        child.parents.remove(e);
                        refreshPermissionsQuietly();
                        throw ex;
                    }
                    return e;
                }
            });
        }
    }

    /**
     * QEMU's {@code bdrv_del_child}: the parent's driver lets its child {@code childName} go
     * ({@link io.blockjobs.sdk.driver.ChildChanges#remove}), then the edge goes, and the child
     * closes if it was opened inline (nothing else owns it).
     */
    public synchronized void removeChild(GraphNode parent, String childName) {
        io.blockjobs.sdk.driver.ChildChanges changes = parent.driverNode().childChanges().orElseThrow(
                () -> new CommandException("The node " + parent.name() + " does not support removing a child"));
        Edge e = parent.child(childName);
        if (e == null) {
            throw new CommandException("The node " + parent.name() + " does not have a child named " + childName);
        }
        try (Drained drained = drain(parent)) {
            changes.remove(childName);
            parent.children.remove(e);
            GraphNode child = e.child();
            child.parents.remove(e);
            frozenBy.remove(e);
            if (!child.monitorOwned() && nodes.get(child.name()) == child && child.parents.isEmpty()) {
                release(child);
            }
        }
        refreshPermissionsQuietly();
    }

    // ---- root edges ----------------------------------------------------------------------------------

    /**
     * Attaches a user (an export, a job) to a node: a root edge taking {@code perm} and sharing
     * {@code shared}, refused with QEMU's message if it conflicts with the node's other users.
     *
     * @param waitsOnDrain whether the user's requests wait while a drain covers the node (an
     *                     export's do; a job's own never do)
     */
    public synchronized Edge attachRoot(RootUser user, String edgeName, GraphNode node, int perm, int shared,
                                        boolean waitsOnDrain) {
        Edge e = new Edge(user.description(), edgeName, node, perm, shared, waitsOnDrain);
        rootUsers.put(e, user);
        roots.add(e);
        node.parents.add(0, e);
        try {
            refreshPermissions();
        } catch (RuntimeException ex) {
            detach(e);
            refreshPermissionsQuietly(); // the other edges' permissions as they were
            throw ex;
        }
        joinDrains(e);
        return e;
    }

    /** Detaches a root edge. */
    public synchronized void detachRoot(Edge e) {
        detach(e);
        refreshPermissionsQuietly();
    }

    private void detach(Edge e) {
        roots.remove(e);
        rootUsers.remove(e);
        frozenBy.remove(e);
        e.child().parents.remove(e);
    }

    /** Changes what a root edge takes and shares, refused (and left as it was) on a conflict. */
    public synchronized void setRootPermissions(Edge e, int perm, int shared) {
        int oldPerm = e.perm();
        int oldShared = e.shared();
        e.setPermissions(perm, shared);
        try {
            refreshPermissions();
        } catch (RuntimeException ex) {
            e.setPermissions(oldPerm, oldShared);
            refreshPermissionsQuietly();
            throw ex;
        }
    }

    // ---- reopen ----------------------------------------------------------------------------------------

    /**
     * QMP {@code blockdev-reopen}: reopens the nodes {@code options} lists (QEMU's
     * {@code BlockdevOptions}, each naming an existing node) with those options, all or none
     * (see {@link Reopen}).
     */
    public synchronized void reopen(JsonNode options) {
        new Reopen(this).run(options);
    }

    /**
     * Reopens a node read-only, its options and children otherwise as they are (QEMU's
     * {@code bdrv_reopen_set_read_only}); refused with QEMU's message if a user writes to it.
     */
    public synchronized void reopenReadOnly(GraphNode n) {
        new Reopen(this).setReadOnly(n, true);
    }

    /**
     * Makes a node writable (QEMU's reopen, as commit does with its base): its file and filtered
     * children first, then the node.
     */
    public synchronized void reopenReadWrite(GraphNode n) throws IOException {
        if (!n.isReadOnly()) {
            return;
        }
        for (Edge e : n.children) {
            if (e.role() == ChildRole.STORAGE || e.role() == ChildRole.FILTERED || e.role() == ChildRole.DATA) {
                reopenReadWrite(e.child());
            }
        }
        n.driverNode().reopenReadWrite();
        n.setReadOnly(false);
        refreshPermissionsQuietly();
        for (NodeListener l : listeners) {
            l.reopenedReadWrite(n);
        }
    }

    // ---- snapshots -------------------------------------------------------------------------------------

    /**
     * QMP {@code blockdev-snapshot}: {@code overlay} (no backing yet, unused) goes on top of
     * {@code node}; everything that used {@code node} now uses {@code overlay}.
     */
    public synchronized Undo snapshot(String nodeName, String overlayName) {
        GraphNode node = lookup(nodeName, nodeName);
        GraphNode overlay = lookup(overlayName, overlayName);
        for (GraphNode n = node; n != null; n = n.chainNext()) {
            if (n == overlay) {
                throw new CommandException("The overlay '" + overlayName + "' is part of the backing chain of '"
                        + nodeName + "'; choose a new, unused node as the overlay");
            }
        }
        if (!overlay.driverNode().supportsBacking()) {
            throw new CommandException("The overlay does not support backing images");
        }
        if (overlay.backingNode() != null) {
            throw new CommandException("The overlay already has a backing image");
        }
        if (!overlay.parents.isEmpty()) {
            throw new CommandException("The overlay is already in use");
        }
        if (overlay.isReadOnly()) {
            throw new CommandException("The overlay is read-only");
        }
        return append(node, overlay);
    }

    /** Puts {@code overlay} above {@code node}: its parents move up, then the backing link. */
    private Undo append(GraphNode node, GraphNode overlay) {
        for (Edge e : node.parents) {
            if (frozen(e)) {
                throw new CommandException("Cannot change frozen '" + e.name() + "' link from '"
                        + e.parent().name() + "' to '" + node.name() + "'");
            }
        }
        List<Edge> moved = new ArrayList<>();
        for (Edge e : node.parents) {
            if (!e.staysAtNode()) {
                moved.add(e);
            }
        }
        Edge backing = new Edge(overlay, "backing", ChildRole.COW, node);
        try (AutoCloseable drained = drain(node)) {
            moveParents(moved, node, overlay);
            overlay.children.add(backing);
            node.parents.add(0, backing);
            overlay.driverNode().setBacking(backing);
            refreshPermissions();
        } catch (RuntimeException e) {
            unappend(node, overlay, backing, moved);
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        return () -> {
            synchronized (BlockGraph.this) {
                try (AutoCloseable drained = drain(overlay)) {
                    unappend(node, overlay, backing, moved);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }
        };
    }

    private void unappend(GraphNode node, GraphNode overlay, Edge backing, List<Edge> moved) {
        overlay.driverNode().setBacking(null);
        overlay.children.remove(backing);
        node.parents.remove(backing);
        moveParents(moved, overlay, node);
        refreshPermissionsQuietly();
    }

    /**
     * QMP {@code blockdev-snapshot-sync}: creates a qcow2 overlay file whose backing file is the
     * node's image, opens it and puts it on top.
     */
    public synchronized Undo snapshotSync(String nodeName, String snapshotFile, String snapshotNodeName,
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
                GraphNode image = node.skipFilters();
                Images.createQcow2(file, io.blockjobs.platform.image.Qcow2CreateOptions.of(node.size())
                        .withBacking(Path.of(image.filename()).toAbsolutePath().toString(), image.driver()));
            } else if (!java.nio.file.Files.exists(file)) {
                throw new CommandException("Could not open '" + snapshotFile + "': No such file or directory");
            }
        } catch (IOException e) {
            throw new CommandException("Could not create '" + snapshotFile + "': " + message(e));
        }
        ObjectNode o = JsonNodeFactory.instance.objectNode().put("driver", "qcow2");
        if (snapshotNodeName != null) {
            o.put("node-name", snapshotNodeName);
        }
        o.putObject("file").put("driver", "file").put("filename", snapshotFile);
        o.putNull("backing");
        List<GraphNode> opened = new ArrayList<>();
        try {
            GraphNode overlay = open(new Options(o, ""), NodeOptions.inherited(node.options(), false), false, opened,
                    new HashSet<>());
            Undo unappend = append(node, overlay);
            releaseUnused(); // an overlay over a node nobody uses goes at once, as in QEMU
            return () -> {
                synchronized (BlockGraph.this) {
                    if (nodes.get(overlay.name()) == overlay) {
                        unappend.undo();
                        releaseUnused();
                    }
                }
            };
        } catch (RuntimeException e) {
            closeAll(opened);
            throw e;
        }
    }

    // ---- chain edits (jobs) -------------------------------------------------------------------------------

    /** Undoes one graph edit of a job, if its transaction aborts. */
    @FunctionalInterface
    public interface Undo {
        void undo();
    }

    /**
     * Makes {@code backingName} (or nothing) the backing of {@code overlayName}: the overlay's
     * header first, durably; then the graph. Layers nobody uses any more stay open until
     * {@link #releaseUnused()}, so the edit can be undone.
     *
     * @param owner the job doing the edit: links it froze itself may change
     */
    public synchronized Undo setBacking(Object owner, String overlayName, String backingName, String backingFile,
                                        boolean maskProtocol) {
        GraphNode overlay = require(overlayName);
        GraphNode backing = backingName == null ? null : require(backingName);
        DriverNode driver = overlay.driverNode();
        if (!driver.supportsBacking()) {
            throw new CommandException("'" + overlayName + "' (" + overlay.driver() + ") cannot have a backing file");
        }
        Edge edge = overlay.child("backing");
        GraphNode old = edge == null ? null : edge.child();
        if (edge != null && frozenByOthers(edge, owner)) {
            throw new CommandException("Cannot change frozen 'backing' link from '" + overlayName + "' to '"
                    + old.name() + "'");
        }
        String oldName = headerName(old);
        String oldFormat = headerFormat(old, false);
        String name = backing == null ? null : backingFile != null ? backingFile : headerName(backing);
        String format = headerFormat(backing, maskProtocol);
        try {
            driver.changeBackingFile(name, format);
        } catch (IOException e) {
            throw new CommandException("could not change the backing file of '" + overlayName + "': " + e.getMessage());
        }
        relinkBacking(overlay, backing);
        refreshPermissionsQuietly();
        return () -> {
            synchronized (BlockGraph.this) {
                try {
                    driver.changeBackingFile(oldName, oldFormat);
                } catch (IOException e) {
                    LOG.warn("could not restore the backing file of {}: {}", overlayName, e.getMessage());
                }
                relinkBacking(overlay, old);
                refreshPermissionsQuietly();
            }
        };
    }

    /**
     * QEMU's {@code bdrv_open_backing_file} for a node opened without its backing (drive-mirror's
     * {@code mode: existing} target at the switch-over): opens the backing file its header names
     * as a backing file (read-only, with generated names and its own chain) and attaches it; the
     * header stays as it is. Nothing happens if the node has a backing or its header names none.
     *
     * @throws CommandException with the reason if the file cannot be opened (a lock, say)
     */
    public synchronized Undo openBacking(String overlayName) {
        GraphNode overlay = require(overlayName);
        if (overlay.backingNode() != null || !(overlay.driverNode() instanceof io.blockjobs.platform.image.Qcow2Node q)
                || q.backingFileName() == null) {
            return () -> { };
        }
        Edge file = overlay.child("file");
        Path own = Path.of(file != null ? file.filename() : overlay.name());
        List<GraphNode> opened = new ArrayList<>();
        GraphNode backing;
        try {
            if (JsonFilename.is(q.backingFileName())) {
                throw new CommandException("blockjobd cannot open the json: backing file name '" + q.backingFileName()
                        + "' of an open node");
            }
            Set<Path> chain = new HashSet<>();
            chain.add(own.toRealPath());
            backing = openImage(Images.resolveBacking(own, q.backingFileName()), q.backingFormat(),
                    NodeOptions.inherited(overlay.options(), true), opened, chain);
        } catch (IOException | RuntimeException e) {
            closeAll(opened);
            throw e instanceof CommandException c ? c : new CommandException(message(e));
        }
        try {
            relinkBacking(overlay, backing);
        } catch (RuntimeException e) { // not linked: what was opened for it goes again
            closeAll(opened);
            throw e;
        }
        refreshPermissionsQuietly();
        return () -> {
            synchronized (BlockGraph.this) {
                relinkBacking(overlay, null);
                closeAll(opened);
            }
        };
    }

    void relinkBacking(GraphNode overlay, GraphNode backing) {
        Edge edge = overlay.child("backing");
        try (AutoCloseable drained = drain(overlay)) {
            if (backing == null) {
                if (edge != null) {
                    overlay.driverNode().setBacking(null);
                    overlay.children.remove(edge);
                    edge.child().parents.remove(edge);
                    frozenBy.remove(edge);
                }
            } else if (edge == null) {
                Edge e = new Edge(overlay, "backing", ChildRole.COW, backing);
                overlay.children.add(e);
                backing.parents.add(0, e);
                overlay.driverNode().setBacking(e);
            } else if (edge.child() != backing) {
                edge.child().parents.remove(edge);
                edge.setChild(backing);
                backing.parents.add(0, edge);
            }
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** The name a header records for a backing node: its image's file name. */
    private static String headerName(GraphNode n) {
        return n == null ? null : n.skipFilters().filename();
    }

    /** The format a header records: the image's driver; a protocol driver is masked as raw if asked. */
    private static String headerFormat(GraphNode n, boolean maskProtocol) {
        if (n == null) {
            return null;
        }
        GraphNode image = n.skipFilters();
        boolean protocol = image.file() == null && image.children.isEmpty();
        return maskProtocol && protocol ? "raw" : image.driver();
    }

    /** Moves every user of {@code from} (its parents, roots included) to {@code to}: a switch-over. */
    public synchronized Undo replaceUsers(String from, String to, Set<Edge> keep) {
        GraphNode f = require(from);
        GraphNode t = require(to);
        List<Edge> moved = new ArrayList<>();
        for (Edge e : f.parents) {
            if (!keep.contains(e) && e.parent() != t) {
                moved.add(e);
            }
        }
        try (AutoCloseable drained = drain(f)) {
            moveParents(moved, f, t);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        refreshPermissionsQuietly();
        return () -> {
            synchronized (BlockGraph.this) {
                moveParents(moved, t, f);
                refreshPermissionsQuietly();
            }
        };
    }

    static void moveParents(List<Edge> edges, GraphNode from, GraphNode to) {
        for (Edge e : edges) {
            from.parents.remove(e);
            e.setChild(to);
            to.parents.add(0, e);
        }
    }

    /**
     * Puts a filter node above {@code nodeName}: a registered filter driver opened with
     * {@code options} (and {@code file} set to the node), or a job filter that only forwards.
     * Every parent of the node except {@code keep} moves to the filter; {@code hooks} run around
     * every write through it.
     */
    public synchronized GraphNode insertFilter(String nodeName, String driver, String filterName,
                                               Map<String, Object> options, List<WriteHook> hooks, Set<Edge> keep,
                                               boolean mayFreeze) {
        GraphNode node = require(nodeName);
        String name = filterName != null ? filterName : generateName();
        if (filterName != null) {
            checkNewName(filterName);
        }
        GraphNode filter;
        List<GraphNode> opened = new ArrayList<>();
        if (JOB_FILTERS.contains(driver)) {
            // QEMU opens commit_top read-only (its parent never writes through it); the others read-write.
            boolean readOnly = node.isReadOnly() || driver.equals("commit_top");
            filter = new GraphNode(name, driver, false, NodeOptions.inherited(node.options(), readOnly));
            String childName = "backing";
            Edge e = new Edge(filter, childName, ChildRole.FILTERED, node);
            filter.children.add(e);
            node.parents.add(0, e);
            filter.attachDriver(new ForwardingFilter(driver, childName, e));
            nodes.put(name, filter);
            opened.add(filter);
        } else {
            ObjectNode o = io.blockjobs.platform.Json.MAPPER.valueToTree(options);
            o.put("driver", driver).put("file", nodeName);
            if (filterName != null) {
                o.put("node-name", filterName);
            }
            filter = open(new Options(o, ""), NodeOptions.inherited(node.options(), node.isReadOnly()), false, opened,
                    new HashSet<>(), filterName == null ? name : null);
            if (!filter.isFilter()) {
                closeAll(opened);
                throw new CommandException("'" + driver + "' is not a filter driver");
            }
        }
        hooks.forEach(filter::addHook);
        if (!mayFreeze) {
            neverFreeze.add(filter);
        }
        Edge own = filter.filteredEdge();
        List<Edge> moved = new ArrayList<>();
        List<GraphNode> below = filter.subtree();
        for (Edge e : node.parents) {
            // As QEMU's should_update_child: a parent the filter reaches (copy-before-write's
            // target, backed by the node, for fleecing) stays where it is, or the graph would loop.
            if (e != own && !keep.contains(e) && !e.staysAtNode() && !below.contains(e.parent())) {
                moved.add(e);
            }
        }
        try (AutoCloseable drained = drain(node)) {
            moveParents(moved, node, filter);
            refreshPermissions();
        } catch (RuntimeException e) {
            moveParents(moved, filter, node);
            closeAll(opened);
            refreshPermissionsQuietly();
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        return filter;
    }

    /** Removes a filter node; its users go to the node beneath. Nothing happens if it is gone. */
    public synchronized void removeFilter(String filterName) {
        GraphNode f = nodes.get(filterName);
        if (f == null || !f.isFilter()) {
            return;
        }
        GraphNode below = f.filteredEdge().child();
        try (AutoCloseable drained = drain(f)) {
            moveParents(new ArrayList<>(f.parents), f, below);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        release(f);
        refreshPermissionsQuietly();
    }

    // ---- drain -----------------------------------------------------------------------------------------------

    /**
     * Begins a drain of {@code node}: users that reach it from above (exports), and those
     * attached while the drain lasts, hold new requests and the requests in flight end; jobs' own
     * requests go on. Close the handle on any thread to end it (once); drains nest.
     */
    public Drained drain(GraphNode node) {
        Drain d = new Drain(node);
        List<Edge.Gate> gates;
        synchronized (this) {
            synchronized (drains) {
                for (Edge r : roots) {
                    if (r.gate() != null && r.child().subtree().contains(node)) {
                        d.gates.add(r.gate());
                    }
                }
                d.gates.forEach(Edge.Gate::close);
                gates = List.copyOf(d.gates);
                drains.add(d);
            }
        }
        gates.forEach(Edge.Gate::awaitIdle);
        return d;
    }

    /** A drained section in progress; ending it cannot fail, so callers need no checked exception. */
    public interface Drained extends AutoCloseable {
        @Override
        void close();
    }

    /**
     * One drain in progress: the gates it closed, and those of exports attached since (QEMU
     * quiesces a user attached to a drained node). Its own lock, not the graph's: the thread
     * that ends it may not be the main loop.
     */
    private final class Drain implements Drained {
        final GraphNode node;
        final List<Edge.Gate> gates = new ArrayList<>();
        boolean ended;

        Drain(GraphNode node) {
            this.node = node;
        }

        @Override
        public void close() {
            List<Edge.Gate> opened;
            synchronized (drains) {
                if (ended) {
                    return; // once
                }
                ended = true;
                drains.remove(this);
                opened = List.copyOf(gates);
            }
            opened.forEach(Edge.Gate::open);
        }
    }

    /** Holds a new root edge's requests off if a drain in progress covers its node. */
    private void joinDrains(Edge root) {
        if (root.gate() == null) {
            return;
        }
        synchronized (drains) {
            List<GraphNode> below = null;
            for (Drain d : drains) {
                if (below == null) {
                    below = root.child().subtree();
                }
                if (below.contains(d.node)) {
                    root.gate().close();
                    d.gates.add(root.gate());
                }
            }
        }
    }

    // ---- frozen backing links ------------------------------------------------------------------------------

    /**
     * Freezes the links from {@code top} down to {@code base} (exclusive; null: to the end), as
     * QEMU's {@code bdrv_freeze_backing_chain}: refused if a link is frozen already, or leads to a
     * node that may never be frozen (a commit's filter). Returns the handle that unfreezes.
     */
    public synchronized AutoCloseable freeze(Object owner, String topName, String baseName) {
        GraphNode top = require(topName);
        GraphNode base = baseName == null ? null : require(baseName);
        List<Edge> links = new ArrayList<>();
        for (GraphNode i = top; i != null && i != base; ) {
            Edge link = i.filteredEdge() != null ? i.filteredEdge() : i.child("backing");
            if (link == null) {
                break;
            }
            // No link may lead to a never-freeze node (a commit's filter), as QEMU's check: a stream
            // may still end on one, since it freezes the links down to its last copied layer only.
            if (neverFreeze.contains(link.child())) {
                throw new CommandException("Cannot freeze '" + link.name() + "' link to '" + link.child().name() + "'");
            }
            if (frozen(link)) {
                throw new CommandException("Cannot change '" + link.name() + "' link from '" + i.name() + "' to '"
                        + link.child().name() + "'");
            }
            links.add(link);
            i = link.child();
        }
        for (Edge link : links) {
            frozenBy.computeIfAbsent(link, k -> new ArrayList<>()).add(owner);
            link.freeze();
        }
        boolean[] unfrozen = new boolean[1];
        return () -> {
            synchronized (BlockGraph.this) {
                if (unfrozen[0]) {
                    return; // once: a later freeze of the same links by another owner stays
                }
                unfrozen[0] = true;
                for (Edge link : links) {
                    List<Object> by = frozenBy.get(link);
                    if (by != null) {
                        by.remove(owner);
                        if (by.isEmpty()) {
                            frozenBy.remove(link);
                        }
                    }
                    link.unfreeze();
                }
            }
        };
    }

    boolean frozen(Edge e) {
        List<Object> by = frozenBy.get(e);
        return by != null && !by.isEmpty();
    }

    private boolean frozenByOthers(Edge e, Object owner) {
        List<Object> by = frozenBy.get(e);
        return by != null && by.stream().anyMatch(o -> o != owner);
    }

    /** Marks a node that no backing link to may be frozen (QEMU's {@code never_freeze}). */
    public synchronized void setNeverFreeze(GraphNode node) {
        neverFreeze.add(node);
    }

    // ---- permissions ---------------------------------------------------------------------------------------

    void refreshPermissionsQuietly() {
        try {
            refreshPermissions();
        } catch (RuntimeException e) {
            LOG.warn("permissions after a graph change: {}", e.getMessage());
        }
    }

    /**
     * Recomputes what every child edge takes and shares from its parent's users, as QEMU's
     * {@code bdrv_default_perms}, then checks every node: each user's permissions must be shared
     * by every other user, and a read-only node takes no writer.
     *
     * @throws CommandException with QEMU's message for the first conflict
     */
    void refreshPermissions() {
        refreshPermissions(Set.of());
    }

    /**
     * As {@link #refreshPermissions()}; a node of {@code madeReadOnly} (writable before a reopen)
     * that keeps a writer gets QEMU's reopen message, "Read-only block node ... cannot support
     * read-write users", where one that was read-only already gets "Block node is read-only".
     */
    void refreshPermissions(Set<GraphNode> madeReadOnly) {
        Map<GraphNode, int[]> cumulative = new HashMap<>();
        for (GraphNode n : nodes.values()) {
            cumulativeOf(n, cumulative);
        }
        for (GraphNode n : nodes.values()) {
            List<Edge> ps = n.parents;
            for (Edge a : ps) {
                for (Edge b : ps) {
                    if (a != b && (b.perm() & ~a.shared()) != 0) {
                        throw new CommandException("Permission conflict on node '" + n.name() + "': permissions '"
                                + Perm.words(b.perm() & ~a.shared()) + "' are both required by "
                                + b.userDescription() + " (uses node '" + n.name() + "' as '" + b.name()
                                + "' child) and unshared by " + a.userDescription() + " (uses node '" + n.name()
                                + "' as '" + a.name() + "' child).");
                    }
                }
            }
            int perm = cumulative.get(n)[0];
            if (n.isReadOnly() && (perm & (Perm.WRITE.bit() | Perm.WRITE_UNCHANGED.bit())) != 0) {
                if (madeReadOnly.contains(n)) {
                    throw new CommandException("Read-only block node '" + n.name() + "' cannot support read-write users");
                }
                throw new CommandException(n.writeRefusal());
            }
        }
    }

    /** {perm, shared} that the node's users take and share in all, computing parents first. */
    private int[] cumulativeOf(GraphNode n, Map<GraphNode, int[]> memo) {
        int[] known = memo.get(n);
        if (known != null) {
            return known;
        }
        memo.put(n, new int[] {0, Perm.ALL}); // a cycle would stop here
        int perm = 0;
        int shared = Perm.ALL;
        for (Edge e : n.parents) {
            if (!e.isRoot()) {
                int[] p = cumulativeOf(e.parent(), memo);
                childPermissions(e, p[0], p[1]);
            }
            perm |= e.perm();
            shared &= e.shared();
        }
        int[] result = {perm, shared};
        memo.put(n, result);
        return result;
    }

    /** Sets a child edge's permissions from its parent's users, by the child's role. */
    private void childPermissions(Edge e, int perm, int shared) {
        int write = Perm.WRITE.bit();
        int resize = Perm.RESIZE.bit();
        int read = Perm.CONSISTENT_READ.bit();
        int unchanged = Perm.WRITE_UNCHANGED.bit();
        GraphNode parent = e.parent();
        boolean writable = !parent.isReadOnly();
        int nperm;
        int nshared;
        switch (e.role()) {
            case FILTERED -> {
                switch (parent.driver()) {
                    case "commit_top" -> { // nothing reads or writes through it: it takes nothing
                        nperm = 0;
                        nshared = Perm.ALL;
                    }
                    case "mirror_top" -> { // forwards clients' writes; the job reads the node itself
                        nperm = perm & ~read;
                        nshared = shared;
                    }
                    case "replication" -> { // QEMU's replication_child_perm: whatever its users do
                        nperm = read | (writable ? write : 0);
                        nshared = read | write | unchanged;
                    }
                    case "copy-before-write" -> { // QEMU's cbw_child_perm: nobody else writes the source
                        nperm = perm;
                        nshared = shared;
                        if (!parent.parents.isEmpty()) {
                            nperm |= (perm & write) != 0 ? read : 0;
                            nshared &= ~(write | resize);
                        }
                    }
                    default -> {
                        nperm = perm;
                        nshared = shared;
                    }
                }
                if (writesUnchanged.contains(parent) && writable) {
                    nperm |= unchanged; // copy-on-read writes what it read
                    nshared |= unchanged;
                }
                if (parent.driverNode() instanceof BlkdebugNode b) { // take-child-perms, unshare-child-perms
                    nperm |= mask(b.settings().takeChildPerms());
                    nshared &= ~mask(b.settings().unshareChildPerms());
                }
            }
            case COW -> {
                nperm = perm & read;
                nshared = ((shared & write) != 0 ? write | resize : 0) | read | unchanged;
            }
            default -> {
                if (parent.driver().equals("copy-before-write") && e.name().equals("target")) {
                    // QEMU: the old data is written there; guests may write a chain the target is in
                    nperm = write;
                    nshared = Perm.ALL & ~resize;
                } else if (parent.driver().equals("snapshot-access")) { // it reads through its file's snapshot API
                    nperm = 0;
                    nshared = Perm.ALL;
                } else if (parent.driver().equals("quorum")) {
                    // QEMU's quorum_child_perm: what its users take passes through; nobody else
                    // may write or resize a child, or the children would differ.
                    nperm = perm & (read | write | unchanged | resize);
                    nshared = shared & (read | unchanged);
                } else { // STORAGE, DATA: metadata and data are written whenever the parent is writable
                    nperm = perm | read | (writable ? write | resize : 0);
                    nshared = shared & ~(write | resize);
                }
            }
        }
        DriverNode d = parent.driverNode();
        if (d != null) {
            nperm |= mask(d.extraChildPermissions(e.name()));
        }
        e.setPermissions(nperm, nshared);
    }

    private static int mask(Set<BlockPermission> perms) {
        int m = 0;
        for (BlockPermission p : perms) {
            m |= Perm.valueOf(p.name()).bit();
        }
        return m;
    }

    // ---- names and closing ------------------------------------------------------------------------------

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
            if (nodes.get(n.name()) != n) {
                continue;
            }
            nodes.remove(n.name());
            closing(n);
            n.markClosed();
            for (Edge e : n.children) {
                e.child().parents.remove(e);
            }
            try {
                n.driverNode().close();
            } catch (IOException e) {
                LOG.warn("closing {}: {}", n.name(), e.getMessage());
            }
        }
        refreshPermissionsQuietly(); // the edges that stay take what they took before the failed open
    }

    private static void closeQuietly(DriverNode n) {
        if (n == null) {
            return;
        }
        try {
            n.close();
        } catch (IOException | RuntimeException e) {
            LOG.warn("closing a node that failed to open: {}", message(e));
        }
    }

    static String message(Exception e) {
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
                boolean used = n.parents.stream().anyMatch(e -> !e.isRoot() && order.contains(e.parent()));
                if (!used) {
                    try {
                        if (!n.options().noFlush()) { // as QEMU's close: cache.no-flush=on skips it too
                            n.driverNode().flush();
                        }
                    } catch (IOException e) {
                        LOG.warn("flushing {}: {}", n.name(), e.getMessage());
                    }
                    closing(n);
                    n.markClosed();
                    try {
                        n.driverNode().close();
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
        roots.clear();
        rootUsers.clear();
    }
}
