package io.blockjobs.platform.qmp;

import io.blockjobs.platform.Json;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * Builds {@code query-qmp-schema}'s {@code SchemaInfo} list from the registered commands: types
 * get opaque numbers as in QEMU, optional members carry {@code "default": null}.
 */
final class QmpSchema {
    private final List<ObjectNode> entries = new ArrayList<>();
    private final Map<Type, String> names = new HashMap<>();
    private int counter;

    static List<ObjectNode> of(List<QmpCommand<?>> commands, Map<String, Class<?>> events) {
        return of(commands, events, Map.of());
    }

    /**
     * The schema; {@code drivers} (registered driver names and their options) make
     * {@code blockdev-add}'s argument QEMU's {@code BlockdevOptions} union, one variant a driver.
     */
    static List<ObjectNode> of(List<QmpCommand<?>> commands, Map<String, Class<?>> events,
                               Map<String, List<io.blockjobs.sdk.driver.OptionSpec>> drivers) {
        QmpSchema s = new QmpSchema();
        s.builtin("str", "string");
        s.builtin("int", "int");
        s.builtin("bool", "boolean");
        s.builtin("number", "number");
        s.builtin("any", "value");
        s.builtin("null", "null");
        String empty = s.emptyObject();
        String blockdevOptions = null;
        for (QmpCommand<?> c : commands) {
            ObjectNode e = Json.object().put("name", c.name()).put("meta-type", "command");
            if (c.name().equals("blockdev-add") && !drivers.isEmpty()) {
                blockdevOptions = blockdevOptions != null ? blockdevOptions : s.blockdevOptions(drivers);
                e.put("arg-type", blockdevOptions);
            } else if (c.name().equals("blockdev-reopen") && !drivers.isEmpty()) {
                blockdevOptions = blockdevOptions != null ? blockdevOptions : s.blockdevOptions(drivers);
                e.put("arg-type", s.reopenArguments(blockdevOptions)); // {'options': ['BlockdevOptions']}
            } else {
                e.put("arg-type", c.arguments() == Void.class ? empty : s.name(c.arguments()));
                if (c.name().equals("x-blockdev-amend") && !drivers.isEmpty()) {
                    s.memberType(e.get("arg-type").asString(), "options", s.amendOptions(drivers));
                }
            }
            e.put("ret-type", c.returns() == null || c.returns() == Void.class ? empty : s.name(c.returns()));
            s.entries.add(e);
        }
        ObjectNode caps = Json.object().put("name", "qmp_capabilities").put("meta-type", "command")
                .put("arg-type", empty).put("ret-type", empty);
        s.entries.add(caps);
        for (var ev : events.entrySet()) {
            ObjectNode e = Json.object().put("name", ev.getKey()).put("meta-type", "event");
            e.put("arg-type", ev.getValue() == null ? empty : s.name(ev.getValue()));
            s.entries.add(e);
        }
        return s.entries;
    }

