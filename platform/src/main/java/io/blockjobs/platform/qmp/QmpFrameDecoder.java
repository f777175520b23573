package io.blockjobs.platform.qmp;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.nio.charset.StandardCharsets;
import java.util.List;
import tools.jackson.databind.JsonNode;

/**
 * Splits the QMP input stream into JSON values as QEMU's json-streamer does (QEMU 7.2): its lexer
 * ({@link QmpJsonLexer}) makes tokens, a value ends when its braces and brackets balance (or go
 * negative), and {@link QmpJsonParser} parses it with QEMU's grammar and messages. A lexical error
 * becomes "JSON parse error, stray '...'" and the stream goes on after it, as in QEMU.
 *
 * <pre>
 *   {"execute": "query-version"}\r\n{"execute": ...   →  Frame(value), Frame(value), ...
 *   nonsense {"execute": ...}                        →  Frame("invalid keyword 'nonsense'"), Frame(value)
 *   "\n{"execute": ...}                              →  Frame("stray '"\n'"), Frame(value)
 *   {"a": "... 2 MiB ..."} {"execute": ...}          →  Frame(size limit), Frame(value)
 * </pre>
 *
 * <p>Its memory is bounded: it holds the bytes of the value being read, at most
 * {@code maxLength}. A longer or deeper value is refused at once, with one error, and its
 * remaining bytes are skipped without being kept (QEMU answers each of their tokens instead).
 */
final class QmpFrameDecoder extends ByteToMessageDecoder {

    /** One JSON value, or why the bytes could not be one. */
    record Frame(JsonNode value, String error) {
    }

    /** Longest token text quoted in a "stray" error. */
    private static final int MAX_QUOTED = 256;

    private final int maxLength;
    private final int maxDepth;
    private final QmpJsonLexer lexer = new QmpJsonLexer(new Streamer());

    // Positions are relative to the buffer's reader index, which always sits on the first byte kept.
    private ByteBuf in;
    private List<Object> out;
    private int scanned; // bytes from the reader index already fed to the lexer
    private int valueStart = -1; // where the value being read began; -1 while no token of it came
    private int braces;
    private int brackets;
    private boolean discarding; // too long or too deep: refused, its bytes skipped until it ends

    QmpFrameDecoder(int maxLength, int maxDepth) {
        this.maxLength = maxLength;
        this.maxDepth = maxDepth;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf buffer, List<Object> output) {
        in = buffer;
        out = output;
        try {
            int base = in.readerIndex();
            int available = in.readableBytes();
            for (int i = scanned; i < available; i++) {
                lexer.feed(in.getByte(base + i), i);
                if (!discarding && i + 1 - keepFrom(i + 1) > maxLength) {
                    refuse("JSON token size limit exceeded (a QMP message may be at most " + size(maxLength) + ")");
                }
            }
            int keep = keepFrom(available);
            in.skipBytes(keep);
            scanned = available - keep;
            lexer.shift(keep);
            if (valueStart >= 0) {
                valueStart -= keep;
            }
        } finally {
            in = null;
            out = null;
        }
    }

    private static String size(int bytes) {
        return bytes % (1 << 20) == 0 ? (bytes >> 20) + " MiB" : bytes + " bytes";
    }

    /** The first byte still needed: that of the value, or of the token, being read. */
    private int keepFrom(int end) {
        if (discarding) {
            return end;
        }
        if (valueStart >= 0) {
            return valueStart;
        }
        int token = lexer.tokenStart();
        return token >= 0 ? token : end;
    }

    /** Answers the value being read with an error now and skips the rest of it. */
    private void refuse(String error) {
        out.add(new Frame(null, error));
        discarding = true;
        valueStart = -1;
        if (braces <= 0 && brackets <= 0) { // a top-level token: it ends with itself
            braces = 0;
            brackets = 0;
        }
    }

    private void reset() {
        valueStart = -1;
        braces = 0;
        brackets = 0;
        discarding = false;
    }

    /** QEMU's json_message_process_token: counts nesting and cuts values out of the token stream. */
    private final class Streamer implements QmpJsonLexer.Sink {
        @Override
        public void token(int type, int start, int end) {
            switch (type) {
                case QmpJsonLexer.LCURLY -> braces++;
                case QmpJsonLexer.RCURLY -> braces--;
                case QmpJsonLexer.LSQUARE -> brackets++;
                case QmpJsonLexer.RSQUARE -> brackets--;
                default -> {
                }
            }
            boolean open = (braces > 0 || brackets > 0) && braces >= 0 && brackets >= 0;
            if (discarding) {
                if (!open) {
                    reset();
                }
                return;
            }
            if (valueStart < 0) {
                valueStart = start;
            }
            if (braces + brackets > maxDepth) {
                refuse("JSON nesting depth limit exceeded (objects and arrays may nest at most "
                        + maxDepth + " levels deep)");
                return;
            }
            if (open) {
                return;
            }
            int base = in.readerIndex();
            Frame frame;
            try {
                frame = new Frame(QmpJsonParser.parse(in, base + valueStart, base + end), null);
            } catch (QmpJsonParser.ParseException e) {
                frame = new Frame(null, e.getMessage());
            }
            out.add(frame);
            reset();
        }

        @Override
        public void error(int start, int end) {
            if (discarding) { // already answered; the lexer skips on to where it can start again
                reset();
                return;
            }
            int base = in.readerIndex();
            int shown = Math.min(end - start, MAX_QUOTED);
            String stray = in.toString(base + start, shown, StandardCharsets.UTF_8);
            int nul = stray.indexOf('\0'); // QEMU prints the token as a C string
            if (nul >= 0) {
                stray = stray.substring(0, nul);
            }
            out.add(new Frame(null, "JSON parse error, stray '" + stray + (shown < end - start ? "...'" : "'")));
            reset();
        }
    }
}
