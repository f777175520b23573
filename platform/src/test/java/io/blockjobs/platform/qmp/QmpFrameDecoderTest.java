package io.blockjobs.platform.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * QMP framing and parsing as QEMU 7.2's json-lexer, json-streamer and json-parser do them: any
 * split of the input gives the same frames, errors have QEMU's words, and bad input never stalls
 * the stream. (QmpProtocolIT compares the same cases with qemu-storage-daemon on the wire.)
 */
class QmpFrameDecoderTest {

    private static List<String> feed(int maxLength, int maxDepth, byte[]... chunks) {
        EmbeddedChannel ch = new EmbeddedChannel(new QmpFrameDecoder(maxLength, maxDepth));
        for (byte[] c : chunks) {
            ch.writeInbound(Unpooled.wrappedBuffer(c));
        }
        List<String> frames = new ArrayList<>();
        QmpFrameDecoder.Frame f;
        while ((f = ch.readInbound()) != null) {
            frames.add(f.error() != null ? "error: " + f.error() : f.value().toString());
        }
        ch.finishAndReleaseAll();
        return frames;
    }

    private static List<String> feed(String... chunks) {
        byte[][] bytes = new byte[chunks.length][];
        for (int i = 0; i < chunks.length; i++) {
            bytes[i] = chunks[i].getBytes(StandardCharsets.ISO_8859_1); // each char below 256 is one raw byte
        }
        return feed(1 << 20, 1024, bytes);
    }

    private static final String STREAM = "{\"execute\":\"a\",\"id\":\"}{\\\"[\"}\r\n"
            + "  [1,{\"x\":[]}] nonsense\n\"a string\" 42\n{\"execute\":\"b\"}'single' -7.5e1 "
            + "\"stray\n{\"execute\":\"c\"}}{\"execute\":\"d\",\"a\":1,\"a\":2}\u00ff{\"x\":\"\\ud83d\\ude00\"}";