    /** QEMU's {@code BlockdevOptions}: the base members, then a variant per registered driver. */
    private String blockdevOptions(Map<String, List<io.blockjobs.sdk.driver.OptionSpec>> drivers) {
        String union = String.valueOf(counter++);
        String driverEnum = String.valueOf(counter++);
        String ref = String.valueOf(counter++);
        String refOrNull = String.valueOf(counter++);
        String cache = String.valueOf(counter++);
        ObjectNode en = Json.object().put("name", driverEnum).put("meta-type", "enum");
        ArrayNode em = en.putArray("members");
        ArrayNode ev = en.putArray("values");
        drivers.keySet().stream().sorted().forEach(d -> {
            em.addObject().put("name", d);
            ev.add(d);
        });
        entries.add(en);
        ObjectNode r = Json.object().put("name", ref).put("meta-type", "alternate");
        r.putArray("members").add(Json.object().put("type", union)).add(Json.object().put("type", "str"));
        entries.add(r);
        ObjectNode rn = Json.object().put("name", refOrNull).put("meta-type", "alternate");
        rn.putArray("members").add(Json.object().put("type", union)).add(Json.object().put("type", "str"))
                .add(Json.object().put("type", "null"));
        entries.add(rn);
        ObjectNode c = Json.object().put("name", cache).put("meta-type", "object");
        c.putArray("members").add(optional("direct", "bool")).add(optional("no-flush", "bool"));
        entries.add(c);
        ObjectNode u = Json.object().put("name", union).put("meta-type", "object");
        u.putArray("members").add(Json.object().put("name", "driver").put("type", driverEnum))
                .add(optional("node-name", "str")).add(optional("discard", "str")).add(optional("cache", cache))
                .add(optional("read-only", "bool")).add(optional("auto-read-only", "bool"))
                .add(optional("force-share", "bool")).add(optional("detect-zeroes", "str"));
        u.put("tag", "driver");
        ArrayNode variants = u.putArray("variants");
        entries.add(u);
        drivers.entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(d -> {
            String t = String.valueOf(counter++);
            ObjectNode o = Json.object().put("name", t).put("meta-type", "object");
            ArrayNode members = o.putArray("members");
            for (io.blockjobs.sdk.driver.OptionSpec spec : d.getValue()) {
                String type = switch (spec.type()) {
                    case "BlockdevRef" -> ref;
                    case "BlockdevRefOrNull" -> refOrNull;
                    case "[BlockdevRef]" -> refList(ref);
                    default -> spec.type();
                };
                ObjectNode m = members.addObject().put("name", spec.name()).put("type", type);
                if (spec.optional()) {
                    m.putNull("default");
                }
            }
            entries.add(o);
            variants.addObject().put("case", d.getKey()).put("type", t);
        });
        return union;
    }

    /** The array type {@code [BlockdevRef]} (quorum's {@code children}), listed once. */
    private String refList(String ref) {
        String name = "[" + ref + "]";
        if (entries.stream().noneMatch(e -> e.path("name").asString().equals(name))) {
            entries.add(Json.object().put("name", name).put("meta-type", "array").put("element-type", ref));
        }
        return name;
    }

    /**
     * QEMU's {@code BlockdevAmendOptions}: a union on {@code driver} whose only variants with
     * members are {@code luks} (a keyslot's {@code state} and secrets) and {@code qcow2}
     * ({@code encrypt}).
     */
    private String amendOptions(Map<String, List<io.blockjobs.sdk.driver.OptionSpec>> drivers) {
        String union = String.valueOf(counter++);
        String driverEnum = String.valueOf(counter++);
        ObjectNode en = Json.object().put("name", driverEnum).put("meta-type", "enum");
        ArrayNode em = en.putArray("members");
        ArrayNode ev = en.putArray("values");
        java.util.TreeSet<String> names = new java.util.TreeSet<>(drivers.keySet());
        names.add("luks");
        names.forEach(d -> {
            em.addObject().put("name", d);
            ev.add(d);
        });
        entries.add(en);
        ObjectNode u = Json.object().put("name", union).put("meta-type", "object");
        u.putArray("members").add(Json.object().put("name", "driver").put("type", driverEnum));
        u.put("tag", "driver");
        ArrayNode variants = u.putArray("variants");
        entries.add(u);
        String luks = String.valueOf(counter++);
        ObjectNode l = Json.object().put("name", luks).put("meta-type", "object");
        l.putArray("members").add(Json.object().put("name", "state").put("type", "str"))
                .add(optional("new-secret", "str")).add(optional("old-secret", "str")).add(optional("keyslot", "int"))
                .add(optional("iter-time", "int")).add(optional("secret", "str"));
        entries.add(l);
        String qcow2 = String.valueOf(counter++);
        ObjectNode q = Json.object().put("name", qcow2).put("meta-type", "object");
        q.putArray("members").add(optional("encrypt", "any"));
        entries.add(q);
        variants.addObject().put("case", "luks").put("type", luks);
        variants.addObject().put("case", "qcow2").put("type", qcow2);
        return union;
    }

