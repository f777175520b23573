package io.blockjobs.sdk.testkit;

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
import java.util.ArrayList;
import java.util.EnumSet;
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

/**
 * The harness's block graph, built as the platform's is: named nodes ({@link MemoryNode}s, the
 * filters jobs put in, and nodes that registered drivers open), the links between them (an
 * overlay's backing link, a filter's child, a driver node's children), and root edges (jobs' and
 * clients'). It opens driver nodes ({@code blockdev-add}) and deletes them, puts filters in and
 * takes them out, switches users over, changes backing links, freezes them, drains, and checks
 * permissions with QEMU's rules and messages, as {@code BlockGraph} does.
 */
final class HarnessGraph {
    private static final Logger LOG = LoggerFactory.getLogger(HarnessGraph.class);
    private static final Pattern NODE_NAME = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,30}");
    /** The filters that only forward and run hooks; {@code copy-on-read} is the harness's own too. */
    private static final Set<String> JOB_FILTERS = Set.of("commit_top", "mirror_top");
    private static final int READ = bit(BlockPermission.CONSISTENT_READ);
    private static final int WRITE = bit(BlockPermission.WRITE);
    private static final int UNCHANGED = bit(BlockPermission.WRITE_UNCHANGED);
    private static final int RESIZE = bit(BlockPermission.RESIZE);
    static final int ALL = READ | WRITE | UNCHANGED | RESIZE;

    /** An undoable change. */
    interface Undo {
        void undo();
    }

    /**
     * A link to a node from above: a root edge, an overlay's backing link, a filter's child link,
     * a driver node's child link ({@code link}).
     */
    private record Parent(RootEdge root, BlockNode node, String name, HarnessDriverNode.Link link) {
        Parent(RootEdge root, BlockNode node, String name) {
            this(root, node, name, null);
        }

        String description() {
            return root != null ? root.user() : "node '" + node.nodeName() + "'";
        }
    }

    private final Map<String, BlockNode> nodes = new LinkedHashMap<>();
    private final List<RootEdge> roots = new CopyOnWriteArrayList<>();
    private final Map<BlockNode, List<Object>> frozenBy = new IdentityHashMap<>(); // by the link's parent
    private final Set<BlockNode> neverFreeze = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
    private final Map<String, BlockDriver> drivers = new LinkedHashMap<>();
    private final Map<String, Object> objects = new LinkedHashMap<>();
    private int generated;

    // ---- drivers and objects -----------------------------------------------------------------------

    /** Registers a driver under its name, as a plugin's start registers its drivers with the platform. */
    synchronized void register(BlockDriver driver) {
        String name = driver.name();
        if (JOB_FILTERS.contains(name) || name.equals("copy-on-read") || drivers.containsKey(name)) {
            throw new IllegalArgumentException("a block driver named '" + name + "' is registered already");
        }
        drivers.put(name, driver);
    }

    /** Adds a user-creatable object ({@code object-add}) that drivers find by id. */
    synchronized void addObject(String id, Object object) {
        if (objects.putIfAbsent(id, object) != null) {
            throw new CommandException("attempt to add duplicate property '" + id + "' to object (type 'container')");
        }
    }

    // ---- nodes -----------------------------------------------------------------------------------

    /** Adds a node and the nodes beneath it, each under its node name. */
    synchronized void add(BlockNode node) {
        for (BlockNode n = node; n != null; n = below(n)) {
            BlockNode known = nodes.get(n.nodeName());
            if (known == n) {
                continue;
            }
            if (known != null) {
                throw new IllegalArgumentException("Duplicate nodes with node-name='" + n.nodeName() + "'");
            }
            nodes.put(n.nodeName(), n);
        }
    }

    synchronized BlockNode find(String name) {
        return nodes.get(name);
    }

    /** The node, or the platform's {@code GenericError} for a node name. */
    synchronized BlockNode require(String name) {
        BlockNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException(ErrorClass.GENERIC_ERROR, "Cannot find device='' nor node-name='" + name + "'");
        }
        return n;
    }

    /** The node a command names as its device, or QEMU's {@code DeviceNotFound}. */
    synchronized BlockNode requireDevice(String name) {
        BlockNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Device '" + name + "' not found");
        }
        return n;
    }

    synchronized Set<String> names() {
        return Set.copyOf(nodes.keySet());
    }

    synchronized List<String> filterNames() {
        List<String> names = new ArrayList<>();
        nodes.forEach((name, n) -> {
            if (isFilter(n)) {
                names.add(name);
            }
        });
        return names;
    }

    synchronized List<BlockNode> all() {
        return new ArrayList<>(nodes.values());
    }

    /** Whether the node is a filter: one a job put in, or a node of a filter driver. */
    static boolean isFilter(BlockNode n) {
        return n instanceof HarnessFilter || n instanceof HarnessDriverNode d && d.isFilter();
    }

    /** The next node down: a filter's child, an overlay's backing node. */
    static BlockNode below(BlockNode n) {
        if (n instanceof HarnessFilter f) {
            return f.child();
        }
        if (n instanceof MemoryNode m) {
            return m.backingNode();
        }
        if (n instanceof RootEdge e) {
            return e.target();
        }
        if (n instanceof HarnessDriverNode d && d.isFilter()) {
            return d.filtered().target();
        }
        return n.backing().orElse(null);
    }

    /** The node a stack of filters stands for. */
    static BlockNode skipFilters(BlockNode n) {
        BlockNode node = n;
        while (true) {
            if (node instanceof RootEdge e) {
                node = e.target();
            } else if (node instanceof HarnessFilter f) {
                node = f.child();
            } else if (node instanceof HarnessDriverNode d && d.isFilter()) {
                node = d.filtered().target();
            } else {
                return node;
            }
        }
    }

    // ---- root edges ------------------------------------------------------------------------------

    /** Attaches a user's edge; refused, and left out, on a permission conflict. */
    synchronized RootEdge attachRoot(RootEdge edge) {
        roots.add(edge);
        try {
            refreshPermissions();
        } catch (RuntimeException e) {
            roots.remove(edge);
            edge.markDetached();
            throw e;
        }
        return edge;
    }

    synchronized void detachRoot(RootEdge edge) {
        roots.remove(edge);
        edge.markDetached();
    }

    synchronized List<RootEdge> roots() {
        return List.copyOf(roots);
    }

    // ---- filters ---------------------------------------------------------------------------------

    /**
     * Puts a filter above {@code nodeName}: the harness's own ({@code copy-on-read}, or a job
     * filter that only forwards and runs {@code hooks}), or a node of a registered filter driver
     * opened with {@code options} and {@code file} set to the node, as the platform's
     * {@code insertFilter}. Every user of the node but {@code keep}, jobs' edges (which stay at
     * their node) and parents the filter reaches itself (QEMU's {@code should_update_child})
     * moves to the filter.
     */
    synchronized BlockNode insertFilter(String nodeName, String driver, String filterName, Map<String, Object> options,
                                        List<WriteHook> hooks, Set<RootEdge> keep, boolean mayFreeze) {
        BlockNode node = require(nodeName);
        String name;
        if (filterName != null) {
            checkNewName(filterName);
            name = filterName;
        } else {
            name = generateName();
        }
        BlockNode filter;
        if (driver.equals("copy-on-read") || JOB_FILTERS.contains(driver)) {
            BlockNode bottom = null;
            if (driver.equals("copy-on-read")) {
                for (String key : options.keySet()) {
                    if (!key.equals("bottom")) {
                        throw new CommandException("Parameter '" + key + "' is unexpected");
                    }
                }
                Object b = options.get("bottom");
                if (b != null) {
                    bottom = require(String.valueOf(b));
                }
            }
            filter = new HarnessFilter(name, driver, node, bottom, hooks);
            nodes.put(name, filter);
        } else {
            Map<String, Object> o = new LinkedHashMap<>(options);
            o.put("driver", driver);
            o.put("file", nodeName);
            HarnessDriverNode d = openNode(new HarnessOptions(o, ""), name, false, node.isReadOnly());
            if (!d.isFilter()) {
                release(d);
                throw new CommandException("'" + driver + "' is not a filter driver");
            }
            hooks.forEach(d::addHook);
            filter = d;
        }
        if (!mayFreeze) {
            neverFreeze.add(filter);
        }
        Set<BlockNode> reached = reach(filter);
        List<Parent> moved = new ArrayList<>();
        for (Parent p : parentsOf(node)) {
            boolean own = p.node() == filter;
            boolean staysAtNode = p.root() != null && !p.root().isClient();
            boolean reachedByFilter = p.node() != null && reached.contains(p.node());
            if (!own && !staysAtNode && !reachedByFilter && (p.root() == null || !keep.contains(p.root()))) {
                moved.add(p);
            }
        }
        try (AutoCloseable drained = drain(node)) {
            move(moved, filter);
            refreshPermissions();
        } catch (RuntimeException e) {
            move(moved, node);
            release(filter);
            refreshQuietly();
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        return filter;
    }

    /** Removes a filter; its users go to the node beneath. Nothing happens if it is gone. */
    synchronized void removeFilter(String filterName) {
        BlockNode f = nodes.get(filterName);
        if (f == null || !isFilter(f)) {
            return;
        }
        try (AutoCloseable drained = drain(f)) {
            move(parentsOf(f), below(f));
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        release(f);
        refreshQuietly();
    }

    // ---- driver nodes --------------------------------------------------------------------------

    /**
     * Opens a node of a registered driver as {@code blockdev-add} does: {@code driver} and
     * {@code node-name} (required), the generic {@code read-only}, {@code auto-read-only} and
     * {@code force-share}, and the driver's own options; children are named by node name.
     */
    synchronized HarnessDriverNode open(Map<String, ?> options) {
        HarnessOptions o = new HarnessOptions(options, "");
        String name = o.string("node-name");
        checkNewName(name);
        HarnessDriverNode d = openNode(o, name, true, false);
        refreshQuietly();
        return d;
    }

    /** Opens one driver node under {@code name}; its read-only flag is the option's, or {@code inherited}. */
    private HarnessDriverNode openNode(HarnessOptions o, String name, boolean monitorOwned, boolean inherited) {
        String driverName = o.string("driver");
        BlockDriver driver = drivers.get(driverName);
        if (driver == null) {
            throw new CommandException("Parameter 'driver' does not accept value '" + driverName + "'");
        }
        o.ignore("node-name");
        boolean readOnly = o.bool("read-only", inherited);
        OpenFlags flags = new OpenFlags(readOnly, o.bool("auto-read-only", false), o.bool("force-share", false), false);
        HarnessDriverNode node = new HarnessDriverNode(name, driverName, readOnly, monitorOwned);
        nodes.put(name, node);
        Opening ctx = new Opening(node, o, flags);
        DriverNode opened = null;
        try {
            opened = driver.open(ctx);
            if (opened == null) {
                throw new IllegalStateException(driverName + ": open returned no node");
            }
            o.checkAllUsed();
        } catch (IOException e) {
            ctx.abandon();
            throw new CommandException(e.getMessage() == null ? e.toString() : e.getMessage());
        } catch (RuntimeException e) {
            closeQuietly(opened); // opened, then refused for a member nobody read
            ctx.abandon();
            throw e;
        }
        node.attachDriver(opened);
        return node;
    }

    /**
     * QMP {@code blockdev-del}, with QEMU's checks in QEMU's order: a client ("Node x is in use"),
     * a job ({@code blocker}'s message), a parent using it as its backing file, ownership (a job's
     * filter), then any other parent. A driver node is closed; a memory node only leaves the graph
     * (a test may still look at it).
     *
     * @param blocker the op blocker's message for a node, or null
     */
    synchronized void delete(String name, java.util.function.Function<BlockNode, String> blocker) {
        BlockNode n = nodes.get(name);
        if (n == null) {
            throw new CommandException("Failed to find node with node-name='" + name + "'");
        }
        for (RootEdge r : roots) {
            if (r.target() == n && r.isClient()) {
                throw new CommandException("Node " + name + " is in use");
            }
        }
        String blocked = blocker.apply(n);
        if (blocked != null) {
            throw new CommandException(blocked);
        }
        List<Parent> parents = parentsOf(n);
        for (Parent p : parents) {
            if (p.node() != null && p.name().equals("backing")) {
                throw new CommandException("Node '" + name + "' is busy: node is used as backing hd of '"
                        + p.node().nodeName() + "'");
            }
        }
        if (n instanceof HarnessFilter || n instanceof HarnessDriverNode d && !d.monitorOwned()) {
            throw new CommandException("Node " + name + " is not owned by the monitor");
        }
        if (!parents.isEmpty()) {
            throw new CommandException("Block device " + name + " is in use");
        }
        release(n);
        refreshQuietly();
    }

    /** Closes every driver node, parents first: the harness ends. */
    synchronized void closeDrivers() {
        List<BlockNode> all = new ArrayList<>(nodes.values());
        for (int i = all.size() - 1; i >= 0; i--) {
            if (all.get(i) instanceof HarnessDriverNode d) {
                release(d);
            }
        }
    }

    /** A node leaves the graph: a driver node is closed and its links to its children go. */
    private void release(BlockNode n) {
        if (nodes.get(n.nodeName()) == n) {
            nodes.remove(n.nodeName());
        }
        neverFreeze.remove(n);
        frozenBy.remove(n);
        if (n instanceof HarnessDriverNode d) {
            closeQuietly(d.driverNode());
            for (HarnessDriverNode.Link l : d.children()) {
                d.removeChild(l);
            }
        }
    }

    private static void closeQuietly(DriverNode n) {
        if (n == null) {
            return;
        }
        try {
            n.close();
        } catch (IOException | RuntimeException e) {
            LOG.warn("closing {}: {}", n.driver(), e.getMessage());
        }
    }

    /** What a driver sees while it opens one node in the harness, as the platform's. */
    private final class Opening implements DriverContext {
        private final HarnessDriverNode node;
        private final HarnessOptions options;
        private final OpenFlags flags;

        Opening(HarnessDriverNode node, HarnessOptions options, OpenFlags flags) {
            this.node = node;
            this.options = options;
            this.flags = flags;
        }

        @Override
        public String nodeName() {
            return node.nodeName();
        }

        @Override
        public DriverOptions options() {
            return options;
        }

        @Override
        public boolean readOnly() {
            return flags.readOnly();
        }

        @Override
        public OpenFlags flags() {
            return flags;
        }

        @Override
        public BlockNode child(String key, ChildRole role) {
            return optionalChild(key, role).orElseThrow(() -> options.missing(key));
        }

        @Override
        public Optional<BlockNode> optionalChild(String key, ChildRole role) {
            Object ref = options.raw(key);
            if (ref == null) {
                return Optional.empty();
            }
            return Optional.of(attach(key, role, ref(key, ref)));
        }

        @Override
        public Optional<BlockNode> backing(String recordedName, String recordedFormat) {
            if (options.given("backing")) {
                Object ref = options.raw("backing");
                return ref == null ? Optional.empty() : Optional.of(attach("backing", ChildRole.COW, ref("backing", ref)));
            }
            if (recordedName == null) {
                return Optional.empty();
            }
            for (BlockNode n : nodes.values()) {
                if (n != node && recordedName.equals(n.filename())) {
                    return Optional.of(attach("backing", ChildRole.COW, n));
                }
            }
            throw new CommandException(node.nodeName() + ": could not open backing file '" + recordedName
                    + "': the harness has no node of that file name");
        }

        @Override
        public <T> T object(String id, Class<T> type) {
            Object o;
            synchronized (HarnessGraph.this) {
                o = objects.get(id);
            }
            if (!type.isInstance(o)) {
                String typeName = type.getSimpleName().replaceAll("([a-z])([A-Z])", "$1-$2")
                        .toLowerCase(java.util.Locale.ROOT);
                throw new CommandException("No " + typeName + " object with id '" + id + "'");
            }
            return type.cast(o);
        }

        private BlockNode ref(String key, Object ref) {
            if (ref instanceof String s) {
                return require(s);
            }
            if (ref instanceof Map<?, ?>) {
                throw new CommandException("Parameter '" + key + "': the harness opens no inline child; open it first"
                        + " (JobHarness.open, add) and name it here");
            }
            throw options.type(key, "string or object");
        }

        /** Attaches a child and checks permissions at once, as the platform's {@code bdrv_open_child}. */
        private BlockNode attach(String key, ChildRole role, BlockNode child) {
            HarnessDriverNode.Link link = node.addChild(key, role, child);
            try {
                refreshPermissions();
            } catch (RuntimeException e) {
                node.removeChild(link);
                throw e;
            }
            return link;
        }

        /** A failed open: the node goes, and its links to its children with it. */
        void abandon() {
            for (HarnessDriverNode.Link l : node.children()) {
                node.removeChild(l);
            }
            nodes.remove(node.nodeName());
            refreshQuietly();
        }
    }

    // ---- switch-over and backing links -----------------------------------------------------------

    /** Moves every user of {@code from} but {@code keep} to {@code to}: a switch-over. */
    synchronized Undo replaceUsers(String from, String to, Set<RootEdge> keep) {
        BlockNode f = require(from);
        BlockNode t = require(to);
        List<Parent> moved = new ArrayList<>();
        for (Parent p : parentsOf(f)) {
            if ((p.root() == null || !keep.contains(p.root())) && p.node() != t) {
                moved.add(p);
            }
        }
        try (AutoCloseable drained = drain(f)) {
            move(moved, t);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        refreshQuietly();
        return () -> {
            synchronized (HarnessGraph.this) {
                move(moved, f);
                refreshQuietly();
            }
        };
    }

    /**
     * Makes {@code backingName} (or nothing) the backing of {@code overlayName} and rewrites the
     * overlay's header, as the platform's {@code setBacking}; refused if another job froze the link.
     */
    synchronized Undo setBacking(Object owner, String overlayName, String backingName, String backingFile) {
        BlockNode o = require(overlayName);
        BlockNode backing = backingName == null ? null : require(backingName);
        if (!(o instanceof MemoryNode overlay)) {
            throw new CommandException("'" + overlayName + "' (" + o.driver() + ") cannot have a backing file");
        }
        BlockNode old = overlay.backingNode();
        if (old != null && frozenByOthers(overlay, owner)) {
            throw new CommandException("Cannot change frozen 'backing' link from '" + overlayName + "' to '"
                    + old.nodeName() + "'");
        }
        String oldFile = overlay.backingFile();
        String oldFormat = overlay.backingFormat();
        String file = backing == null ? null : backingFile != null ? backingFile : skipFilters(backing).filename();
        String format = backing == null ? null : skipFilters(backing).driver();
        try {
            overlay.changeBackingFile(file, format);
        } catch (IOException e) {
            throw new CommandException("could not change the backing file of '" + overlayName + "': " + e.getMessage());
        }
        try (AutoCloseable drained = drain(overlay)) {
            overlay.relink(backing);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        refreshQuietly();
        return () -> {
            synchronized (HarnessGraph.this) {
                try {
                    overlay.changeBackingFile(oldFile, oldFormat);
                } catch (IOException e) {
                    LOG.warn("could not restore the backing file of {}: {}", overlayName, e.getMessage());
                }
                overlay.relink(old);
                refreshQuietly();
            }
        };
    }

    /**
     * Freezes the links from {@code topName} down to {@code baseName} (exclusive; null: to the
     * end), walking through filters; refused with QEMU's messages as {@code BlockGraph.freeze}.
     */
    synchronized AutoCloseable freeze(Object owner, String topName, String baseName) {
        BlockNode top = require(topName);
        BlockNode base = baseName == null ? null : require(baseName);
        List<BlockNode> links = new ArrayList<>();
        for (BlockNode i = top; i != null && i != base; ) {
            BlockNode child = i instanceof HarnessFilter || i instanceof MemoryNode || i instanceof HarnessDriverNode
                    ? below(i) : null;
            if (child == null) {
                break;
            }
            if (frozen(i)) {
                throw new CommandException("Cannot change '" + linkName(i) + "' link from '" + i.nodeName() + "' to '"
                        + child.nodeName() + "'");
            }
            links.add(i);
            i = child;
        }
        for (BlockNode link : links) {
            BlockNode child = below(link);
            if (neverFreeze.contains(child)) {
                throw new CommandException("Cannot freeze '" + linkName(link) + "' link to '" + child.nodeName() + "'");
            }
        }
        for (BlockNode link : links) {
            frozenBy.computeIfAbsent(link, k -> new ArrayList<>()).add(owner);
        }
        return () -> {
            synchronized (HarnessGraph.this) {
                for (BlockNode link : links) {
                    List<Object> by = frozenBy.get(link);
                    if (by != null) {
                        by.remove(owner);
                        if (by.isEmpty()) {
                            frozenBy.remove(link);
                        }
                    }
                }
            }
        };
    }

    /** The frozen links now, as {@code parent -> child}. */
    synchronized List<String> frozenLinks() {
        List<String> links = new ArrayList<>();
        for (BlockNode parent : frozenBy.keySet()) {
            BlockNode child = below(parent);
            links.add(parent.nodeName() + " -> " + (child == null ? "(none)" : child.nodeName()));
        }
        java.util.Collections.sort(links);
        return links;
    }

    private boolean frozen(BlockNode linkParent) {
        List<Object> by = frozenBy.get(linkParent);
        return by != null && !by.isEmpty();
    }

    private boolean frozenByOthers(BlockNode linkParent, Object owner) {
        List<Object> by = frozenBy.get(linkParent);
        return by != null && by.stream().anyMatch(o -> o != owner);
    }

    private static String linkName(BlockNode parent) {
        if (parent instanceof HarnessFilter f) {
            return f.childName();
        }
        if (parent instanceof HarnessDriverNode d && d.isFilter()) {
            return d.filtered().key();
        }
        return "backing";
    }

    // ---- drain -----------------------------------------------------------------------------------

    /**
     * Begins a drain of {@code node}: clients that reach it hold new requests and the requests in
     * flight end; jobs' own requests go on. Close the handle on any thread to end it, once.
     */
    AutoCloseable drain(BlockNode node) {
        List<RootEdge.Gate> gates = new ArrayList<>();
        synchronized (this) {
            for (RootEdge r : roots) {
                if (r.gate() != null && reach(r.target()).contains(node)) {
                    gates.add(r.gate());
                }
            }
        }
        gates.forEach(RootEdge.Gate::close);
        gates.forEach(RootEdge.Gate::awaitIdle);
        boolean[] ended = new boolean[1];
        return () -> {
            synchronized (ended) {
                if (ended[0]) {
                    return;
                }
                ended[0] = true;
            }
            gates.forEach(RootEdge.Gate::open);
        };
    }

    /** {@code top} and every node beneath it: backing links, filters' children, driver nodes' children. */
    private static Set<BlockNode> reach(BlockNode top) {
        Set<BlockNode> seen = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        List<BlockNode> todo = new ArrayList<>(List.of(top));
        while (!todo.isEmpty()) {
            BlockNode n = todo.remove(todo.size() - 1);
            if (n == null || !seen.add(n)) {
                continue;
            }
            if (n instanceof HarnessDriverNode d) {
                d.children().forEach(l -> todo.add(l.target()));
                d.backing().ifPresent(todo::add);
            } else {
                todo.add(below(n));
            }
        }
        return seen;
    }

    // ---- permissions -----------------------------------------------------------------------------

    /** The links to {@code n} from above. */
    private List<Parent> parentsOf(BlockNode n) {
        List<Parent> parents = new ArrayList<>();
        for (RootEdge r : roots) {
            if (r.target() == n) {
                parents.add(new Parent(r, null, r.role()));
            }
        }
        for (BlockNode p : nodes.values()) {
            if (p instanceof MemoryNode m && m.backingNode() == n) {
                parents.add(new Parent(null, m, "backing"));
            } else if (p instanceof HarnessFilter f && f.child() == n) {
                parents.add(new Parent(null, f, f.childName()));
            } else if (p instanceof HarnessDriverNode d) {
                for (HarnessDriverNode.Link l : d.children()) {
                    if (l.target() == n) {
                        parents.add(new Parent(null, d, l.key(), l));
                    }
                }
            }
        }
        return parents;
    }

    private static void move(List<Parent> links, BlockNode to) {
        for (Parent p : links) {
            if (p.root() != null) {
                p.root().retarget(to);
            } else if (p.link() != null) {
                p.link().retarget(to);
            } else if (p.node() instanceof MemoryNode m) {
                m.relink(to);
            } else if (p.node() instanceof HarnessFilter f) {
                f.relink(to);
            }
        }
    }

    private void refreshQuietly() {
        try {
            refreshPermissions();
        } catch (RuntimeException e) {
            LOG.warn("permissions after a graph change: {}", e.getMessage());
        }
    }

    /**
     * Checks every node: each user's permissions must be shared by every other user, and a
     * read-only node takes no writer, as the platform's {@code refreshPermissions} (child links
     * take what their parent's users need, by QEMU's default rules for backing and filtered children).
     *
     * @throws CommandException with the platform's message for the first conflict
     */
    synchronized void refreshPermissions() {
        Map<BlockNode, int[]> cumulative = new IdentityHashMap<>();
        for (BlockNode n : nodes.values()) {
            cumulativeOf(n, cumulative);
        }
        for (BlockNode n : nodes.values()) { // what driver nodes' links may do now, as the platform's edges
            for (Parent p : parentsOf(n)) {
                if (p.link() != null) {
                    p.link().setPermissions(linkPermissions(p, cumulative)[0]);
                }
            }
        }
        for (BlockNode n : nodes.values()) {
            List<Parent> ps = parentsOf(n);
            List<int[]> perms = new ArrayList<>();
            for (Parent p : ps) {
                perms.add(linkPermissions(p, cumulative));
            }
            for (int a = 0; a < ps.size(); a++) {
                for (int b = 0; b < ps.size(); b++) {
                    int unshared = perms.get(b)[0] & ~perms.get(a)[1];
                    if (a != b && unshared != 0) {
                        Parent pa = ps.get(a);
                        Parent pb = ps.get(b);
                        throw new CommandException("Permission conflict on node '" + n.nodeName() + "': permissions '"
                                + words(unshared) + "' are both required by " + pb.description() + " (uses node '"
                                + n.nodeName() + "' as '" + pb.name() + "' child) and unshared by " + pa.description()
                                + " (uses node '" + n.nodeName() + "' as '" + pa.name() + "' child).");
                    }
                }
            }
            boolean readOnly = n instanceof HarnessDriverNode d ? d.openedReadOnly() : !isFilter(n) && n.isReadOnly();
            if (readOnly && (cumulative.get(n)[0] & (WRITE | UNCHANGED)) != 0) {
                throw new CommandException("Block node is read-only");
            }
        }
    }

    /** {perm, shared} that the node's users take and share in all, parents first. */
    private int[] cumulativeOf(BlockNode n, Map<BlockNode, int[]> memo) {
        int[] known = memo.get(n);
        if (known != null) {
            return known;
        }
        memo.put(n, new int[] {0, ALL}); // a cycle would stop here
        int perm = 0;
        int shared = ALL;
        for (Parent p : parentsOf(n)) {
            int[] link = linkPermissions(p, memo);
            perm |= link[0];
            shared &= link[1];
        }
        int[] result = {perm, shared};
        memo.put(n, result);
        return result;
    }

    /** What a link takes and shares: a root edge its own; a child link what its parent's users need. */
    private int[] linkPermissions(Parent p, Map<BlockNode, int[]> memo) {
        if (p.root() != null) {
            return new int[] {p.root().permMask(), p.root().sharedMask()};
        }
        int[] parent = cumulativeOf(p.node(), memo);
        int perm = parent[0];
        int shared = parent[1];
        if (p.link() != null) {
            return driverLinkPermissions((HarnessDriverNode) p.node(), p.link(), perm, shared);
        }
        if (p.node() instanceof HarnessFilter f) {
            int nperm;
            int nshared;
            switch (f.driver()) {
                case "commit_top" -> { // nothing reads or writes through it
                    nperm = 0;
                    nshared = ALL;
                }
                case "mirror_top" -> { // forwards clients' writes; the job reads the node itself
                    nperm = perm & ~READ;
                    nshared = shared;
                }
                default -> {
                    nperm = perm;
                    nshared = shared;
                }
            }
            if (f.copyOnRead() && !f.isReadOnly()) {
                nperm |= UNCHANGED; // copy-on-read writes what it read
                nshared |= UNCHANGED;
            }
            return new int[] {nperm, nshared};
        }
        // a backing link: reads only, and lets others write what the overlay's users let be written
        return new int[] {perm & READ, ((shared & WRITE) != 0 ? WRITE | RESIZE : 0) | READ | UNCHANGED};
    }

    /**
     * What a driver node's child link takes and shares, by the child's role, as the platform's
     * {@code childPermissions} ({@code bdrv_default_perms}, and the rules of {@code copy-before-write}
     * and {@code snapshot-access}), with what the driver asks for beyond
     * ({@link DriverNode#extraChildPermissions}).
     */
    private int[] driverLinkPermissions(HarnessDriverNode d, HarnessDriverNode.Link link, int perm, int shared) {
        int[] p = defaultLinkPermissions(d, link, perm, shared);
        DriverNode driver = d.driverNode(); // null while it opens
        if (driver != null) {
            p[0] |= mask(driver.extraChildPermissions(link.key())); // a child it writes itself (discard-source)
        }
        return p;
    }

    private int[] defaultLinkPermissions(HarnessDriverNode d, HarnessDriverNode.Link link, int perm, int shared) {
        boolean writable = !d.openedReadOnly();
        return switch (link.role()) {
            case FILTERED -> {
                if (d.driver().equals("copy-before-write") && !parentsOf(d).isEmpty()) {
                    // QEMU's cbw_child_perm: nobody else writes the source
                    yield new int[] {perm | ((perm & WRITE) != 0 ? READ : 0), shared & ~(WRITE | RESIZE)};
                }
                yield new int[] {perm, shared};
            }
            case COW -> new int[] {perm & READ, ((shared & WRITE) != 0 ? WRITE | RESIZE : 0) | READ | UNCHANGED};
            case STORAGE, DATA -> {
                if (d.driver().equals("copy-before-write") && link.key().equals("target")) {
                    yield new int[] {WRITE, ALL & ~RESIZE}; // the old data is written there
                }
                if (d.driver().equals("snapshot-access")) {
                    yield new int[] {0, ALL}; // it reads through its file's snapshot
                }
                yield new int[] {perm | READ | (writable ? WRITE | RESIZE : 0), shared & ~(WRITE | RESIZE)};
            }
        };
    }

    // ---- names -----------------------------------------------------------------------------------

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

    // ---- permission sets -------------------------------------------------------------------------

    static int bit(BlockPermission p) {
        return 1 << p.ordinal();
    }

    static int mask(Set<BlockPermission> perms) {
        int m = 0;
        for (BlockPermission p : perms) {
            m |= bit(p);
        }
        return m;
    }

    static Set<BlockPermission> perms(int mask) {
        Set<BlockPermission> s = EnumSet.noneOf(BlockPermission.class);
        for (BlockPermission p : BlockPermission.values()) {
            if ((mask & bit(p)) != 0) {
                s.add(p);
            }
        }
        return s;
    }

    /** QEMU's names in messages: {@code write, resize}. */
    static String words(int mask) {
        List<String> names = new ArrayList<>();
        for (BlockPermission p : BlockPermission.values()) {
            if ((mask & bit(p)) != 0) {
                names.add(p.name().toLowerCase(java.util.Locale.ROOT).replace('_', ' '));
            }
        }
        return String.join(", ", names);
    }
}
