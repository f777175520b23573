package io.blockjobs.platform.qmp;

import io.netty.buffer.ByteBuf;
import java.math.BigInteger;
import java.util.Arrays;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.JsonNodeFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * QEMU's JSON parser (qobject/json-parser.c in QEMU 7.2) over one message that
 * {@link QmpFrameDecoder} cut out of the stream: the same grammar and the same errors, word for
 * word ("JSON parse error, duplicate key", "... is not a valid Unicode character", ...). Strings
 * are QEMU's modified UTF-8: invalid sequences, lone surrogates and noncharacters are errors,
 * never replaced.
 */
final class QmpJsonParser {

    /** A JSON text QEMU would refuse; the message is QEMU's. */
    static final class ParseException extends Exception {
        private static final long serialVersionUID = 1L;

        ParseException(String message) {
            super("JSON parse error, " + message, null, false, false);
        }
    }

    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;
    private static final BigInteger MAX_U64 = BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE);

    private final ByteBuf in;
    private int[] types = new int[16];
    private int[] starts = new int[16];
    private int[] ends = new int[16];
    private int count;
    private int next; // the next token to read

    private QmpJsonParser(ByteBuf in) {
        this.in = in;
    }

    /** Parses the bytes {@code [from, to)} of {@code in}: exactly the tokens of one JSON value. */
    static JsonNode parse(ByteBuf in, int from, int to) throws ParseException {
        QmpJsonParser p = new QmpJsonParser(in);
        QmpJsonLexer lexer = new QmpJsonLexer(new QmpJsonLexer.Sink() {
            @Override
            public void token(int type, int start, int end) {
                p.add(type, start, end);
            }

            @Override
            public void error(int start, int end) {
                throw new IllegalStateException("the framing let a lexical error through");
            }
        });
        for (int i = from; i < to; i++) {
            lexer.feed(in.getByte(i), i);
        }
        lexer.end(to);
        return p.value();
    }

    private void add(int type, int start, int end) {
        if (count == types.length) {
            types = Arrays.copyOf(types, count * 2);
            starts = Arrays.copyOf(starts, count * 2);
            ends = Arrays.copyOf(ends, count * 2);
        }
        types[count] = type;
        starts[count] = start;
        ends[count] = end;
        count++;
    }

    private int peek() {
        return next < count ? types[next] : -1;
    }

    private JsonNode value() throws ParseException {
        switch (peek()) {
            case -1 -> throw new ParseException("premature EOI");
            case QmpJsonLexer.LCURLY -> {
                return object();
            }
            case QmpJsonLexer.LSQUARE -> {
                return array();
            }
            case QmpJsonLexer.STRING -> {
                return NODES.stringNode(string(next++));
            }
            case QmpJsonLexer.INTEGER -> {
                return integer(text(next++));
            }
            case QmpJsonLexer.FLOAT -> {
                return NODES.numberNode(Double.parseDouble(text(next++)));
            }
            case QmpJsonLexer.KEYWORD_TOKEN -> {
                String word = text(next++);
                return switch (word) {
                    case "true" -> NODES.booleanNode(true);
                    case "false" -> NODES.booleanNode(false);
                    case "null" -> NODES.nullNode();
                    default -> throw new ParseException("invalid keyword '" + word + "'");
                };
            }
            default -> throw new ParseException("expecting value");
        }
    }

    private ObjectNode object() throws ParseException {
        next++; // {
        ObjectNode object = NODES.objectNode();
        if (peek() == -1) {
            throw new ParseException("premature EOI");
        }
        if (peek() == QmpJsonLexer.RCURLY) {
            next++;
            return object;
        }
        pair(object);
        while (true) {
            int t = peek();
            if (t == -1) {
                throw new ParseException("premature EOI");
            }
            next++;
            if (t == QmpJsonLexer.RCURLY) {
                return object;
            }
            if (t != QmpJsonLexer.COMMA) {
                throw new ParseException("expected separator in dict");
            }
            pair(object);
        }
    }

    private void pair(ObjectNode object) throws ParseException {
        if (peek() == -1) {
            throw new ParseException("premature EOI");
        }
        boolean isString = peek() == QmpJsonLexer.STRING;
        JsonNode key = value();
        if (!isString) {
            throw new ParseException("key is not a string in object");
        }
        if (peek() == -1) {
            throw new ParseException("premature EOI");
        }
        if (types[next++] != QmpJsonLexer.COLON) {
            throw new ParseException("missing : in object pair");
        }
        JsonNode value = value();
        String name = key.asString();
        if (object.has(name)) {
            throw new ParseException("duplicate key");
        }
        object.set(name, value);
    }

    private ArrayNode array() throws ParseException {
        next++; // [
        ArrayNode array = NODES.arrayNode();
        if (peek() == -1) {
            throw new ParseException("premature EOI");
        }
        if (peek() == QmpJsonLexer.RSQUARE) {
            next++;
            return array;
        }
        array.add(value());
        while (true) {
            int t = peek();
            if (t == -1) {
                throw new ParseException("premature EOI");
            }
            next++;
            if (t == QmpJsonLexer.RSQUARE) {
                return array;
            }
            if (t != QmpJsonLexer.COMMA) {
                throw new ParseException("expected separator in list");
            }
            array.add(value());
        }
    }

    private String text(int token) {
        return in.toString(starts[token], ends[token] - starts[token], java.nio.charset.StandardCharsets.ISO_8859_1);
    }

    /** QEMU's integers: int64 if it fits, else uint64, else a double. */
    private static JsonNode integer(String digits) {
        try {
            long v = Long.parseLong(digits);
            return v == (int) v ? NODES.numberNode((int) v) : NODES.numberNode(v);
        } catch (NumberFormatException e) {
            if (!digits.startsWith("-")) {
                BigInteger big = new BigInteger(digits);
                if (big.compareTo(MAX_U64) <= 0) {
                    return NODES.numberNode(big);
                }
            }
            return NODES.numberNode(Double.parseDouble(digits));
        }
    }

    /** QEMU's parse_string: escapes, surrogate pairs, and modified UTF-8, checked. */
    private String string(int token) throws ParseException {
        int end = ends[token];
        int p = starts[token];
        byte quote = in.getByte(p++);
        StringBuilder s = new StringBuilder(end - p);
        while (true) {
            byte b = in.getByte(p);
            if (b == quote) {
                return s.toString();
            }
            if (b == '\\') {
                int begin = p++;
                byte e = in.getByte(p++);
                switch (e) {
                    case '"' -> s.append('"');
                    case '\'' -> s.append('\'');
                    case '\\' -> s.append('\\');
                    case '/' -> s.append('/');
                    case 'b' -> s.append('\b');
                    case 'f' -> s.append('\f');
                    case 'n' -> s.append('\n');
                    case 'r' -> s.append('\r');
                    case 't' -> s.append('\t');
                    case 'u' -> {
                        int cp = hex4(p, end);
                        p += 4;
                        if (cp >= 0xD800 && cp <= 0xDBFF && byteAt(p, end) == '\\' && byteAt(p + 1, end) == 'u') {
                            int trailing = hex4(p + 2, end);
                            if (trailing >= 0xDC00 && trailing <= 0xDFFF) {
                                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF);
                                p += 6;
                            } else {
                                cp = -1;
                            }
                        }
                        if (!validCodePoint(cp)) {
                            int shown = Math.min(p, end) - begin;
                            throw new ParseException(in.toString(begin, shown, java.nio.charset.StandardCharsets.ISO_8859_1)
                                    + " is not a valid Unicode character");
                        }
                        s.appendCodePoint(cp);
                    }
                    default -> throw new ParseException("invalid escape sequence in string");
                }
                continue;
            }
            p = utf8(p, end, s);
        }
    }

    private int byteAt(int p, int end) {
        return p < end ? in.getByte(p) & 0xFF : 0;
    }

    private int hex4(int p, int end) {
        int cp = 0;
        for (int i = 0; i < 4; i++) {
            int d = Character.digit(byteAt(p + i, end), 16);
            if (d < 0) {
                return -1;
            }
            cp = cp << 4 | d;
        }
        return cp;
    }

    /** QEMU's mod_utf8_codepoint: one character at {@code p}, appended; returns where the next begins. */
    private int utf8(int p, int end, StringBuilder s) throws ParseException {
        int first = byteAt(p, end);
        int cp;
        int length = 1;
        if (first < 0x80) {
            cp = first;
        } else if (first >= 0xFE || (first & 0x40) == 0) {
            cp = -1; // impossible byte, or a continuation byte where a character should begin
        } else {
            for (int mask = 0x40; (first & mask) != 0; mask >>= 1) {
                length++;
            }
            cp = first & ((0x80 >> length) - 1);
            for (int i = 1; i < length; i++) {
                int b = byteAt(p + i, end);
                if ((b & 0xC0) != 0x80) {
                    throw new ParseException("invalid UTF-8 sequence in string");
                }
                cp = cp << 6 | (b & 0x3F);
            }
            int[] minimum = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
            if (!validCodePoint(cp) || (cp < minimum[length - 2] && !(cp == 0 && length == 2))) {
                cp = -1; // overlong, except QEMU's \xC0\x80 for U+0000
            }
        }
        if (cp < 0) {
            throw new ParseException("invalid UTF-8 sequence in string");
        }
        s.appendCodePoint(cp);
        return p + length;
    }

    /** QEMU's is_valid_codepoint: Unicode scalar values that are not noncharacters. */
    private static boolean validCodePoint(int cp) {
        if (cp < 0 || cp > 0x10FFFF) {
            return false;
        }
        if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) {
            return false;
        }
        return cp < 0xD800 || cp > 0xDFFF;
    }
}
