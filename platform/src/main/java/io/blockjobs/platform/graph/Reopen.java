package io.blockjobs.platform.graph;

import io.blockjobs.platform.image.Qcow2Node;
import io.blockjobs.platform.image.ReadOnlyReopen;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.OptionSpec;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * QMP {@code blockdev-reopen}, as QEMU 7.2's {@code bdrv_reopen_multiple}: every listed node, and
 * the children it opened itself (QEMU's {@code inherits_from}), is queued; each is prepared in
 * turn (options checked, {@code backing}/{@code file} relinked); then permissions are checked over
 * the whole graph and the drivers change mode; a failure anywhere undoes everything. QEMU's
 * messages throughout.
 */
final class Reopen {
    /** The options every node takes, which a reopen may change (QEMU's {@code common_options}). */
    private static final Set<String> GENERIC = Set.of("node-name", "discard", "cache", "read-only",
            "auto-read-only", "detect-zeroes");
    /**
     * Driver options QEMU's drivers accept new values for ({@code mutable_opts}) that blockjobd's
     * drivers take and have no effect on (they are ignored at open too). QEMU's other mutable
     * options (raw's {@code offset} and {@code size}, throttle's {@code throttle-group}) would
     * need the driver to change, so they are refused as unchangeable rather than ignored.
     */
    private static final Map<String, Set<String>> MUTABLE = Map.of(
            "qcow2", Set.of("lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
                    "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
                    "cache-clean-interval"),
            "file", Set.of("drop-cache", "x-check-cache-dropped"));

    /** Drivers QEMU gives no {@code bdrv_reopen_prepare}: every reopen of their nodes is refused. */
    private static final Set<String> NO_REOPEN = Set.of("quorum", "replication");

    private final BlockGraph graph;
    private final List<Entry> queue = new ArrayList<>();
    private final List<Runnable> undo = new ArrayList<>();

    /** One node to reopen and the options it gets. */
    private static final class Entry {
        final GraphNode node;
        final ObjectNode options;
        final ObjectNode explicit; // as given: without what the node inherits
        final String prefix;
        NodeOptions newOptions;

        Entry(GraphNode node, ObjectNode options, ObjectNode explicit, String prefix) {
            this.node = node;
            this.options = options;
            this.explicit = explicit;
            this.prefix = prefix;
        }
    }

    Reopen(BlockGraph graph) {
        this.graph = graph;
    }

    /** Runs the command on {@code list} (its {@code options} member). */
    void run(JsonNode list) {
        if (list == null) {
            throw new CommandException("Parameter 'options' is missing");
        }
        if (!list.isArray()) {
            throw new CommandException("Invalid parameter type for 'options', expected: array");
        }
        for (int i = 0; i < list.size(); i++) { // the QMP visitor checks every entry before the command runs
            validate(list.get(i), "options[" + i + "].");
        }
        for (int i = 0; i < list.size(); i++) {
            ObjectNode o = (ObjectNode) list.get(i).deepCopy();
            JsonNode name = o.get("node-name");
            if (name == null) {
                throw new CommandException("node-name not specified");
            }
            GraphNode n = graph.find(name.asString());
            if (n == null) {
                throw new CommandException("Failed to find node with node-name='" + name.asString() + "'");
            }
            enqueue(n, o, null, null, false);
        }
        if (queue.isEmpty()) {
            return; // QEMU 7.2 aborts here (an assertion); an empty list changes nothing
        }
        execute();
    }

    /** Prepares, checks and commits the queue, or undoes every step. */
    private void execute() {
        List<AutoCloseable> drained = new ArrayList<>();
        try {
            for (Entry e : queue) {
                drained.add(graph.drain(e.node));
            }
            Map<GraphNode, Boolean> wasReadOnly = new LinkedHashMap<>();
            for (Entry e : queue) {
                wasReadOnly.put(e.node, e.node.isReadOnly());
            }
            try {
                for (Entry e : queue) {
                    prepare(e);
                }
                Set<GraphNode> madeReadOnly = new HashSet<>();
                for (Entry e : queue) {
                    e.node.setReadOnly(e.newOptions.readOnly());
                    if (e.newOptions.readOnly() && !wasReadOnly.get(e.node)) {
                        madeReadOnly.add(e.node);
                    }
                }
                graph.refreshPermissions(madeReadOnly); // QEMU's bdrv_list_refresh_perms, on the new graph
                // Nodes going read-only write what they hold (bitmaps, metadata) while their
                // parents' permissions still let them; nodes going writable take their locks after.
                wasReadOnly.forEach(GraphNode::setReadOnly);
                graph.refreshPermissions();
                driversReadOnly(wasReadOnly);
                queue.forEach(e -> e.node.setReadOnly(e.newOptions.readOnly()));
                graph.refreshPermissions();
                driversReadWrite(wasReadOnly);
            } catch (RuntimeException ex) {
                for (int i = driverUndo.size() - 1; i >= 0; i--) {
                    driverUndo.get(i).run();
                }
                wasReadOnly.forEach(GraphNode::setReadOnly);
                for (int i = undo.size() - 1; i >= 0; i--) {
                    undo.get(i).run();
                }
                graph.refreshPermissionsQuietly();
                throw ex;
            }
            for (Entry e : queue) {
                e.node.setOptions(e.newOptions);
                e.node.setExplicitOptions(e.explicit);
            }
            graph.refreshPermissionsQuietly();
            for (Entry e : queue) {
                if (wasReadOnly.get(e.node) && !e.newOptions.readOnly()) {
                    for (BlockGraph.NodeListener l : graph.listeners()) {
                        l.reopenedReadWrite(e.node);
                    }
                }
            }
        } finally {
            for (AutoCloseable d : drained.reversed()) {
                try {
                    d.close();
                } catch (Exception ignored) {
                    // a drain's end does not fail
                }
            }
        }
        graph.releaseUnused(); // children replaced or detached, opened by their parent only
    }

    /**
     * QEMU's {@code bdrv_reopen_set_read_only}: the node keeps its options and children (each
     * named as it is), only {@code read-only} changes; the children it opened itself follow.
     */
    void setReadOnly(GraphNode node, boolean readOnly) {
        ObjectNode o = node.explicitOptions() == null
                ? tools.jackson.databind.node.JsonNodeFactory.instance.objectNode() : node.explicitOptions().deepCopy();
        for (Edge e : node.children()) {
            o.put(e.name(), e.child().name());
        }
        o.put("read-only", readOnly);
        enqueue(node, o, null, null, false);
        execute();
    }

    // ---- the QAPI check ------------------------------------------------------------------------

    /** QEMU's visitor on one {@code BlockdevOptions}: driver, required members, nested refs, unknown members. */
    private void validate(JsonNode entry, String prefix) {
        Options o = new Options(entry, prefix);
        String driverName = o.string("driver");
        BlockDriver driver = graph.drivers().get(driverName);
        if (driver == null) {
            // QEMU names the union's tag without the path to it
            throw new CommandException("Parameter 'driver' does not accept value '" + driverName + "'");
        }
        for (String flag : List.of("read-only", "auto-read-only", "force-share")) {
            JsonNode v = entry.get(flag);
            if (v != null && !v.isBoolean()) { // QMP's booleans are JSON's, not the command line's "on"
                throw o.type(flag, "boolean");
            }
        }
        NodeOptions.read(new Options(entry.deepCopy(), prefix), null); // the enums' values (QEMU names them unprefixed)
        for (String g : GENERIC) {
            o.raw(g);
        }
        o.raw("force-share");
        List<OptionSpec> specs = driver.options();
        for (OptionSpec spec : specs) {
            JsonNode v = o.raw(spec.name());
            if (v == null) {
                if (!spec.optional()) {
                    throw o.missing(spec.name());
                }
                continue;
            }
            boolean ref = spec.type().startsWith("BlockdevRef");
            if (ref && v.isObject()) {
                validate(v, prefix + spec.name() + ".");
            } else if (ref && !v.isString() && !(v.isNull() && spec.type().equals("BlockdevRefOrNull"))) {
                // QEMU's alternate names the member without its path, and the alternate by its type
                throw new CommandException("Invalid parameter type for '" + spec.name() + "', expected: " + spec.type());
            }
        }
        if (!specs.isEmpty()) {
            o.checkAllUsed();
        }
    }

    // ---- the queue -----------------------------------------------------------------------------

    /**
     * Queues {@code node} with {@code options}, then the children it opened itself, as QEMU's
     * {@code bdrv_reopen_queue_child}: a child named by its own name in the options keeps its
     * options (and takes {@code read-only} from the parent only if the parent says it); a child
     * given as an object gets those options; a child replaced or detached is not reopened.
     */
    private void enqueue(GraphNode node, ObjectNode options, Entry parent, Edge via, boolean keepOld) {
        String prefix = parent == null ? "" : parent.prefix + via.name() + ".";
        Entry queued = queue.stream().filter(q -> q.node == node).findFirst().orElse(null);
        if (queued != null) { // queued already: what it was given there stands where these options are silent
            if (keepOld) {
                options = queued.explicit.deepCopy();
            } else {
                for (String k : queued.explicit.propertyNames()) {
                    if (!options.has(k)) {
                        options.set(k, queued.explicit.get(k).deepCopy());
                    }
                }
            }
        }
        ObjectNode explicit = options.deepCopy();
        if (!options.has("read-only") && parent != null) {
            boolean readOnly;
            if (via.role() == ChildRole.COW) {
                readOnly = true; // QEMU opens backing files read-only unless told otherwise
            } else if (parent.options.has("read-only")) {
                readOnly = parent.options.get("read-only").asBoolean();
            } else {
                readOnly = keepOld ? node.isReadOnly() : parent.newOptions.readOnly();
            }
            options.put("read-only", readOnly);
        }
        queue.removeIf(e -> e.node == node); // one entry a node, with the options merged above
        Entry entry = new Entry(node, options, explicit, prefix);
        entry.newOptions = NodeOptions.read(new Options(options.deepCopy(), ""), parent == null ? null : parent.newOptions);
        queue.add(entry);
        for (Edge e : node.children()) {
            GraphNode child = e.child();
            if (child.monitorOwned()) {
                continue; // a node of its own: a reference to it reopens nothing there
            }
            JsonNode ref = options.get(e.name());
            if (ref == null) {
                continue;
            }
            if (ref.isObject()) {
                enqueue(child, (ObjectNode) ref.deepCopy(), entry, e, false);
            } else if (ref.isString() && ref.asString().equals(child.name())) {
                ObjectNode old = child.explicitOptions() == null ? options.objectNode() : child.explicitOptions().deepCopy();
                enqueue(child, old, entry, e, true);
            }
        }
    }

    // ---- prepare -------------------------------------------------------------------------------

    /** QEMU's {@code bdrv_reopen_prepare}, in its order of checks; graph changes are undoable. */
    private void prepare(Entry e) {
        GraphNode node = e.node;
        if (NO_REOPEN.contains(node.driver())) {
            throw new CommandException("Block format '" + node.driver() + "' used by node '" + node.name()
                    + "' does not support reopening files");
        }
        ObjectNode explicit = node.explicitOptions() == null ? e.options.objectNode() : node.explicitOptions();
        Set<String> childKeys = childKeys(node);
        Set<String> mutable = MUTABLE.getOrDefault(node.driver(), Set.of());
        for (String k : explicit.propertyNames()) {
            if (!e.options.has(k) && !GENERIC.contains(k) && !mutable.contains(k) && !childKeys.contains(k)
                    && !(k.equals("backing") && explicit.get(k).isNull())) {
                throw new CommandException("Option '" + k + "' cannot be reset to its default value");
            }
        }
        if (e.newOptions.cacheDirect() != node.options().cacheDirect()
                && node.driverNode() instanceof io.blockjobs.platform.image.FileNode) {
            // QEMU reopens the file with or without O_DIRECT; blockjobd cannot yet: refused, not ignored
            throw new CommandException("blockjobd cannot change 'cache.direct' of node '" + node.name()
                    + "' by reopening it; add a node with the new mode instead");
        }
        boolean supportsBacking = node.driverNode().supportsBacking();
        boolean headerBacking = node.driverNode() instanceof Qcow2Node q && q.backingFileName() != null;
        if (supportsBacking && !e.options.has("backing") && (node.backingNode() != null || headerBacking)) {
            throw new CommandException("backing is missing for '" + node.name() + "'");
        }
        relink(e, "backing");
        relink(e, "file");
        for (String k : e.options.propertyNames()) {
            if (GENERIC.contains(k) || mutable.contains(k)) {
                continue;
            }
            JsonNode now = e.options.get(k);
            if (childKeys.contains(k)) {
                Edge child = node.child(k);
                if (now.isString() || now.isNull() || (child != null && !child.child().monitorOwned())) {
                    continue; // relinked above, or the inline child reopened as its own entry
                }
                String first = now.propertyNames().iterator().hasNext() ? now.propertyNames().iterator().next() : "";
                throw new CommandException("Cannot change the option '" + k + "." + (now.has("driver") ? "driver" : first) + "'");
            }
            String changed = firstDifference(k, now, explicit.get(k));
            if (changed != null) {
                throw new CommandException("Cannot change the option '" + changed + "'");
            }
        }
    }

    /** The keys that name children: the driver's references and the node's present children. */
    private Set<String> childKeys(GraphNode node) {
        Set<String> keys = new HashSet<>();
        BlockDriver d = graph.drivers().get(node.driver());
        if (d != null) {
            for (OptionSpec s : d.options()) {
                if (s.type().startsWith("BlockdevRef")) {
                    keys.add(s.name());
                }
            }
        }
        for (Edge e : node.children()) {
            keys.add(e.name());
        }
        return keys;
    }

    /** The first flattened key where the values differ ({@code a.b}), or null if equal. */
    private static String firstDifference(String key, JsonNode now, JsonNode old) {
        if (now != null && old != null && now.isObject() && old.isObject()) {
            for (String k : now.propertyNames()) {
                String d = firstDifference(key + "." + k, now.get(k), old.get(k));
                if (d != null) {
                    return d;
                }
            }
            for (String k : old.propertyNames()) {
                if (!now.has(k)) {
                    return key + "." + k;
                }
            }
            return null;
        }
        if (now == null || old == null) {
            return now == old ? null : key;
        }
        if (now.isNumber() && old.isNumber()) {
            return now.asString().equals(old.asString()) ? null : key;
        }
        return now.equals(old) ? null : key;
    }

    /** QEMU's {@code bdrv_reopen_parse_file_or_backing}: a child named anew, or detached (backing: null). */
    private void relink(Entry e, String childName) {
        JsonNode v = e.options.get(childName);
        if (v == null || v.isObject()) {
            return;
        }
        GraphNode node = e.node;
        boolean backing = childName.equals("backing");
        GraphNode target = null;
        if (v.isString()) {
            target = graph.lookup(null, v.asString());
            if (target == node || target.subtree().contains(node)) {
                throw new CommandException("Making '" + v.asString() + "' a " + childName + " child of '" + node.name()
                        + "' would create a cycle");
            }
        }
        Edge edge = node.child(childName);
        GraphNode old = edge == null ? null : edge.child();
        if (old == target) {
            return;
        }
        if (old != null) {
            GraphNode below = old;
            while (BlockGraph.JOB_FILTERS.contains(below.driver()) && below.filteredEdge() != null) {
                below = below.filteredEdge().child();
            }
            if (below == target) {
                return;
            }
            if (BlockGraph.JOB_FILTERS.contains(old.driver())) {
                throw new CommandException("Cannot replace implicit " + childName + " child of " + node.name());
            }
        }
        if (node.isFilter() && old == null) {
            throw new CommandException("'" + node.name() + "' is a " + node.driver() + " filter node that does not support a "
                    + childName + " child");
        }
        if (edge != null && (edge.frozen() || graph.frozen(edge))) {
            throw new CommandException("Cannot change frozen '" + childName + "' link from '" + node.name() + "' to '"
                    + old.name() + "'");
        }
        if (backing && !node.isFilter() && !node.driverNode().supportsBacking()) {
            throw new CommandException("Driver '" + node.driver() + "' of node '" + node.name()
                    + "' does not support backing files");
        }
        if (backing && !node.isFilter()) {
            GraphNode was = old;
            graph.relinkBacking(node, target);
            undo.add(() -> graph.relinkBacking(node, was));
            return;
        }
        if (edge == null) {
            throw new CommandException("Cannot set file child to format node without file child");
        }
        GraphNode was = old;
        GraphNode to = target;
        BlockGraph.moveParents(List.of(edge), was, to);
        undo.add(() -> BlockGraph.moveParents(List.of(edge), to, was));
    }

    // ---- commit --------------------------------------------------------------------------------

    /** The drivers' mode changes done so far, undone (in reverse) if a later step fails. */
    private final List<Runnable> driverUndo = new ArrayList<>();

    /**
     * Nodes made read-only, from the top down: the layers above (bitmaps) store what they keep
     * in the image, then the driver writes what it holds and gives up its write locks.
     */
    private void driversReadOnly(Map<GraphNode, Boolean> wasReadOnly) {
        for (Entry e : queue) {
            if (!wasReadOnly.get(e.node) && e.newOptions.readOnly()) {
                for (BlockGraph.NodeListener l : graph.listeners()) {
                    l.reopeningReadOnly(e.node);
                }
                if (e.node.driverNode() instanceof ReadOnlyReopen r) {
                    step(r::reopenReadOnly);
                    driverUndo.add(() -> quietly(() -> e.node.driverNode().reopenReadWrite()));
                }
                driverUndo.add(() -> graph.listeners().forEach(l -> l.reopenedReadWrite(e.node)));
            }
        }
    }

    /**
     * Nodes made writable, from the bottom up (a file before its image, so the image can write
     * its header); a lock another process holds refuses, as in QEMU.
     */
    private void driversReadWrite(Map<GraphNode, Boolean> wasReadOnly) {
        for (Entry e : queue.reversed()) {
            if (wasReadOnly.get(e.node) && !e.newOptions.readOnly()) {
                try {
                    step(() -> e.node.driverNode().reopenReadWrite());
                } catch (UnsupportedOperationException ex) {
                    throw new CommandException("Block format '" + e.node.driver() + "' used by node '" + e.node.name()
                            + "' does not support reopening files");
                }
                if (e.node.driverNode() instanceof ReadOnlyReopen r) {
                    driverUndo.add(() -> quietly(r::reopenReadOnly));
                }
            }
        }
    }

    private static void step(IoStep s) {
        try {
            s.run();
        } catch (io.blockjobs.platform.image.ImageLockedException ex) {
            throw new CommandException(ex.qemuMessage());
        } catch (IOException ex) {
            throw new CommandException(BlockGraph.message(ex));
        }
    }

    private interface IoStep {
        void run() throws IOException;
    }

    private static void quietly(IoStep step) {
        try {
            step.run();
        } catch (IOException | RuntimeException ignored) {
            // undoing a mode change that just worked the other way
        }
    }
}
