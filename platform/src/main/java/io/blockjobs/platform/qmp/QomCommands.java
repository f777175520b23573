package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonProperty;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.throttle.ThrottleConfig;
import io.blockjobs.platform.throttle.ThrottleGroupImpl;
import io.blockjobs.platform.throttle.ThrottleGroupProperties;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.NullNode;

/**
 * QEMU's QOM commands over blockjobs' objects: {@code qom-list}, {@code qom-get},
 * {@code qom-set}, {@code qom-list-types} and {@code qom-list-properties}. The tree is
 * qemu-storage-daemon's for the parts blockjobs has: the root container, {@code /objects}, and
 * there one child per object ({@code child<TYPE>}). Types are the ones blockjobs creates, with
 * their QOM ancestry, so {@code implements} filters as in QEMU.
 */
public final class QomCommands {
    private static final String USER_CREATABLE = "user-creatable";

    /** One QOM type: its parent, whether abstract, its interfaces, and its properties (name to type). */
    private record QomType(String name, String parent, boolean isAbstract, List<String> interfaces,
                           Map<String, String> properties) {
    }

    /** QMP's {@code ObjectPropertyInfo} (QEMU leaves out its optional members for these objects). */
    public record PropertyInfo(String name, String type) {
    }

    /** QMP's {@code ObjectTypeInfo}. */
    public record TypeInfo(String name, @JsonProperty("abstract") Optional<Boolean> isAbstract, Optional<String> parent) {
    }

    public record PathArgs(String path) {
    }

    public record GetArgs(String path, String property) {
    }

    public record SetArgs(String path, String property, JsonNode value) {
    }

    public record ListTypesArgs(@JsonProperty("implements") Optional<String> implementsType, @JsonProperty("abstract") Optional<Boolean> isAbstract) {
    }

    public record ListPropertiesArgs(String typename) {
    }

    /** A resolved path: a container (object null) or an object of {@code /objects}. */
    private record Resolved(String path, String type, Object object) {
    }

    /** The throttle group's properties in qemu-storage-daemon's order. */
    private static final List<String> THROTTLE_ORDER = List.of(
            "x-bps-write-max-length", "x-iops-total-max-length", "x-iops-size", "limits", "x-bps-total",
            "x-iops-read-max-length", "x-bps-write", "x-iops-write-max-length", "x-bps-read-max",
            "x-iops-read-max", "x-bps-total-max", "x-bps-read-max-length", "x-iops-read", "x-bps-read",
            "x-bps-write-max", "x-iops-total-max", "x-iops-total", "x-iops-write", "x-bps-total-max-length",
            "x-iops-write-max");

    private static final Map<String, QomType> TYPES = types();

    private QomCommands() {
    }

    private static Map<String, QomType> types() {
        Map<String, QomType> t = new LinkedHashMap<>();
        Map<String, String> none = Map.of();
        add(t, new QomType("object", null, true, List.of(), none));
        add(t, new QomType("interface", null, true, List.of(), none));
        add(t, new QomType(USER_CREATABLE, "interface", true, List.of(), none));
        add(t, new QomType("container", "object", false, List.of(), none));
        add(t, new QomType("secret_common", "object", true, List.of(USER_CREATABLE), SecretObject.COMMON_PROPERTIES));
        add(t, new QomType(SecretObject.QOM_TYPE, "secret_common", false, List.of(), SecretObject.PROPERTIES));
        add(t, new QomType("event-loop-base", "object", true, List.of(USER_CREATABLE), ints(EventLoopObject.MAIN_LOOP)));
        add(t, new QomType(EventLoopObject.IOTHREAD, "event-loop-base", false, List.of(), ints(EventLoopObject.IOTHREAD)));
        add(t, new QomType(EventLoopObject.MAIN_LOOP, "event-loop-base", false, List.of(), ints(EventLoopObject.MAIN_LOOP)));
        Map<String, String> throttle = new LinkedHashMap<>();
        THROTTLE_ORDER.forEach(p -> throttle.put(p, p.equals("limits") ? "ThrottleLimits" : "int"));
        add(t, new QomType(ThrottleGroupImpl.QOM_TYPE, "object", false, List.of(USER_CREATABLE), throttle));
        return t;
    }

