package io.blockjobs.platform.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** QMP framing: any split of the input gives the same frames, and bad input never stalls it. */
class QmpFrameDecoderTest {

    private static List<QmpFrameDecoder.Frame> feed(int maxLength, String... chunks) {
        EmbeddedChannel ch = new EmbeddedChannel(new QmpFrameDecoder(maxLength, 64));
        for (String c : chunks) {
            ch.writeInbound(Unpooled.copiedBuffer(c, StandardCharsets.UTF_8));
        }
        List<QmpFrameDecoder.Frame> frames = new ArrayList<>();
        QmpFrameDecoder.Frame f;
        while ((f = ch.readInbound()) != null) {
            frames.add(f);
        }
        ch.finishAndReleaseAll();
        return frames;
    }

    private static final String STREAM = "{\"execute\":\"a\",\"id\":\"}{\\\"[\"}\r\n"
            + "  [1,{\"x\":[]}] nonsense\n\"a string\" 42\n{\"execute\":\"b\"}";

    private static final List<String> EXPECTED = List.of(
            "{\"execute\":\"a\",\"id\":\"}{\\\"[\"}", "[1,{\"x\":[]}]", "nonsense", "\"a string\"", "42",
            "{\"execute\":\"b\"}");

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
        assertThat(feed(1 << 20, chunks.toArray(String[]::new)).stream().map(QmpFrameDecoder.Frame::text))
                .as("chunks %s", chunks).containsExactlyElementsOf(EXPECTED);
    }

    @Test
    void oversizedAndTooDeepTextsBecomeErrorsAndTheStreamGoesOn() {
        String big = "{\"a\":\"" + "x".repeat(500) + "\"}";
        List<QmpFrameDecoder.Frame> frames = feed(100, big.substring(0, 250), big.substring(250), " {\"ok\":1}");
        assertThat(frames).hasSize(2);
        assertThat(frames.get(0).error()).contains("larger than 100 bytes");
        assertThat(frames.get(1).text()).isEqualTo("{\"ok\":1}");

        String deep = "[".repeat(100) + "]".repeat(100);
        frames = feed(1 << 20, deep, "{\"ok\":2}");
        assertThat(frames.get(0).error()).contains("nested deeper than 64");
        assertThat(frames.get(1).text()).isEqualTo("{\"ok\":2}");
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
