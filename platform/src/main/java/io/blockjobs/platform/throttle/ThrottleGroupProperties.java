package io.blockjobs.platform.throttle;

import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * QEMU's {@code ThrottleGroupProperties} as {@code object-add} and {@code --object} give them:
 * {@code limits} (a {@code ThrottleLimits} object) and the unstable flat {@code x-*} aliases.
 * First every member is checked for its type and unexpected members are refused (QAPI's
 * visit, in the schema's order), then the properties are set in the order given, as QEMU's
 * setters run, each with its own checks.
 */
public final class ThrottleGroupProperties {
    private static final String LEGACY_PREFIX = "x-";

    /** One property to set: {@code limits} with its members, or one {@code x-} alias. */
    private record Setter(String name, Map<String, Long> limits, long value) {
    }

    private final List<Setter> setters;

    private ThrottleGroupProperties(List<Setter> setters) {
        this.setters = setters;
    }

    /**
     * Checks the properties' types and names.
     *
     * @param properties the object's members other than {@code qom-type} and {@code id}
     * @param keyval     whether the values come from the command line's {@code key=value}
     *                   syntax, where every value is a string
     */
    public static ThrottleGroupProperties parse(Map<String, JsonNode> properties, boolean keyval) {
        Map<String, Setter> byName = new LinkedHashMap<>();
        JsonNode limits = properties.get("limits");
        if (limits != null) {
            if (!limits.isObject()) {
                throw new CommandException("Invalid parameter type for 'limits', expected: object");
            }
            Map<String, Long> values = new LinkedHashMap<>();
            for (String key : ThrottleConfig.LIMITS_KEYS) {
                JsonNode v = limits.get(key);
                if (v != null) {
                    values.put(key, integer("limits." + key, v, keyval));
                }
            }
            for (String key : limits.propertyNames()) {
                if (!ThrottleConfig.LIMITS_KEYS.contains(key)) {
                    throw new CommandException("Parameter 'limits." + key + "' is unexpected");
                }
            }
            byName.put("limits", new Setter("limits", values, 0));
        }
        for (String key : ThrottleConfig.LIMITS_KEYS) {
            JsonNode v = properties.get(LEGACY_PREFIX + key);
            if (v != null) {
                byName.put(LEGACY_PREFIX + key, new Setter(LEGACY_PREFIX + key, null,
                        integer(LEGACY_PREFIX + key, v, keyval)));
            }
        }
        List<Setter> inOrder = new ArrayList<>();
        for (String key : properties.keySet()) {
            Setter s = byName.get(key);
            if (s == null) {
                throw new CommandException("Parameter '" + key + "' is unexpected");
            }
            inOrder.add(s);
        }
        return new ThrottleGroupProperties(inOrder);
    }

    /**
     * Sets the properties on a fresh configuration, as QEMU's setters do: {@code limits}
     * merges and validates what is set so far; an {@code x-} alias refuses a negative value.
     * The caller validates the whole once the object is complete.
     */
    public ThrottleConfig apply() {
        return apply(new ThrottleConfig());
    }

    /** As {@link #apply()}, onto a copy of {@code base} ({@code qom-set limits} merges into the group's). */
    public ThrottleConfig apply(ThrottleConfig base) {
        ThrottleConfig config = base.copy();
        for (Setter s : setters) {
            if (s.limits() != null) {
                config.applyLimits(s.limits());
            } else {
                config.applyLegacy(s.name().substring(LEGACY_PREFIX.length()), s.value());
            }
        }
        return config;
    }

    private static long integer(String name, JsonNode v, boolean keyval) {
        if (v.isIntegralNumber() && v.canConvertToLong()) {
            return v.asLong();
        }
        if (keyval && v.isString()) {
            try {
                return Long.decode(v.asString().strip()); // strtoll with base 0: decimal, 0x hex, 0 octal
            } catch (NumberFormatException e) {
                throw new CommandException("Parameter '" + name + "' expects integer");
            }
        }
        throw typeError(name, "integer", keyval);
    }

    private static CommandException typeError(String name, String expected, boolean keyval) {
        if (keyval) {
            return new CommandException("Parameter '" + name + "' expects " + expected);
        }
        return new CommandException("Invalid parameter type for '" + name + "', expected: " + expected);
    }
}
