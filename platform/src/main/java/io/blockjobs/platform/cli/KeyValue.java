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
        return root;
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
