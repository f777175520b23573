package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.throttle.ThrottleConfig;
import io.blockjobs.platform.throttle.ThrottleGroupImpl;
import io.blockjobs.platform.throttle.ThrottleGroupProperties;
import io.blockjobs.platform.throttle.Timebase;
import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Pattern;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * User-creatable objects: QMP {@code object-add} and {@code object-del}, and the command line's
 * {@code --object}, with QEMU's checks in QEMU's order. The one type is {@code throttle-group}.
 */
public final class ObjectCommands {
    /** QEMU's {@code id_wellformed}. */
    private static final Pattern ID = Pattern.compile("[A-Za-z][A-Za-z0-9._-]*");

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
    }

    /**
     * Creates an object and adds it to the graph's objects.
     *
     * @param options {@code qom-type}, {@code id} and the type's properties
     * @param keyval  whether the values come from {@code key=value} syntax (all strings)
     */
    public static void add(BlockGraph graph, ObjectNode options, boolean keyval) {
        String type = string(options, "qom-type");
        if (!type.equals(ThrottleGroupImpl.QOM_TYPE)) {
            // ObjectType in blockjobs' schema has this one value, so QAPI refuses the others.
            throw new CommandException("Parameter 'qom-type' does not accept value '" + type + "'");
        }
        String id = string(options, "id");
        Map<String, JsonNode> properties = new LinkedHashMap<>();
        for (String key : options.propertyNames()) {
            if (!key.equals("qom-type") && !key.equals("id")) {
                properties.put(key, options.get(key));
            }
        }
        ThrottleGroupProperties parsed = ThrottleGroupProperties.parse(properties, keyval);
        if (!ID.matcher(id).matches()) {
            throw new CommandException("Parameter 'id' expects an identifier");
        }
        ThrottleConfig config = parsed.apply();
        if (graph.object(id) != null) {
            throw new CommandException("attempt to add duplicate property '" + id + "' to object (type 'container')");
        }
        graph.addObject(id, new ThrottleGroupImpl(id, config, Timebase.SYSTEM)); // validates: QEMU's complete()
    }

    /** {@code object-del}: refused while a node uses the object, as QEMU's {@code can_be_deleted}. */
    public static void delete(BlockGraph graph, String id) {
        Object o = graph.object(id);
        if (o == null) {
            throw new CommandException("object '" + id + "' not found");
        }
        if (o instanceof ThrottleGroupImpl g && !g.members().isEmpty()) {
            throw new CommandException("object '" + id + "' is in use, can not be deleted");
        }
        graph.removeObject(id);
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