    /** Gives member {@code member} of object type {@code typeName} the type {@code type}. */
    private void memberType(String typeName, String member, String type) {
        for (ObjectNode e : entries) {
            if (e.path("name").asString().equals(typeName)) {
                for (JsonNode m : e.path("members")) {
                    if (m.path("name").asString().equals(member)) {
                        ((ObjectNode) m).put("type", type);
                    }
                }
            }
        }
    }

    /** {@code blockdev-reopen}'s arguments: {@code options}, a list of {@code BlockdevOptions}. */
    private String reopenArguments(String blockdevOptions) {
        String list = "[" + blockdevOptions + "]";
        entries.add(Json.object().put("name", list).put("meta-type", "array").put("element-type", blockdevOptions));
        String n = String.valueOf(counter++);
        ObjectNode o = Json.object().put("name", n).put("meta-type", "object");
        o.putArray("members").addObject().put("name", "options").put("type", list);
        entries.add(o);
        return n;
    }

    private static ObjectNode optional(String name, String type) {
        ObjectNode m = Json.object().put("name", name).put("type", type);
        m.putNull("default");
        return m;
    }

    private void builtin(String name, String jsonType) {
        entries.add(Json.object().put("name", name).put("meta-type", "builtin").put("json-type", jsonType));
    }

    private String emptyObject() {
        String n = String.valueOf(counter++);
        ObjectNode e = Json.object().put("name", n).put("meta-type", "object");
        e.putArray("members");
        entries.add(e);
        return n;
    }

    private String name(Type type) {
        String known = names.get(type);
        if (known != null) {
            return known;
        }
        Class<?> raw = QmpTypes.rawClass(type);
        if (raw == String.class) {
            return "str";
        }
        if (raw == Long.class || raw == long.class || raw == Integer.class || raw == int.class) {
            return "int";
        }
        if (raw == Boolean.class || raw == boolean.class) {
            return "bool";
        }
        if (raw == Double.class || raw == double.class) {
            return "number";
        }
        if (raw == JsonNode.class || raw == Object.class) {
            return "any";
        }
        if (raw == List.class) {
            String element = name(((ParameterizedType) type).getActualTypeArguments()[0]);
            String n = "[" + element + "]";
            names.put(type, n);
            entries.add(Json.object().put("name", n).put("meta-type", "array").put("element-type", element));
            return n;
        }
        String n = String.valueOf(counter++);
        names.put(type, n);
        ObjectNode e = Json.object().put("name", n);
        entries.add(e);
        QmpAlternate alternate = raw.getAnnotation(QmpAlternate.class);
        if (alternate != null) {
            e.put("meta-type", "alternate");
            String object = name(alternate.object());
            e.putArray("members").add(Json.object().put("type", "str")).add(Json.object().put("type", object));
            return n;
        }
        if (raw.isEnum()) {
            e.put("meta-type", "enum");
            ArrayNode members = e.putArray("members");
            ArrayNode values = e.putArray("values");
            for (String v : QmpTypes.enumValues(raw)) {
                members.addObject().put("name", v);
                values.add(v);
            }
            return n;
        }
        e.put("meta-type", "object");
        ArrayNode members = e.putArray("members");
        if (raw.isRecord()) {
            for (RecordComponent c : raw.getRecordComponents()) {
                boolean optional = c.getType() == Optional.class;
                Type t = optional ? ((ParameterizedType) c.getGenericType()).getActualTypeArguments()[0] : c.getGenericType();
                ObjectNode m = members.addObject().put("name", QmpTypes.memberName(raw, c)).put("type", name(t));
                if (optional) {
                    m.putNull("default");
                }
            }
        }
        return n;
    }
}
