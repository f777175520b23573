package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * A {@code secret} object (QEMU's {@code crypto/secret.c}): its value comes from {@code data}
 * or {@code file}, is base64 when {@code format=base64}, and is AES-256-CBC encrypted when
 * {@code keyid} names the secret holding the key ({@code iv} in base64). The value is decoded
 * once, when the object is created; changing a property later changes only the property, as
 * in QEMU. Unlike QEMU 7.2, {@code qom-get} never shows {@code data}.
 */
public final class SecretObject implements io.blockjobs.platform.image.Secret {
    /** The {@code qom-type}. */
    public static final String QOM_TYPE = "secret";

    /** {@code SecretCommonProperties}, then {@code SecretProperties}' own, in the schema's order. */
    static final List<ObjectProperties.Member> MEMBERS = List.of(
            new ObjectProperties.Member("loaded", ObjectProperties.Kind.BOOL),
            new ObjectProperties.Member("format", ObjectProperties.Kind.FORMAT),
            new ObjectProperties.Member("keyid", ObjectProperties.Kind.STR),
            new ObjectProperties.Member("iv", ObjectProperties.Kind.STR),
            new ObjectProperties.Member("data", ObjectProperties.Kind.STR),
            new ObjectProperties.Member("file", ObjectProperties.Kind.STR));
    /** The properties in the order qemu-storage-daemon lists them, with their QOM types. */
    static final Map<String, String> PROPERTIES = orderedMap(
            "iv", "string", "keyid", "string", "loaded", "bool", "format", "QCryptoSecretFormat",
            "file", "string", "data", "string");
    /** The abstract {@code secret_common}'s share of them. */
    static final Map<String, String> COMMON_PROPERTIES = orderedMap(
            "iv", "string", "keyid", "string", "loaded", "bool", "format", "QCryptoSecretFormat");

    private String data;
    private String file;
    private String format = "raw";
    private String keyid;
    private String iv;
    private byte[] value;

    private SecretObject() {
    }

    /** The decoded secret: a copy, to be cleared by the caller once used. */
    @Override
    public byte[] value() {
        return value.clone();
    }

    /**
     * {@code object-add} / {@code --object} after QAPI's checks: the setters, the id's
     * uniqueness, then QEMU's {@code complete}, which loads and decodes the value.
     */
    static SecretObject create(BlockGraph graph, String id, Map<String, JsonNode> checked, Runnable beforeComplete) {
        SecretObject s = new SecretObject();
        checked.forEach(s::set);
        beforeComplete.run();
        s.load(graph, id);
        return s;
    }

    /** A property's setter ({@code object-add}'s and {@code qom-set}'s); {@code loaded} has none. */
    void set(String property, JsonNode checkedValue) {
        String v = checkedValue.asString();
        switch (property) {
            case "data" -> data = v;
            case "file" -> file = v;
            case "format" -> format = v;
            case "keyid" -> keyid = v;
            case "iv" -> iv = v;
            case "loaded", "type" -> throw new CommandException("Property 'secret." + property + "' is not writable");
            default -> throw new IllegalArgumentException(property);
        }
    }

    /** {@code qom-get}: what QEMU shows, except {@code data}. */
    Object get(String property) {
        return switch (property) {
            case "data" -> throw new CommandException("Property 'secret.data' is not readable");
            case "file" -> nonNull(file);
            case "format" -> format;
            case "keyid" -> nonNull(keyid);
            case "iv" -> nonNull(iv);
            case "loaded" -> value != null;
            default -> throw new IllegalArgumentException(property);
        };
    }

    private static String nonNull(String s) {
        return s == null ? "" : s;
    }

    private void load(BlockGraph graph, String id) {
        byte[] input;
        if (file != null) {
            if (data != null) {
                throw new CommandException("'file' and 'data' are mutually exclusive");
            }
            input = read(file);
        } else if (data != null) {
            input = data.getBytes(StandardCharsets.UTF_8);
        } else {
            throw new CommandException("Either 'file' or 'data' must be provided");
        }
        boolean base64 = format.equals("base64");
        if (keyid != null) {
            byte[] key = lookup(graph, id, keyid);
            try {
                value = SecretCrypto.decrypt(key, iv, input, base64);
            } finally {
                Arrays.fill(key, (byte) 0);
            }
        } else {
            value = base64 ? SecretCrypto.base64(input) : input;
        }
    }

    /** QEMU's {@code qcrypto_secret_lookup}: the object being created is already in the tree, without data. */
    private static byte[] lookup(BlockGraph graph, String self, String id) {
        if (id.equals(self)) {
            throw new CommandException("Secret with id '" + id + "' has no data");
        }
        Object o = graph.object(id);
        if (o == null) {
            throw new CommandException("No secret with id '" + id + "'");
        }
        if (!(o instanceof SecretObject s)) {
            throw new CommandException("Object with id '" + id + "' is not a secret");
        }
        return s.value();
    }

    /** glib's {@code g_file_get_contents}, with its messages (its quotes included). */
    private static byte[] read(String name) {
        Path path = Path.of(name);
        try {
            if (Files.isDirectory(path)) {
                throw new CommandException("Unable to read " + name + ": Failed to read from file \u201C" + name
                        + "\u201D: Is a directory");
            }
            return Files.readAllBytes(path);
        } catch (NoSuchFileException e) {
            throw new CommandException("Unable to read " + name + ": Failed to open file \u201C" + name
                    + "\u201D: No such file or directory");
        } catch (AccessDeniedException e) {
            throw new CommandException("Unable to read " + name + ": Failed to open file \u201C" + name
                    + "\u201D: Permission denied");
        } catch (IOException e) {
            throw new CommandException("Unable to read " + name + ": " + e.getMessage());
        }
    }

    private static Map<String, String> orderedMap(String... kv) {
        Map<String, String> m = new java.util.LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return java.util.Collections.unmodifiableMap(m);
    }
}
