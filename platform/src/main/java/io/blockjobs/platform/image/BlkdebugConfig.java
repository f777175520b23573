package io.blockjobs.platform.image;

import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A blkdebug config file, read as QEMU's {@code qemu_config_parse} reads it
 * ({@code util/qemu-config.c}): {@code [inject-error]} and {@code [set-state]} sections (a
 * section may carry an id: {@code [inject-error "id"]}) of {@code key = "value"} lines, the value
 * in double quotes; lines starting with {@code #} and empty lines are skipped. Each section's
 * keys and their types are checked when the section ends, with QEMU's messages.
 */
final class BlkdebugConfig {

    /** One section: its group, and its keys with their (unquoted) values. */
    record Section(String group, Map<String, String> values) {
    }

    /** The keys of each group and their QemuOpts types. */
    private enum Type { STRING, NUMBER, BOOL }

    private static final Map<String, Map<String, Type>> GROUPS = Map.of(
            "inject-error", Map.of("event", Type.STRING, "state", Type.NUMBER, "iotype", Type.STRING,
                    "errno", Type.NUMBER, "sector", Type.NUMBER, "once", Type.BOOL, "immediately", Type.BOOL),
            "set-state", Map.of("event", Type.STRING, "state", Type.NUMBER, "new_state", Type.NUMBER));

    private BlkdebugConfig() {
    }

    /** Reads the file's sections, in order. */
    static List<Section> read(Path file) {
        String text;
        if (Files.isDirectory(file)) {
            throw new CommandException("Cannot read config file: Is a directory"); // fopen works, fgets fails
        }
        try {
            text = new String(Files.readAllBytes(file), StandardCharsets.ISO_8859_1);
        } catch (NoSuchFileException e) {
            throw new CommandException("Could not read blkdebug config file: No such file or directory");
        } catch (AccessDeniedException e) {
            throw new CommandException("Could not read blkdebug config file: Permission denied");
        } catch (IOException e) {
            throw new CommandException("Could not read blkdebug config file: " + e.getMessage());
        }
        return parse(text);
    }

    /** Parses the text of a config file. */
    static List<Section> parse(String text) {
        List<Section> sections = new ArrayList<>();
        Set<String> ids = new HashSet<>();
        String group = null;
        Map<String, String> values = null;
        for (String line : lines(text)) {
            if (line.startsWith("\n") || line.startsWith("#")) {
                continue;
            }
            if (line.startsWith("[")) {
                Scan s = new Scan(line, 1);
                String g = s.token(63);
                String id = null;
                boolean header = false;
                if (g != null) {
                    s.spaces();
                    if (s.literal('"')) {
                        id = s.until('"', 63);
                    }
                }
                if (id != null) {
                    header = true;
                } else {
                    g = new Scan(line, 1).until(']', 63); // "[%63[^]]]"
                    header = g != null;
                }
                if (header) {
                    if (values != null) {
                        sections.add(section(group, values));
                    }
                    group = g;
                    values = new LinkedHashMap<>();
                    if (id != null) {
                        if (!wellFormedId(id)) {
                            throw new CommandException("Parameter 'id' expects an identifier");
                        }
                        if (!ids.add(g + "\0" + id)) {
                            throw new CommandException("Duplicate ID '" + id + "' for " + g);
                        }
                    }
                    continue;
                }
            }
            // " %63s = \"%1023[^\"]\"" or " %63s = \"\"": a key alone is a key with an empty value
            Scan s = new Scan(line, 0);
            s.spaces();
            String key = s.token(63);
            if (key == null) {
                throw new CommandException("parse error");
            }
            String value = "";
            s.spaces();
            if (s.literal('=')) {
                s.spaces();
                if (s.literal('"')) {
                    String v = s.until('"', 1023);
                    if (v != null) {
                        value = v;
                    }
                }
            }
            if (values == null) {
                throw new CommandException("no group defined");
            }
            values.put(key, value);
        }
        if (values != null) {
            sections.add(section(group, values));
        }
        return sections;
    }

    /** The end of a section: QEMU's {@code qemu_opts_from_qdict} checks names and types. */
    private static Section section(String group, Map<String, String> values) {
        Map<String, Type> keys = GROUPS.get(group);
        if (keys == null) {
            throw new CommandException("There is no option group '" + group + "'");
        }
        for (Map.Entry<String, String> e : values.entrySet()) {
            Type t = keys.get(e.getKey());
            if (t == null) {
                throw new CommandException("Invalid parameter '" + e.getKey() + "'");
            }
            switch (t) {
                case NUMBER -> number(e.getKey(), e.getValue());
                case BOOL -> bool(e.getKey(), e.getValue());
                case STRING -> {
                }
            }
        }
        return new Section(group, values);
    }

    /** QEMU's {@code parse_option_number}: {@code qemu_strtou64} in base 0, negative numbers wrap. */
    static long number(String key, String value) {
        String s = value.stripLeading();
        boolean negative = false;
        if (s.startsWith("+") || s.startsWith("-")) {
            negative = s.charAt(0) == '-';
            s = s.substring(1);
        }
        int radix = 10;
        if (s.length() > 1 && s.charAt(0) == '0' && (s.charAt(1) == 'x' || s.charAt(1) == 'X')) {
            radix = 16;
            s = s.substring(2);
        } else if (s.length() > 1 && s.charAt(0) == '0') {
            radix = 8;
            s = s.substring(1);
        }
        int base = radix;
        if (s.isEmpty() || s.chars().anyMatch(c -> c > 127 || Character.digit(c, base) < 0)) {
            throw new CommandException("Parameter '" + key + "' expects a number");
        }
        BigInteger n = new BigInteger(s, radix);
        if (n.bitLength() > 64) {
            throw new CommandException("Value '" + value + "' is too large for parameter '" + key + "'");
        }
        long v = n.longValue();
        return negative ? -v : v;
    }

    /** QEMU's {@code qapi_bool_parse}. */
    static boolean bool(String key, String value) {
        return switch (value) {
            case "on", "yes", "true", "y" -> true;
            case "off", "no", "false", "n" -> false;
            default -> throw new CommandException("Parameter '" + key + "' expects 'on' or 'off'");
        };
    }

    /** QEMU's {@code id_wellformed}: a letter, then letters, digits, '-', '.' and '_'. */
    private static boolean wellFormedId(String id) {
        if (id.isEmpty() || !Character.isLetter(id.charAt(0)) || id.charAt(0) > 127) {
            return false;
        }
        return id.chars().allMatch(c -> c < 128 && (Character.isLetterOrDigit(c) || c == '-' || c == '.' || c == '_'));
    }

    /** The lines as {@code fgets} returns them: each with its newline, the last one perhaps without. */
    private static List<String> lines(String text) {
        List<String> out = new ArrayList<>();
        int start = 0;
        while (start < text.length()) {
            int nl = text.indexOf('\n', start);
            int end = nl < 0 ? text.length() : nl + 1;
            out.add(text.substring(start, end));
            start = end;
        }
        return out;
    }

    /** Just enough of {@code sscanf} for QEMU's config patterns. */
    private static final class Scan {
        private final String s;
        private int i;

        Scan(String s, int i) {
            this.s = s;
            this.i = i;
        }

        void spaces() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        boolean literal(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        /** {@code %Ns}: skips white space, then up to {@code max} non-space characters; null if none. */
        String token(int max) {
            spaces();
            int start = i;
            while (i < s.length() && i - start < max && !Character.isWhitespace(s.charAt(i))) {
                i++;
            }
            return i > start ? s.substring(start, i) : null;
        }

        /** {@code %N[^c]}: up to {@code max} characters other than {@code c}; null if none. */
        String until(char c, int max) {
            int start = i;
            while (i < s.length() && i - start < max && s.charAt(i) != c) {
                i++;
            }
            return i > start ? s.substring(start, i) : null;
        }
    }
}
