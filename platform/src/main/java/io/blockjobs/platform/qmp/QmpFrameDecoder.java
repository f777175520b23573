package io.blockjobs.platform.qmp;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Splits the QMP input stream into JSON texts, as QEMU's json-streamer does: by counting braces
 * and brackets outside strings. Unlike Netty's JsonObjectDecoder it never gives up on a
 * connection: an oversized text becomes a {@link Frame} with an error, and the stream goes on
 * after it; top-level scalars and garbage become frames of their own for the parser to refuse.
 *
 * <pre>
 *   {"execute": "query-version"}\r\n{"execute": ...   →  Frame(text), Frame(text), ...
 *   nonsense {"execute": ...}                        →  Frame("nonsense"), Frame(text)
 *   {"a": "... 2 MiB ..."} {"execute": ...}          →  Frame(error), Frame(text)
 * </pre>
 */
final class QmpFrameDecoder extends ByteToMessageDecoder {

    /** One JSON text, or why the bytes could not be one. */
    record Frame(String text, String error) {
    }

    private final int maxLength;
    private final int maxDepth;

    // State of the text being assembled, kept across reads.
    private boolean inText;
    private boolean scalar; // a top-level token that is not an object or array
    private int scanned; // bytes of it examined and still in the buffer
    private int depth;
    private boolean inString;
    private boolean escaped;
    private boolean discarding; // too long or too deep: drop it and report once it ends

    QmpFrameDecoder(int maxLength, int maxDepth) {
        this.maxLength = maxLength;
        this.maxDepth = maxDepth;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        while (true) {
            if (!inText) {
                while (in.isReadable() && isSpace(in.getByte(in.readerIndex()))) {
                    in.skipBytes(1);
                }
                if (!in.isReadable()) {
                    return;
                }
                byte first = in.getByte(in.readerIndex());
                inText = true;
                scalar = first != '{' && first != '[';
                scanned = 0;
            }
            int start = in.readerIndex();
            int end = scan(in, start + scanned, in.writerIndex(), start);
            if (end < 0) { // the text goes on in a later read
                scanned = in.writerIndex() - start;
                if (discarding || scanned > maxLength) {
                    discarding = true;
                    in.skipBytes(scanned);
                    scanned = 0;
                }
                return;
            }
            int length = end - start;
            if (discarding || length > maxLength) {
                in.skipBytes(length);
                out.add(new Frame(null, "JSON parse error, the message is larger than " + maxLength
                        + " bytes or nested deeper than " + maxDepth + " levels"));
            } else {
                out.add(new Frame(in.toString(start, length, StandardCharsets.UTF_8), null));
                in.skipBytes(length);
            }
            inText = false;
            depth = 0;
            inString = false;
            escaped = false;
            discarding = false;
        }
    }

    /** Scans {@code [from, to)}; returns the end of the text (exclusive) or -1 if it is not complete. */
    private int scan(ByteBuf in, int from, int to, int textStart) {
        for (int i = from; i < to; i++) {
            byte b = in.getByte(i);
            if (inString) {
                if (escaped) {
                    escaped = false;
                } else if (b == '\\') {
                    escaped = true;
                } else if (b == '"') {
                    inString = false;
                    if (scalar && depth == 0) {
                        return i + 1;
                    }
                }
            } else if (scalar) {
                if (b == '"' && i == textStart) {
                    inString = true;
                } else if (i > textStart && (isSpace(b) || b == '{' || b == '[')) {
                    return i;
                }
            } else if (b == '"') {
                inString = true;
            } else if (b == '{' || b == '[') {
                if (++depth > maxDepth) {
                    discarding = true;
                }
            } else if (b == '}' || b == ']') {
                if (--depth == 0) {
                    return i + 1;
                }
            }
        }
        return -1;
    }

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\n' || b == '\r' || b == '\t';
    }
}
