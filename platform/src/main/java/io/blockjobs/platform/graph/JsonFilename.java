package io.blockjobs.platform.graph;

import io.blockjobs.platform.Json;
import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.JsonNodeFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * QEMU's {@code json:} pseudo-filenames, which QEMU writes into images as backing file names
 * when the backing node has options a plain path cannot carry: {@code json:{"driver":"qcow2",
 * "file":{"driver":"file","filename":"/b.qcow2"}}}, nested or with dotted keys
 * ({@code "file.filename"}), as {@code parse_json_filename} in QEMU's {@code block.c} reads them.
 */
final class JsonFilename {
    static final String PREFIX = "json:";

    private JsonFilename() {
    }

    static boolean is(String name) {
        return name != null && name.startsWith(PREFIX);
    }

    /** The node's options, nested as {@code blockdev-add} takes them; QEMU's messages for bad ones. */
    static ObjectNode options(String name) {
        JsonNode parsed;
        try {
            parsed = Json.MAPPER.readTree(name.substring(PREFIX.length()));
        } catch (JacksonException e) {
            throw new CommandException("Could not parse the JSON options: " + e.getOriginalMessage());
        }
        if (parsed == null || !parsed.isObject()) {
            throw new CommandException("Invalid JSON object given");
        }
        ObjectNode nested = JsonNodeFactory.instance.objectNode();
        merge(nested, "", (ObjectNode) parsed);
        return nested;
    }

    /** Flattens as QEMU's {@code qdict_flatten}, then nests again by the dots, so both spellings meet. */
    private static void merge(ObjectNode into, String prefix, ObjectNode from) {
        for (Map.Entry<String, JsonNode> e : new ArrayList<>(from.properties())) {
            String key = prefix + e.getKey();
            if (e.getValue().isObject()) {
                merge(into, key + ".", (ObjectNode) e.getValue());
                continue;
            }
            List<String> path = List.of(key.split("\\.", -1));
            ObjectNode at = into;
            for (String part : path.subList(0, path.size() - 1)) {
                JsonNode next = at.get(part);
                if (next == null) {
                    next = at.putObject(part);
                } else if (!next.isObject()) {
                    throw new CommandException("Invalid JSON object given: '" + key + "' is also given a value");
                }
                at = (ObjectNode) next;
            }
            at.set(path.get(path.size() - 1), e.getValue());
        }
    }
}
