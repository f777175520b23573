package io.blockjobs.sdk.testkit;

import com.fasterxml.jackson.annotation.JsonInclude;
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
import java.util.Locale;
import java.util.Optional;
import java.util.Set;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.DeserializationFeature;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.PropertyNamingStrategies;
import tools.jackson.databind.json.JsonMapper;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.JsonNodeFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * A command's arguments from JSON text, exactly as the platform's QMP layer makes them
 * ({@code QmpTypes.check}, then its Jackson mapper): members in kebab-case (or as
 * {@code @JsonProperty} names them), {@code Optional} components optional, a missing required
 * member, an unknown member or a value of the wrong type refused with QEMU's message, enums by
 * their QMP name ({@code "on-error": "stop"}).
 *
 * <pre>{@code
 * StreamJob.Args args = QmpArguments.parse(StreamJob.Args.class,
 *         "{\"job-id\": \"j\", \"device\": \"top\", \"speed\": 1048576}");
 * }</pre>
 */
public final class QmpArguments {
    private static final ObjectMapper MAPPER = JsonMapper.builder()
            .propertyNamingStrategy(PropertyNamingStrategies.KEBAB_CASE)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .changeDefaultPropertyInclusion(v -> v.withValueInclusion(JsonInclude.Include.NON_ABSENT))
            .build();

    private QmpArguments() {
    }

    /**
     * The argument record {@code type} from {@code json} (a JSON object: QMP's {@code arguments}).
     *
     * @throws CommandException with QEMU's message if the arguments do not fit the record
     * @throws IllegalArgumentException if {@code json} is not JSON
     */
    public static <A> A parse(Class<A> type, String json) {
        JsonNode tree = tree(json);
        JsonNode checked = check(tree, type, "");
        try {
            return MAPPER.treeToValue(checked, type);
        } catch (JacksonException e) {
            throw new CommandException(e.getOriginalMessage());
        }
    }

    /** {@code json} with member {@code name} set to {@code value} (a string, number, boolean or null). */
    public static String with(String json, String name, Object value) {
        ObjectNode o = object(json);
        o.set(name, MAPPER.valueToTree(value));
        return o.toString();
    }

    /** {@code json} without member {@code name}. */
    public static String without(String json, String name) {
        ObjectNode o = object(json);
        o.remove(name);
        return o.toString();
    }

    /** The value of member {@code name} of {@code json} as text, or null. */
    public static String member(String json, String name) {
        JsonNode v = object(json).get(name);
        return v == null || v.isNull() ? null : v.isString() ? v.asString() : v.toString();
    }

    private static ObjectNode object(String json) {
        if (!(tree(json) instanceof ObjectNode o)) {
            throw new IllegalArgumentException("not a JSON object: " + json);
        }
        return o;
    }

    private static JsonNode tree(String json) {
        try {
            JsonNode tree = MAPPER.readTree(json);
            if (tree == null || tree.isMissingNode()) {
                throw new IllegalArgumentException("no JSON in '" + json + "'");
            }
            return tree;
        } catch (JacksonException e) {
            throw new IllegalArgumentException("not JSON: " + e.getOriginalMessage() + " in '" + json + "'", e);
        }
    }

    /** The member name of a record component, as the platform's {@code QmpTypes.memberName}. */
    public static String memberName(Class<?> record, RecordComponent c) {
        try {
            JsonProperty p = record.getDeclaredField(c.getName()).getAnnotation(JsonProperty.class);
            if (p != null && !p.value().isEmpty()) {
                return p.value();
            }
        } catch (NoSuchFieldException e) {
            // records always have the field
        }
        return c.getName().replaceAll("([a-z0-9])([A-Z])", "$1-$2").toLowerCase(Locale.ROOT);
    }

    /** The QMP names of an enum's constants. */
    public static List<String> enumValues(Class<?> type) {
        List<String> values = new ArrayList<>();
        for (Object c : type.getEnumConstants()) {
            values.add(enumName((Enum<?>) c));
        }
        return values;
    }

    private static String enumName(Enum<?> e) {
        for (var m : e.getDeclaringClass().getMethods()) {
            if (m.isAnnotationPresent(JsonValue.class) && m.getParameterCount() == 0) {
                try {
                    return String.valueOf(m.invoke(e));
                } catch (ReflectiveOperationException ex) {
                    break;
                }
            }
        }
        return e.name().toLowerCase(Locale.ROOT).replace('_', '-');
    }

    /** Checks {@code value} against {@code type}, as the platform's {@code QmpTypes.check} (JSON input). */
    static JsonNode check(JsonNode value, Type type, String path) {
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
            // bind by the constant's Java name: QMP spells it in kebab-case
            return JsonNodeFactory.instance.stringNode(((Enum<?>) raw.getEnumConstants()[index]).name());
        }
        if (raw == List.class) {
            if (!value.isArray()) {
                throw typeError(path, "array");
            }
            Type element = ((ParameterizedType) type).getActualTypeArguments()[0];
            ArrayNode result = JsonNodeFactory.instance.arrayNode();
            for (int i = 0; i < value.size(); i++) {
                result.add(check(value.get(i), element, path + "[" + i + "]"));
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
                result.set(name, check(member, memberType, prefix + name));
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

    private static Class<?> rawClass(Type type) {
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
