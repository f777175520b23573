package io.blockjobs.platform.image;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * QEMU's {@code json:} filenames as {@code bdrv_refresh_filename} prints them for nodes that
 * have no plain name: the node's options and {@code driver}, in the order QEMU's dictionary
 * iterates them (by hash bucket), nested dictionaries likewise.
 */
final class QemuJson {
    private static final tools.jackson.databind.ObjectMapper JSON = tools.jackson.databind.json.JsonMapper.builder().build();

    private QemuJson() {
    }

    /** {@code json:{...}} of {@code options} plus {@code driver}. */
    static String filename(String driver, Map<String, Object> options) {
        List<Map.Entry<String, Object>> entries = new ArrayList<>(options.entrySet());
        entries.add(Map.entry("driver", driver));
        StringBuilder b = new StringBuilder("json:");
        object(b, entries);
        return b.toString();
    }

    /**
     * A format node's name over a child known only by a {@code json:} name (an rbd image, say):
     * {@code bdrv_refresh_filename} cannot reuse the child's name then, so the node's is
     * {@code json:{"driver": FORMAT, "file": {the child's options}}}; a plain name is the node's own.
     */
    @SuppressWarnings("unchecked")
    static String overChild(String driver, String childName) {
        if (!childName.startsWith("json:")) {
            return childName;
        }
        Map<String, Object> child = JSON.readValue(childName.substring(5), java.util.LinkedHashMap.class);
        return filename(driver, Map.of("file", child));
    }

    @SuppressWarnings("unchecked")
    private static void object(StringBuilder b, List<Map.Entry<String, Object>> entries) {
        List<Map.Entry<String, Object>> sorted = new ArrayList<>(entries);
        sorted.sort(Comparator.comparingLong(e -> Integer.toUnsignedLong(tdbHash(e.getKey())) % 512));
        b.append('{');
        for (int i = 0; i < sorted.size(); i++) {
            b.append(i == 0 ? "" : ", ").append('"').append(sorted.get(i).getKey()).append("\": ");
            value(b, sorted.get(i).getValue());
        }
        b.append('}');
    }

    @SuppressWarnings("unchecked")
    private static void value(StringBuilder b, Object v) {
        if (v instanceof String s) {
            b.append('"').append(s.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
        } else if (v instanceof Map<?, ?> m) {
            object(b, new ArrayList<>(((Map<String, Object>) m).entrySet()));
        } else if (v instanceof List<?> l) {
            b.append('[');
            for (int i = 0; i < l.size(); i++) {
                b.append(i == 0 ? "" : ", ");
                value(b, l.get(i));
            }
            b.append(']');
        } else {
            b.append(v);
        }
    }

    /** QEMU's {@code qdict} hash ({@code tdb_hash}); keys iterate by bucket, 512 buckets. */
    static int tdbHash(String key) {
        int value = 0x238F13AF * key.length();
        for (int i = 0; i < key.length(); i++) {
            value = value + (key.charAt(i) << (i * 5 % 24));
        }
        return 1103515243 * value + 12345;
    }
}
