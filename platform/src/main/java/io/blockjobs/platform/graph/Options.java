package io.blockjobs.platform.graph;

import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Set;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * Reads a QEMU options object (QMP JSON, or the command line's {@code key=value} strings) with
 * QEMU's messages for missing, mistyped and unexpected members.
 */
public final class Options implements DriverOptions {
    private final ObjectNode node;
    private final String prefix;
    private final Set<String> used = new HashSet<>();

    public Options(JsonNode node, String prefix) {
        if (node == null || !node.isObject()) {
            throw new CommandException("Invalid parameter type for '" + (prefix.isEmpty() ? "options" : prefix.substring(0, prefix.length() - 1))
                    + "', expected: object");
        }
        this.node = (ObjectNode) node;
        this.prefix = prefix;
    }

    @Override
    public boolean has(String key) {
        used.add(key);
        JsonNode v = node.get(key);
        return v != null && !v.isNull();
    }

    /** The raw member, marked as used (null if absent). */
    public JsonNode raw(String key) {
        used.add(key);
        return node.get(key);
    }

    @Override
    public String string(String key) {
        String v = optString(key);
        if (v == null) {
            throw missing(key);
        }
        return v;
    }

    @Override
    public String optString(String key) {
        JsonNode v = raw(key);
        if (v == null || v.isNull()) {
            return null;
        }
        if (!v.isString()) {
            throw type(key, "string");
        }
        return v.asString();
    }

    @Override
    public boolean bool(String key, boolean dflt) {
        JsonNode v = raw(key);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (v.isBoolean()) {
            return v.asBoolean();
        }
        if (v.isString()) { // key=value syntax
            switch (v.asString()) {
                case "on", "yes", "true", "y" -> {
                    return true;
                }
                case "off", "no", "false", "n" -> {
                    return false;
                }
                default -> throw new CommandException("Parameter '" + prefix + key + "' expects 'on' or 'off'");
            }
        }
        throw type(key, "boolean");
    }

    @Override
    public long integer(String key) {
        Long v = optInteger(key);
        if (v == null) {
            throw missing(key);
        }
        return v;
    }

    @Override
    public Long optInteger(String key) {
        JsonNode v = raw(key);
        if (v == null || v.isNull()) {
            return null;
        }
        if (v.isIntegralNumber() && v.canConvertToLong()) {
            return v.asLong();
        }
        if (v.isString()) { // key=value syntax, with QEMU's size suffixes
            return parseSize(key, v.asString());
        }
        throw type(key, "integer");
    }

    /** The options object itself (its members are not marked used). */
    public ObjectNode json() {
        return node;
    }

    /** The prefix members are named with in messages ({@code file.}). */
    public String prefix() {
        return prefix;
    }

    @Override
    public List<DriverOptions> objects(String key) {
        JsonNode v = raw(key);
        List<DriverOptions> out = new ArrayList<>();
        if (v == null || v.isNull()) {
            return out;
        }
        if (!v.isArray()) {
            throw type(key, "array");
        }
        for (int i = 0; i < v.size(); i++) {
            out.add(new Options(v.get(i), prefix + key + "[" + i + "]."));
        }
        return out;
    }

    @Override
    public List<String> strings(String key) {
        JsonNode v = raw(key);
        List<String> out = new ArrayList<>();
        if (v == null || v.isNull()) {
            return out;
        }
        if (!v.isArray()) {
            throw type(key, "array");
        }
        for (int i = 0; i < v.size(); i++) {
            if (!v.get(i).isString()) {
                throw type(key + "[" + i + "]", "string");
            }
            out.add(v.get(i).asString());
        }
        return out;
    }

    @Override
    public RuntimeException invalid(String key, String message) {
        return new CommandException(message);
    }

    /** A nested options object. */
    @Override
    public Options object(String key) {
        JsonNode v = raw(key);
        if (v == null) {
            throw missing(key);
        }
        if (!v.isObject()) {
            throw type(key, "object");
        }
        return new Options(v, prefix + key + ".");
    }

    /** Marks members QEMU accepts that have no effect here. */
    @Override
    public void ignore(String... keys) {
        for (String k : keys) {
            used.add(k);
        }
    }

    /** Refuses members nobody read, as QEMU does. */
    @Override
    public void checkAllUsed() {
        for (Iterator<String> it = node.propertyNames().iterator(); it.hasNext(); ) {
            String k = it.next();
            if (!used.contains(k)) {
                throw new CommandException("Parameter '" + prefix + k + "' is unexpected");
            }
        }
    }

    public CommandException missing(String key) {
        return new CommandException("Parameter '" + prefix + key + "' is missing");
    }

    public CommandException type(String key, String expected) {
        return new CommandException("Invalid parameter type for '" + prefix + key + "', expected: " + expected);
    }

    private long parseSize(String key, String s) {
        String t = s.trim();
        long mult = 1;
        if (!t.isEmpty()) {
            char last = Character.toUpperCase(t.charAt(t.length() - 1));
            int shift = "BKMGTPE".indexOf(last) * 10;
            if (shift >= 0 && !Character.isDigit(t.charAt(t.length() - 1))) {
                mult = 1L << shift;
                t = t.substring(0, t.length() - 1);
            }
        }
        try {
            return Math.multiplyExact(Long.parseLong(t), mult);
        } catch (NumberFormatException | ArithmeticException e) {
            throw type(key, "integer");
        }
    }
}
