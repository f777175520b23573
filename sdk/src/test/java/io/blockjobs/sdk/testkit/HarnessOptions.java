package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A node's options as the harness hands them to a driver: a map as {@code blockdev-add}'s JSON
 * would give it (numbers, booleans, strings, nested maps, lists), read with the platform's
 * messages; strings are also taken where QEMU's {@code key=value} syntax gives every value as one
 * ({@code "on"}, {@code "64k"}). Every member read is marked used; the harness refuses the rest
 * after the driver opened the node, as the platform does.
 */
final class HarnessOptions implements DriverOptions {
    private final Map<String, Object> members;
    private final String prefix;
    private final Set<String> used = new HashSet<>();

    HarnessOptions(Map<String, ?> members, String prefix) {
        this.members = new LinkedHashMap<>(members);
        this.prefix = prefix;
    }

    /** The member itself, marked used (null if absent). */
    Object raw(String key) {
        used.add(key);
        return members.get(key);
    }

    /** Whether the member is there at all, null included (marked used). */
    boolean given(String key) {
        used.add(key);
        return members.containsKey(key);
    }

    @Override
    public boolean has(String key) {
        return raw(key) != null;
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
        Object v = raw(key);
        if (v == null) {
            return null;
        }
        if (!(v instanceof String s)) {
            throw type(key, "string");
        }
        return s;
    }

    @Override
    public boolean bool(String key, boolean dflt) {
        Object v = raw(key);
        if (v == null) {
            return dflt;
        }
        if (v instanceof Boolean b) {
            return b;
        }
        if (v instanceof String s) {
            return switch (s) {
                case "on", "yes", "true", "y" -> true;
                case "off", "no", "false", "n" -> false;
                default -> throw new CommandException("Parameter '" + prefix + key + "' expects 'on' or 'off'");
            };
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
        Object v = raw(key);
        if (v == null) {
            return null;
        }
        if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte) {
            return ((Number) v).longValue();
        }
        if (v instanceof String s) {
            return parseSize(key, s);
        }
        throw type(key, "integer");
    }

    @Override
    @SuppressWarnings("unchecked")
    public DriverOptions object(String key) {
        Object v = raw(key);
        if (v == null) {
            throw missing(key);
        }
        if (!(v instanceof Map<?, ?> m)) {
            throw type(key, "object");
        }
        return new HarnessOptions((Map<String, ?>) m, prefix + key + ".");
    }

    @Override
    @SuppressWarnings("unchecked")
    public List<DriverOptions> objects(String key) {
        List<DriverOptions> out = new ArrayList<>();
        Object v = raw(key);
        if (v == null) {
            return out;
        }
        if (!(v instanceof List<?> list)) {
            throw type(key, "array");
        }
        for (int i = 0; i < list.size(); i++) {
            if (!(list.get(i) instanceof Map<?, ?> m)) {
                throw type(key + "[" + i + "]", "object");
            }
            out.add(new HarnessOptions((Map<String, ?>) m, prefix + key + "[" + i + "]."));
        }
        return out;
    }

    @Override
    public List<String> strings(String key) {
        List<String> out = new ArrayList<>();
        Object v = raw(key);
        if (v == null) {
            return out;
        }
        if (!(v instanceof List<?> list)) {
            throw type(key, "array");
        }
        for (int i = 0; i < list.size(); i++) {
            if (!(list.get(i) instanceof String s)) {
                throw type(key + "[" + i + "]", "string");
            }
            out.add(s);
        }
        return out;
    }

    @Override
    public void ignore(String... keys) {
        used.addAll(List.of(keys));
    }

    @Override
    public void checkAllUsed() {
        for (String k : members.keySet()) {
            if (!used.contains(k)) {
                throw new CommandException("Parameter '" + prefix + k + "' is unexpected");
            }
        }
    }

    @Override
    public RuntimeException invalid(String key, String message) {
        return new CommandException(message);
    }

    CommandException missing(String key) {
        return new CommandException("Parameter '" + prefix + key + "' is missing");
    }

    CommandException type(String key, String expected) {
        return new CommandException("Invalid parameter type for '" + prefix + key + "', expected: " + expected);
    }

    /** QEMU's sizes in key=value syntax: digits, then an optional suffix (k, M, G, ...). */
    private long parseSize(String key, String s) {
        String t = s.trim();
        long mult = 1;
        if (!t.isEmpty() && !Character.isDigit(t.charAt(t.length() - 1))) {
            int shift = "BKMGTPE".indexOf(Character.toUpperCase(t.charAt(t.length() - 1))) * 10;
            if (shift >= 0) {
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
