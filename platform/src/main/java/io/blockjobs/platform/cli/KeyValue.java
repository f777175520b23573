package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * QEMU's command-line option syntax ({@code util/keyval.c}): {@code key=value,key.sub=value},
 * {@code ,,} for a literal comma, an optional implied first key, or a JSON object.
 */
final class KeyValue {
    private KeyValue() {
    }

    /**
     * Parses {@code text} into an object; values stay strings (the command converts them).
     *
     * @param impliedKey the key of a first item given without {@code key=} (null: none allowed)
     * @throws IllegalArgumentException with a message naming the problem
     */
    static ObjectNode parse(String text, String impliedKey) {
        String trimmed = text.strip();
        if (trimmed.startsWith("{")) {
            try {
                JsonNode node = Json.MAPPER.readTree(trimmed);
                if (node == null || !node.isObject()) {
                    throw new IllegalArgumentException("expected a JSON object");
                }
                return (ObjectNode) node;
            } catch (JacksonException e) {
                throw new IllegalArgumentException("invalid JSON: " + e.getOriginalMessage());
            }
        }
        ObjectNode root = Json.object();
        int i = 0;
        boolean first = true;
        while (i <= text.length()) {
            StringBuilder item = new StringBuilder();
            while (i < text.length()) {
                char c = text.charAt(i);
                if (c == ',') {
                    if (i + 1 < text.length() && text.charAt(i + 1) == ',') {
                        item.append(',');
                        i += 2;
                        continue;
                    }
                    break;
                }
                item.append(c);
                i++;
            }
            i++; // the comma
            String s = item.toString();
            if (s.isEmpty()) {
                if (i > text.length()) {
                    break;
                }
                throw new IllegalArgumentException("empty item in '" + text + "'");
            }
            int eq = s.indexOf('=');
            String key;
            String value;
            if (eq < 0) {
                if (!first || impliedKey == null) {
                    throw new IllegalArgumentException("no value given for '" + s + "' (expected key=value)");
                }
                key = impliedKey;
                value = s;
            } else {
                key = s.substring(0, eq);
                value = s.substring(eq + 1);
            }
            put(root, key, value, text);
            first = false;
        }
        listify(root, "");
        return root;
    }

    /**
     * QEMU's {@code keyval_listify}: below the top level, an object whose keys are all indices
     * ({@code bitmaps.0=a,bitmaps.1=b}) becomes a list; indices must run from 0 without a gap, and
     * an object may not mix indices and names.
     */
    private static JsonNode listify(ObjectNode node, String path) {
        boolean indices = false;
        boolean members = false;
        for (String key : java.util.List.copyOf(node.propertyNames())) {
            if (index(key) >= 0) {
                indices = true;
            } else {
                members = true;
            }
            if (node.get(key) instanceof ObjectNode child) {
                node.set(key, listify(child, path + key + "."));
            }
        }
        if (path.isEmpty() || !indices) {
            return node;
        }
        if (members) {
            throw new IllegalArgumentException("Parameters '" + path + "*' used inconsistently");
        }
        int max = -1;
        for (String key : node.propertyNames()) {
            max = Math.max(max, index(key));
        }
        tools.jackson.databind.node.ArrayNode list = Json.MAPPER.createArrayNode();
        for (int i = 0; i < Math.min(node.size(), max + 1L); i++) {
            JsonNode element = null;
            for (String key : node.propertyNames()) {
                if (index(key) == i) {
                    element = node.get(key);
                }
            }
            if (element == null) {
                throw new IllegalArgumentException("Parameter '" + path + i + "' missing");
            }
            list.add(element);
        }
        return list;
    }

    /** QEMU's {@code key_to_index}: a key of decimal digits as a number, else -1. */
    private static int index(String key) {
        if (key.isEmpty() || key.chars().anyMatch(c -> c < '0' || c > '9')) {
            return -1;
        }
        try {
            return Integer.parseInt(key);
        } catch (NumberFormatException e) {
            return Integer.MAX_VALUE;
        }
    }

    private static void put(ObjectNode root, String dotted, String value, String text) {
        String[] parts = dotted.split("\\.", -1);
        ObjectNode node = root;
        for (int p = 0; p < parts.length - 1; p++) {
            if (parts[p].isEmpty()) {
                throw new IllegalArgumentException("invalid key '" + dotted + "'");
            }
            JsonNode child = node.get(parts[p]);
            if (child == null) {
                node = node.putObject(parts[p]);
            } else if (child.isObject()) {
                node = (ObjectNode) child;
            } else {
                throw new IllegalArgumentException("key '" + dotted + "' conflicts with '" + parts[p] + "'");
            }
        }
        String last = parts[parts.length - 1];
        if (last.isEmpty()) {
            throw new IllegalArgumentException("invalid key '" + dotted + "'");
        }
        if (node.has(last)) {
            throw new IllegalArgumentException("key '" + dotted + "' given twice");
        }
        node.put(last, value);
    }
}
