package io.blockjobs.platform.qmp;

import java.util.Iterator;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * QMP output of a {@code pretty=on} monitor, byte for byte as QEMU 7.2's
 * {@code qobject/json-writer.c} writes it: four spaces a level, {@code "key": value}, an empty
 * object or array still broken over two lines, and the monitor's {@code \r\n} for each newline.
 * Strings are escaped as QEMU's {@code quoted_str}: ASCII printable as is, the rest as
 * {@code \\uXXXX} (upper-case hex, surrogate pairs beyond the BMP).
 */
final class QmpPrettyWriter {
    private QmpPrettyWriter() {
    }

    /** The message, pretty-printed, with the monitor's trailing {@code \r\n}. */
    static String write(JsonNode message) {
        StringBuilder out = new StringBuilder();
        value(out, message, 0);
        return out.append("\r\n").toString();
    }

    private static void newline(StringBuilder out, int depth) {
        out.append("\r\n").append(" ".repeat(depth * 4));
    }

    private static void value(StringBuilder out, JsonNode v, int depth) {
        if (v.isObject()) {
            out.append('{');
            boolean first = true;
            for (Iterator<Map.Entry<String, JsonNode>> it = v.properties().iterator(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                out.append(first ? "" : ",");
                newline(out, depth + 1);
                quoted(out, e.getKey());
                out.append(": ");
                value(out, e.getValue(), depth + 1);
                first = false;
            }
            newline(out, depth);
            out.append('}');
        } else if (v.isArray()) {
            out.append('[');
            boolean first = true;
            for (JsonNode element : v) {
                out.append(first ? "" : ",");
                newline(out, depth + 1);
                value(out, element, depth + 1);
                first = false;
            }
            newline(out, depth);
            out.append(']');
        } else if (v.isString()) {
            quoted(out, v.asString());
        } else if (v.isNull() || v.isMissingNode()) {
            out.append("null");
        } else if (v.isBoolean()) {
            out.append(v.asBoolean());
        } else if (v.isIntegralNumber()) {
            out.append(v.bigIntegerValue());
        } else {
            out.append(v.asString()); // a double: QEMU's %.17g and Java's shortest form agree on what is read back
        }
    }

    private static void quoted(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            switch (cp) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (cp > 0xFFFF) {
                        out.append(String.format("\\u%04X\\u%04X", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)));
                    } else if (cp < 0x20 || cp >= 0x7F) {
                        out.append(String.format("\\u%04X", cp));
                    } else {
                        out.append((char) cp);
                    }
                }
            }
        }
        out.append('"');
    }
}