    private static void add(Map<String, QomType> t, QomType type) {
        t.put(type.name(), type);
    }

    private static Map<String, String> ints(String eventLoopType) {
        Map<String, String> m = new LinkedHashMap<>();
        EventLoopObject.propertyNames(eventLoopType).forEach(p -> m.put(p, "int"));
        return m;
    }

    public static void register(QmpDispatcher d, BlockGraph graph) {
        d.register(QmpCommand.of("qom-list", PathArgs.class, QmpTypes.listOf(PropertyInfo.class),
                a -> list(graph, resolve(graph, a.path()))));
        d.register(QmpCommand.of("qom-get", GetArgs.class, JsonNode.class,
                a -> get(graph, resolve(graph, a.path()), a.property())));
        d.register(QmpCommand.of("qom-set", SetArgs.class, null, a -> {
            set(graph, resolve(graph, a.path()), a.property(), a.value() == null ? NullNode.getInstance() : a.value());
            return null;
        }));
        d.register(QmpCommand.of("qom-list-types", ListTypesArgs.class, QmpTypes.listOf(TypeInfo.class),
                a -> listTypes(a.implementsType().orElse(null), a.isAbstract().orElse(false))));
        d.register(QmpCommand.of("qom-list-properties", ListPropertiesArgs.class, QmpTypes.listOf(PropertyInfo.class),
                a -> listProperties(a.typename())));
    }

    /** The QOM type name of an object of the graph, or null for one QOM does not show. */
    static String typeOf(Object o) {
        if (o instanceof ThrottleGroupImpl) {
            return ThrottleGroupImpl.QOM_TYPE;
        }
        if (o instanceof SecretObject) {
            return SecretObject.QOM_TYPE;
        }
        if (o instanceof EventLoopObject e) {
            return e.type();
        }
        return null;
    }

    // ---- paths ---------------------------------------------------------------------------------

    /** Every node of the tree, root first. */
    private static List<Resolved> tree(BlockGraph graph) {
        List<Resolved> all = new ArrayList<>();
        all.add(new Resolved("/", "container", null));
        all.add(new Resolved("/objects", "container", null));
        graph.objects().forEach((id, o) -> {
            String type = typeOf(o);
            if (type != null) {
                all.add(new Resolved("/objects/" + id, type, o));
            }
        });
        return all;
    }

    /**
     * QEMU's {@code object_resolve_path}: an absolute path walks from the root (empty components
     * skipped); a partial one matches the end of exactly one node's path.
     */
    private static Resolved resolve(BlockGraph graph, String path) {
        List<String> parts = components(path);
        List<Resolved> tree = tree(graph);
        if (path.startsWith("/")) {
            String canonical = "/" + String.join("/", parts);
            for (Resolved r : tree) {
                if (r.path().equals(canonical)) {
                    return r;
                }
            }
            throw notFound(path);
        }
        Resolved found = null;
        for (Resolved r : tree) {
            List<String> own = components(r.path());
            if (own.size() >= parts.size() && own.subList(own.size() - parts.size(), own.size()).equals(parts)) {
                if (found != null) {
                    throw new CommandException("Path '" + path + "' is ambiguous");
                }
                found = r;
            }
        }
        if (found == null) {
            throw notFound(path);
        }
        return found;
    }

    private static List<String> components(String path) {
        List<String> parts = new ArrayList<>();
        for (String p : path.split("/")) {
            if (!p.isEmpty()) {
                parts.add(p);
            }
        }
        return parts;
    }

    private static CommandException notFound(String path) {
        return new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Device '" + path + "' not found");
    }

    /** A container's children: the root's {@code objects}, or {@code /objects}' objects. */
    private static Map<String, String> children(BlockGraph graph, Resolved r) {
        Map<String, String> children = new LinkedHashMap<>();
        if (r.path().equals("/")) {
            children.put("objects", "container");
        } else if (r.path().equals("/objects")) {
            graph.objects().forEach((id, o) -> {
                String type = typeOf(o);
                if (type != null) {
                    children.put(id, type);
                }
            });
        }
        return children;
    }

    // ---- the commands --------------------------------------------------------------------------