    private static final List<String> EXPECTED = List.of(
            "{\"execute\":\"a\",\"id\":\"}{\\\"[\"}",
            "[1,{\"x\":[]}]",
            "error: JSON parse error, invalid keyword 'nonsense'",
            "\"a string\"",
            "42",
            "{\"execute\":\"b\"}",
            "\"single\"",
            "-75.0",
            "error: JSON parse error, stray '\"stray\n'",
            "{\"execute\":\"c\"}",
            "error: JSON parse error, expecting value",
            "error: JSON parse error, duplicate key",
            "error: JSON parse error, stray '\ufffd'",
            "{\"x\":\"\ud83d\ude00\"}");

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4, 5, 6, 7, 8})
    void anySplitGivesTheSameFrames(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<String> chunks = new ArrayList<>();
        int pos = 0;
        while (pos < STREAM.length()) {
            int n = 1 + r.nextInt(Math.min(12, STREAM.length() - pos));
            chunks.add(STREAM.substring(pos, pos + n));
            pos += n;
        }
        assertThat(feed(chunks.toArray(String[]::new))).as("chunks %s", chunks).containsExactlyElementsOf(EXPECTED);
    }

    @Test
    void qemusGrammarAndMessages() {
        String[][] cases = {
            {"{\"a\" 1}", "error: JSON parse error, missing : in object pair"},
            {"{1:2}", "error: JSON parse error, key is not a string in object"},
            {"{\"a\":1 \"b\":2}", "error: JSON parse error, expected separator in dict"},
            {"[1 2]", "error: JSON parse error, expected separator in list"},
            {"[1,]", "error: JSON parse error, expecting value"},
            {"{\"a\":}", "error: JSON parse error, expecting value"},
            {"\"\\x\"", "error: JSON parse error, invalid escape sequence in string"},
            {"\"\\ud800\"", "error: JSON parse error, \\ud800 is not a valid Unicode character"},
            {"\"\\udc00\"", "error: JSON parse error, \\udc00 is not a valid Unicode character"},
            {"\"\\ud800\\u0041\"", "error: JSON parse error, \\ud800 is not a valid Unicode character"},
            {"\"\\uffff\"", "error: JSON parse error, \\uffff is not a valid Unicode character"},
            {"\"\\u12\"", "error: JSON parse error, \\u12\" is not a valid Unicode character"},
            {"\"\u00c3\u0028\"", "error: JSON parse error, invalid UTF-8 sequence in string"},
            {"\"\u00ed\u00a0\u0080\"", "error: JSON parse error, invalid UTF-8 sequence in string"}, // a surrogate, encoded
            {"\"\u00e0\u0080\u00af\"", "error: JSON parse error, invalid UTF-8 sequence in string"}, // overlong
            {"\"\u00c0\u0080\"", "\"\\u0000\""}, // modified UTF-8's U+0000
            {"\"\u00c3\u00a9\"", "\"\u00e9\""},
            {"01", "error: JSON parse error, stray '01'"},
            {"Nonsense {\"ok\":1}", "error: JSON parse error, stray 'N'", "{\"ok\":1}"},
            {"18446744073709551615 -9223372036854775809", "18446744073709551615", "-9.223372036854776E18"},
        };
        for (String[] c : cases) {
            List<String> expected = List.of(c).subList(1, c.length);
            assertThat(feed(c[0] + "\n")).as(c[0]).containsExactlyElementsOf(expected);
        }
    }

    @Test
    void oversizedAndTooDeepValuesAreRefusedAtOnceAndSkipped() {
        String big = "{\"a\":\"" + "x".repeat(500) + "\", \"b\": [\"}\"]}";
        byte[] bytes = big.getBytes(StandardCharsets.US_ASCII);
        List<String> frames = feed(100, 64, java.util.Arrays.copyOfRange(bytes, 0, 250),
                java.util.Arrays.copyOfRange(bytes, 250, bytes.length), " {\"ok\":1}".getBytes(StandardCharsets.US_ASCII));
        assertThat(frames).containsExactly(
                "error: JSON token size limit exceeded (a QMP message may be at most 100 bytes)", "{\"ok\":1}");

        String deep = "[".repeat(65) + "{\"x\":\"]]]\"}" + "]".repeat(65);
        frames = feed(1 << 20, 64, deep.getBytes(StandardCharsets.US_ASCII), "{\"ok\":2}".getBytes(StandardCharsets.US_ASCII));
        assertThat(frames).containsExactly(
                "error: JSON nesting depth limit exceeded (objects and arrays may nest at most 64 levels deep)", "{\"ok\":2}");
        String limit = "[".repeat(64) + "]".repeat(64);
        assertThat(feed(1 << 20, 64, limit.getBytes(StandardCharsets.US_ASCII))).containsExactly(limit);
    }

    @Test
    void theRefusalComesBeforeTheValueEnds() {
        EmbeddedChannel ch = new EmbeddedChannel(new QmpFrameDecoder(1000, 64));
        ch.writeInbound(Unpooled.copiedBuffer("[" + "1,".repeat(600), StandardCharsets.US_ASCII));
        QmpFrameDecoder.Frame f = ch.readInbound();
        assertThat(f.error()).startsWith("JSON token size limit exceeded");
        for (int i = 0; i < 100; i++) { // the rest is skipped, not kept
            ch.writeInbound(Unpooled.copiedBuffer("1,".repeat(1000), StandardCharsets.US_ASCII));
        }
        assertThat((Object) ch.readInbound()).isNull();
        ch.writeInbound(Unpooled.copiedBuffer("1]{\"ok\":3}", StandardCharsets.US_ASCII));
        f = ch.readInbound();
        assertThat(f.value().toString()).isEqualTo("{\"ok\":3}");
        ch.finishAndReleaseAll();
    }

    @Test
    void noBytesAreLeaked() {
        EmbeddedChannel ch = new EmbeddedChannel(new QmpFrameDecoder(1 << 20, 64));
        ByteBuf in = Unpooled.copiedBuffer("{\"execute\":\"x\"}{\"partial", StandardCharsets.UTF_8);
        ch.writeInbound(in);
        assertThat((QmpFrameDecoder.Frame) ch.readInbound()).isNotNull();
        ch.finishAndReleaseAll();
        assertThat(in.refCnt()).isZero();
    }
}
