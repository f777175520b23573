package io.blockjobs.platform.qmp;

import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.JsonNodeFactory;

/**
 * QAPI's visit of an object type's properties ({@code IothreadProperties}, {@code SecretProperties}):
 * members checked for their type in the schema's order, then unexpected ones refused, with
 * QEMU's messages for QMP and for the command line's {@code key=value} strings.
 */
final class ObjectProperties {
    /** A member's QAPI type. */
    enum Kind { STR, INT, BOOL, FORMAT }

    /** One member of the properties type. */
    record Member(String name, Kind kind) {
    }

    /** {@code QCryptoSecretFormat}'s values. */
    static final List<String> FORMATS = List.of("raw", "base64");

    private ObjectProperties() {
    }

    /**
     * Checks {@code properties} against {@code members}; returns them in the order given, with
     * command-line strings converted to integers and booleans.
     */
    static Map<String, JsonNode> check(Map<String, JsonNode> properties, List<Member> members, boolean keyval) {
        Map<String, JsonNode> converted = new LinkedHashMap<>();
        for (Member m : members) {
            JsonNode v = properties.get(m.name());
            if (v != null) {
                converted.put(m.name(), value(m, v, keyval));
            }
        }
        Map<String, JsonNode> inOrder = new LinkedHashMap<>();
        for (String key : properties.keySet()) {
            if (!converted.containsKey(key)) {
                throw new CommandException("Parameter '" + key + "' is unexpected");
            }
            inOrder.put(key, converted.get(key));
        }
        return inOrder;
    }

    /** One value checked against its member's type (also {@code qom-set}'s, never keyval). */
    static JsonNode value(Member m, JsonNode v, boolean keyval) {
        String name = m.name();
        switch (m.kind()) {
            case STR -> {
                if (!v.isString()) {
                    throw typeError(name, "string", keyval);
                }
                return v;
            }
            case FORMAT -> {
                if (!v.isString()) {
                    throw typeError(name, "string", keyval);
                }
                if (!FORMATS.contains(v.asString())) {
                    throw new CommandException("Parameter '" + name + "' does not accept value '" + v.asString() + "'");
                }
                return v;
            }
            case INT -> {
                if (v.isIntegralNumber() && v.canConvertToLong()) {
                    return v;
                }
                if (keyval && v.isString()) {
                    return JsonNodeFactory.instance.numberNode(keyvalInteger(name, v.asString()));
                }
                throw typeError(name, "integer", keyval);
            }
            case BOOL -> {
                if (v.isBoolean()) {
                    return v;
                }
                if (keyval && v.isString()) {
                    switch (v.asString()) {
                        case "on", "yes", "true", "y" -> {
                            return JsonNodeFactory.instance.booleanNode(true);
                        }
                        case "off", "no", "false", "n" -> {
                            return JsonNodeFactory.instance.booleanNode(false);
                        }
                        default -> throw new CommandException("Parameter '" + name + "' expects 'on' or 'off'");
                    }
                }
                throw typeError(name, "boolean", keyval);
            }
            default -> throw new IllegalStateException();
        }
    }

    /** QEMU's {@code qemu_strtoi64} with base 0: decimal, {@code 0x} hexadecimal or {@code 0} octal. */
    private static long keyvalInteger(String name, String text) {
        String s = text.stripLeading();
        boolean negative = s.startsWith("-");
        String digits = negative || s.startsWith("+") ? s.substring(1) : s;
        try {
            if (digits.isEmpty() || !Character.isLetterOrDigit(digits.charAt(0))) {
                throw new NumberFormatException();
            }
            long magnitude;
            if (digits.startsWith("0x") || digits.startsWith("0X")) {
                magnitude = Long.parseLong(digits.substring(2), 16);
            } else if (digits.length() > 1 && digits.startsWith("0")) {
                magnitude = Long.parseLong(digits.substring(1), 8);
            } else {
                magnitude = Long.parseLong(digits);
            }
            return negative ? -magnitude : magnitude;
        } catch (NumberFormatException e) {
            throw new CommandException("Parameter '" + name + "' expects integer");
        }
    }

    private static CommandException typeError(String name, String expected, boolean keyval) {
        if (keyval) {
            return new CommandException("Parameter '" + name + "' expects " + expected);
        }
        return new CommandException("Invalid parameter type for '" + name + "', expected: " + expected);
    }
}
