package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.throttle.ThrottleConfig;
import io.blockjobs.platform.throttle.ThrottleGroupImpl;
import io.blockjobs.platform.throttle.ThrottleGroupProperties;
import io.blockjobs.platform.throttle.Timebase;
import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * User-creatable objects: QMP {@code object-add} and {@code object-del}, and the command line's
 * {@code --object}, with QEMU's checks in QEMU's order: the properties' types (QAPI), the id,
 * the type's setters, the id's uniqueness, then the type's {@code complete}. The types are
 * {@code throttle-group}, {@code secret}, {@code iothread} and {@code main-loop}. Also
 * {@code x-blockdev-set-iothread}, which only checks its arguments: blockjobs has no iothreads
 * to move a node to. The QOM commands are {@link QomCommands}.
 */
public final class ObjectCommands {
    /** QEMU's {@code id_wellformed}. */
    private static final Pattern ID = Pattern.compile("[A-Za-z][A-Za-z0-9._-]*");
    /** The {@code qom-type} values blockjobs' {@code ObjectType} has. */
    private static final List<String> TYPES = List.of(ThrottleGroupImpl.QOM_TYPE, SecretObject.QOM_TYPE,
            EventLoopObject.IOTHREAD, EventLoopObject.MAIN_LOOP);

    private ObjectCommands() {
    }

    /** {@code object-del}'s arguments. */
    public record DelArgs(String id) {
    }

    public static void register(QmpDispatcher d, BlockGraph graph) {
        d.register(QmpCommand.of("object-add", JsonNode.class, null, a -> {
            add(graph, (ObjectNode) a, false);
            return null;
        }));
        d.register(QmpCommand.of("object-del", DelArgs.class, null, a -> {
            delete(graph, a.id());
            return null;
        }));
        d.register(QmpCommand.of("x-blockdev-set-iothread", JsonNode.class, null, a -> {
            setIothread(graph, a);
            return null;
        }));
        QomCommands.register(d, graph);
    }

    /**
     * Creates an object and adds it to the graph's objects.
     *
     * @param options {@code qom-type}, {@code id} and the type's properties
     * @param keyval  whether the values come from {@code key=value} syntax (all strings)
     */
    public static void add(BlockGraph graph, ObjectNode options, boolean keyval) {
        String type = string(options, "qom-type");
        if (!TYPES.contains(type)) {
            // ObjectType in blockjobs' schema has these values, so QAPI refuses the others.
            throw new CommandException("Parameter 'qom-type' does not accept value '" + type + "'");
        }
        String id = string(options, "id");
        Map<String, JsonNode> properties = new LinkedHashMap<>();
        for (String key : options.propertyNames()) {
            if (!key.equals("qom-type") && !key.equals("id")) {
                properties.put(key, options.get(key));
            }
        }
        Runnable unique = () -> {
            if (graph.object(id) != null) {
                throw new CommandException("attempt to add duplicate property '" + id + "' to object (type 'container')");
            }
        };
        Object created;
        if (type.equals(ThrottleGroupImpl.QOM_TYPE)) {
            ThrottleGroupProperties parsed = ThrottleGroupProperties.parse(properties, keyval);
            checkId(id);
            ThrottleConfig config = parsed.apply();
            unique.run();
            created = new ThrottleGroupImpl(id, config, Timebase.SYSTEM); // validates: QEMU's complete()
        } else if (type.equals(SecretObject.QOM_TYPE)) {
            Map<String, JsonNode> checked = ObjectProperties.check(properties, SecretObject.MEMBERS, keyval);
            checkId(id);
            created = SecretObject.create(graph, id, checked, unique);
        } else {
            Map<String, JsonNode> checked = ObjectProperties.check(properties, EventLoopObject.members(type), keyval);
            checkId(id);
            created = EventLoopObject.create(graph, type, id, checked, unique);
        }
        graph.addObject(id, created);
    }

    private static void checkId(String id) {
        if (!ID.matcher(id).matches()) {
            throw new CommandException("Parameter 'id' expects an identifier");
        }
    }

    /**
     * {@code object-del}: refused while a node uses a throttle group, and always for the main
     * loop, as QEMU's {@code can_be_deleted}. QEMU has no such check for secrets (a user copies
     * the value when it opens) nor for iothreads (qemu-storage-daemon 7.2 crashes when an
     * export's goes; blockjobd has nothing to stop).
     */
    public static void delete(BlockGraph graph, String id) {
        Object o = graph.object(id);
        if (o == null) {
            throw new CommandException("object '" + id + "' not found");
        }
        // QEMU's main loop object can never be deleted.
        if (o instanceof ThrottleGroupImpl g && !g.members().isEmpty()
                || o instanceof EventLoopObject e && e.type().equals(EventLoopObject.MAIN_LOOP)) {
            throw new CommandException("object '" + id + "' is in use, can not be deleted");
        }
        graph.removeObject(id);
    }

    /**
     * {@code x-blockdev-set-iothread}'s checks in QEMU's order: the node, then a user such as an
     * export or a job unless {@code force}, then the iothread ({@code null}: the main loop).
     */
    private static void setIothread(BlockGraph graph, JsonNode a) {
        String nodeName = string((ObjectNode) a, "node-name");
        JsonNode iothread = a.get("iothread");
        if (iothread == null) {
            throw new CommandException("Parameter 'iothread' is missing");
        }
        if (!iothread.isString() && !iothread.isNull()) {
            throw new CommandException("Invalid parameter type for 'iothread', expected: StrOrNull");
        }
        JsonNode force = a.get("force");
        if (force != null && !force.isBoolean()) {
            throw new CommandException("Invalid parameter type for 'force', expected: boolean");
        }
        for (String key : a.propertyNames()) {
            if (!List.of("node-name", "iothread", "force").contains(key)) {
                throw new CommandException("Parameter '" + key + "' is unexpected");
            }
        }
        var node = graph.find(nodeName);
        if (node == null) {
            throw new CommandException("Failed to find node with node-name='" + nodeName + "'");
        }
        boolean hasUser = graph.roots().stream().anyMatch(e -> e.child() == node);
        if (!(force != null && force.asBoolean()) && hasUser) {
            throw new CommandException("Node " + nodeName + " is associated with a BlockBackend and could be in use"
                    + " (use force=true to override this check)");
        }
        if (iothread.isString()) {
            EventLoopObject.iothread(graph, iothread.asString(), "Cannot find iothread %s");
        }
    }

    private static String string(ObjectNode options, String key) {
        JsonNode v = options.get(key);
        if (v == null || v.isNull()) {
            throw new CommandException("Parameter '" + key + "' is missing");
        }
        if (!v.isString()) {
            throw new CommandException("Invalid parameter type for '" + key + "', expected: string");
        }
        return v.asString();
    }
}