    private static List<PropertyInfo> list(BlockGraph graph, Resolved r) {
        List<PropertyInfo> out = new ArrayList<>();
        out.add(new PropertyInfo("type", "string"));
        if (r.object() == null) {
            children(graph, r).forEach((name, type) -> out.add(new PropertyInfo(name, "child<" + type + ">")));
        } else {
            TYPES.get(r.type()).properties().forEach((name, type) -> out.add(new PropertyInfo(name, type)));
        }
        return out;
    }

    private static Object get(BlockGraph graph, Resolved r, String property) {
        if (property.equals("type")) {
            return r.type();
        }
        Object o = r.object();
        if (o == null) {
            // A container's other properties are its children; a child's value is its path.
            if (children(graph, r).containsKey(property)) {
                return (r.path().equals("/") ? "" : r.path()) + "/" + property;
            }
            throw propertyNotFound(r, property);
        }
        if (!TYPES.get(r.type()).properties().containsKey(property)) {
            throw propertyNotFound(r, property);
        }
        if (o instanceof ThrottleGroupImpl g) {
            Map<String, Long> limits = g.config().toLimits();
            return property.equals("limits") ? limits : limits.get(property.substring("x-".length()));
        }
        if (o instanceof SecretObject s) {
            return s.get(property);
        }
        return ((EventLoopObject) o).get(property);
    }

    private static void set(BlockGraph graph, Resolved r, String property, JsonNode value) {
        Object o = r.object();
        if (property.equals("type") || o == null && children(graph, r).containsKey(property)) {
            throw new CommandException("Property '" + r.type() + "." + property + "' is not writable");
        }
        if (o == null || !TYPES.get(r.type()).properties().containsKey(property)) {
            throw propertyNotFound(r, property);
        }
        if (o instanceof ThrottleGroupImpl g) {
            if (!property.equals("limits")) {
                throw new CommandException("Property cannot be set after initialization");
            }
            // QEMU's throttle_group_set_limits: the given members merged into the group's configuration.
            ThrottleConfig merged = ThrottleGroupProperties.parse(Map.of("limits", value), false).apply(g.config());
            g.reconfigure(merged);
        } else if (o instanceof SecretObject s) {
            if (property.equals("loaded")) {
                s.set(property, value); // refused: no setter, whatever the value
            }
            ObjectProperties.Member m = SecretObject.MEMBERS.stream()
                    .filter(x -> x.name().equals(property)).findFirst().orElseThrow();
            s.set(property, ObjectProperties.value(m, value, false));
        } else {
            ((EventLoopObject) o).set(property, value);
        }
    }

    private static CommandException propertyNotFound(Resolved r, String property) {
        return new CommandException("Property '" + r.type() + "." + property + "' not found");
    }

    private static List<TypeInfo> listTypes(String implementsType, boolean withAbstract) {
        List<TypeInfo> out = new ArrayList<>();
        for (QomType t : TYPES.values()) {
            if (t.isAbstract() && !withAbstract) {
                continue;
            }
            if (implementsType != null && !ancestry(t).contains(implementsType)) {
                continue;
            }
            out.add(new TypeInfo(t.name(), t.isAbstract() ? Optional.of(true) : Optional.empty(),
                    Optional.ofNullable(t.parent())));
        }
        return out;
    }

    /** A type, its parents and every interface they implement, with the interfaces' parents. */
    private static Set<String> ancestry(QomType t) {
        Set<String> names = new LinkedHashSet<>();
        for (QomType c = t; c != null; c = c.parent() == null ? null : TYPES.get(c.parent())) {
            names.add(c.name());
            for (String i : c.interfaces()) {
                names.addAll(ancestry(TYPES.get(i)));
            }
        }
        return names;
    }

    private static List<PropertyInfo> listProperties(String typename) {
        QomType t = TYPES.get(typename);
        if (t == null) {
            throw new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Class '" + typename + "' not found");
        }
        if (!ancestry(t).contains("object")) {
            throw new CommandException("Parameter 'typename' expects a QOM type");
        }
        List<PropertyInfo> out = new ArrayList<>();
        out.add(new PropertyInfo("type", "string"));
        t.properties().forEach((name, type) -> out.add(new PropertyInfo(name, type)));
        return out;
    }
}
