package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonValue;
import io.blockjobs.sdk.error.CommandException;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.JsonNodeFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * QMP's view of Java types: argument records are checked against their declared members with
 * QEMU's messages before anything happens, and described for {@code query-qmp-schema}.
 *
 * <p>A command's arguments are a record; its components are members named in kebab-case (or
 * by {@code @JsonProperty}); an {@code Optional} component is an optional member. Member types:
 * {@code String}, {@code Long}/{@code Integer}, {@code Boolean}, {@code Double}, an enum (by its
 * {@code @JsonValue} or lower-case kebab name), {@code List<T>}, a nested record, a
 * {@link QmpAlternate} record, or {@code JsonNode} for "any".
 */
public final class QmpTypes {

    private QmpTypes() {
    }

    /** The member name of a record component. */
    public static String memberName(Class<?> record, RecordComponent c) {
        try {
            JsonProperty p = record.getDeclaredField(c.getName()).getAnnotation(JsonProperty.class);
            if (p != null && !p.value().isEmpty()) {
                return p.value();
            }
        } catch (NoSuchFieldException e) {
            // records always have the field
        }
        return c.getName().replaceAll("([a-z0-9])([A-Z])", "$1-$2").toLowerCase(java.util.Locale.ROOT);
    }

    /** QMP names of an enum's constants. */
    public static List<String> enumValues(Class<?> type) {
        List<String> values = new ArrayList<>();
        for (Object c : type.getEnumConstants()) {
            values.add(enumName((Enum<?>) c));
        }
        return values;
    }

    static String enumName(Enum<?> e) {
        for (var m : e.getDeclaringClass().getMethods()) {
            if (m.isAnnotationPresent(JsonValue.class) && m.getParameterCount() == 0) {
                try {
                    return String.valueOf(m.invoke(e));
                } catch (ReflectiveOperationException ex) {
                    break;
                }
            }
        }
        return e.name().toLowerCase(java.util.Locale.ROOT).replace('_', '-');
    }

    /**
     * Checks {@code value} against {@code type}; returns it with command-line strings converted
     * to the member types ({@code writable=on}) when {@code keyval} is set.
     *
     * @throws CommandException with QEMU's message for the first problem found
     */
    public static JsonNode check(JsonNode value, Type type, String path, boolean keyval) {
        Class<?> raw = rawClass(type);
        if (raw == JsonNode.class || raw == Object.class) {
            return value;
        }
        if (raw == String.class) {
            if (!value.isString()) {
                throw typeError(path, "string");
            }
            return value;
        }
        if (raw == Long.class || raw == long.class || raw == Integer.class || raw == int.class) {
            if (value.isIntegralNumber() && value.canConvertToLong()
                    && (raw == Long.class || raw == long.class || value.canConvertToInt())) {
                return value;
            }
            if (keyval && value.isString()) {
                try {
                    return JsonNodeFactory.instance.numberNode(Long.parseLong(value.asString()));
                } catch (NumberFormatException e) {
                    // fall through
                }
            }
            throw typeError(path, "integer");
        }
        if (raw == Double.class || raw == double.class) {
            if (value.isNumber()) {
                return value;
            }
            throw typeError(path, "number");
        }
        if (raw == Boolean.class || raw == boolean.class) {
            if (value.isBoolean()) {
                return value;
            }
            if (keyval && value.isString()) {
                switch (value.asString()) {
                    case "on", "yes", "true" -> {
                        return JsonNodeFactory.instance.booleanNode(true);
                    }
                    case "off", "no", "false" -> {
                        return JsonNodeFactory.instance.booleanNode(false);
                    }
                    default -> { }
                }
            }
            throw typeError(path, "boolean");
        }
        if (raw.isEnum()) {
            if (!value.isString()) {
                throw typeError(path, "string");
            }
            int index = enumValues(raw).indexOf(value.asString());
            if (index < 0) {
                throw new CommandException("Parameter '" + path + "' does not accept value '" + value.asString() + "'");
            }
            // Bind by the constant's Java name: QMP spells it in kebab-case.
            return JsonNodeFactory.instance.stringNode(((Enum<?>) raw.getEnumConstants()[index]).name());
        }
        QmpAlternate alternate = raw.getAnnotation(QmpAlternate.class);
        if (alternate != null) {
            if (value.isString()) {
                return value;
            }
            if (value.isObject()) {
                return check(value, alternate.object(), path, keyval);
            }
            // QEMU names a list element 'null' here: its visitor passes no name for elements.
            throw new CommandException("Invalid parameter type for '" + (path.endsWith("]") ? "null" : path)
                    + "', expected: " + alternate.name());
        }
        if (raw == List.class) {
            if (!value.isArray()) {
                throw typeError(path, "array");
            }
            Type element = ((ParameterizedType) type).getActualTypeArguments()[0];
            ArrayNode result = JsonNodeFactory.instance.arrayNode();
            for (int i = 0; i < value.size(); i++) {
                // As QEMU's visitors: bitmaps[0] in QMP, bitmaps.0 on the command line.
                result.add(check(value.get(i), element, path + (keyval ? "." + i : "[" + i + "]"), keyval));
            }
            return result;
        }
        if (raw.isRecord()) {
            if (!value.isObject()) {
                throw typeError(path, "object");
            }
            ObjectNode result = JsonNodeFactory.instance.objectNode();
            Set<String> known = new HashSet<>();
            String prefix = path.isEmpty() ? "" : path + ".";
            for (RecordComponent c : raw.getRecordComponents()) {
                String name = memberName(raw, c);
                known.add(name);
                JsonNode member = value.get(name);
                boolean optional = c.getType() == Optional.class;
                if (member == null || member.isNull() && optional) {
                    if (!optional) {
                        throw new CommandException("Parameter '" + prefix + name + "' is missing");
                    }
                    continue;
                }
                Type memberType = optional ? ((ParameterizedType) c.getGenericType()).getActualTypeArguments()[0]
                        : c.getGenericType();
                result.set(name, check(member, memberType, prefix + name, keyval));
            }
            for (Iterator<String> it = value.propertyNames().iterator(); it.hasNext(); ) {
                String name = it.next();
                if (!known.contains(name)) {
                    throw new CommandException("Parameter '" + prefix + name + "' is unexpected");
                }
            }
            return result;
        }
        throw new IllegalArgumentException("no QMP mapping for " + type);
    }

    /** The type {@code List<element>}, for commands that return a list. */
    public static Type listOf(Class<?> element) {
        return new ParameterizedType() {
            @Override
            public Type[] getActualTypeArguments() {
                return new Type[] {element};
            }

            @Override
            public Type getRawType() {
                return List.class;
            }

            @Override
            public Type getOwnerType() {
                return null;
            }

            @Override
            public boolean equals(Object o) {
                return o instanceof ParameterizedType p && p.getRawType() == List.class
                        && p.getActualTypeArguments()[0] == element;
            }

            @Override
            public int hashCode() {
                return List.class.hashCode() ^ element.hashCode();
            }
        };
    }

    static Class<?> rawClass(Type type) {
        if (type instanceof Class<?> c) {
            return c;
        }
        if (type instanceof ParameterizedType p) {
            return (Class<?>) p.getRawType();
        }
        throw new IllegalArgumentException("no QMP mapping for " + type);
    }

    private static CommandException typeError(String path, String expected) {
        return new CommandException("Invalid parameter type for '" + (path.isEmpty() ? "arguments" : path)
                + "', expected: " + expected);
    }
}
