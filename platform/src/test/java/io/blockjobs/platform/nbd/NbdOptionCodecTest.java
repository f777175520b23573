package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.NbdBytes.buf;
import static io.blockjobs.platform.nbd.NbdBytes.concat;
import static io.blockjobs.platform.nbd.NbdBytes.hex;
import static io.blockjobs.platform.nbd.NbdBytes.inbound;
import static io.blockjobs.platform.nbd.NbdBytes.outbound;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.util.ReferenceCountUtil;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The handshake's codecs: {@link NbdOptionDecoder}, {@link NbdOptionEncoder} and the option reply pair. */
class NbdOptionCodecTest {
    static final byte[] FLAGS = hex("00000003");
    /** NBD_OPT_GO for "top", no information asked: the example in the decoder's Javadoc. */
    static final byte[] GO = hex("49484156454f5054 | 00000007 | 00000009 | 00000003 746f70 0000");
    static final byte[] STRUCTURED = hex("49484156454f5054 | 00000008 | 00000000");
    static final byte[] CLIENT = concat(FLAGS, STRUCTURED, GO);

    static List<Object> clientMessages() {
        return List.of(new NbdClientFlags(3), new NbdOption(Nbd.OPT_STRUCTURED_REPLY, Unpooled.EMPTY_BUFFER),
                new NbdOption(Nbd.OPT_GO, buf(hex("00000003 746f70 0000"))));
    }

    /** The example in the option reply encoder's Javadoc, then an error with a message. */
    static final byte[] SERVER = hex("0003e889045565a9 | 00000008 | 00000001 | 00000000"
            + "0003e889045565a9 | 00000007 | 80000006 | 00000004 | 6e6f7065");

    static List<NbdOptionReply> serverMessages() {
        return List.of(NbdOptionReply.ack(Nbd.OPT_STRUCTURED_REPLY),
                NbdOptionReply.error(Nbd.OPT_GO, Nbd.REP_ERR_UNKNOWN, "nope"));
    }

    private static List<Object> decode(EmbeddedChannel ch, byte[]... chunks) {
        List<ByteBuf> inputs = new ArrayList<>();
        for (byte[] c : chunks) {
            ByteBuf b = buf(c);
            inputs.add(b);
            ch.writeInbound(b);
        }
        List<Object> out = new ArrayList<>();
        for (Object m : inbound(ch)) {
            out.add(m instanceof NbdByteBufHolder h ? h.replace(Unpooled.copiedBuffer(h.data())) : m);
            ReferenceCountUtil.release(m);
            if (m instanceof NbdByteBufHolder h && h.data() != Unpooled.EMPTY_BUFFER) {
                assertThat(h.refCnt()).as("option data released").isZero();
            }
        }
        assertThat(ch.finish()).isFalse();
        assertThat(inputs).allSatisfy(b -> assertThat(b.refCnt()).as("input released").isZero());
        return out;
    }

    @Test
    void optionDecoderReadsFlagsThenOptionsWhateverTheSplit() {
        for (int i = 0; i <= CLIENT.length; i++) {
            assertThat(decode(new EmbeddedChannel(new NbdOptionDecoder(64)), Arrays.copyOfRange(CLIENT, 0, i),
                    Arrays.copyOfRange(CLIENT, i, CLIENT.length))).as("split at %d", i)
                    .containsExactlyElementsOf(clientMessages());
        }
        byte[][] bytes = new byte[CLIENT.length][];
        for (int i = 0; i < CLIENT.length; i++) {
            bytes[i] = new byte[] {CLIENT[i]};
        }
        assertThat(decode(new EmbeddedChannel(new NbdOptionDecoder(64)), bytes)).containsExactlyElementsOf(clientMessages());
    }

    @Test
    void optionEncoderIsTheDecodersInverse() {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdOptionEncoder());
        List<Object> messages = clientMessages();
        ch.writeOutbound(messages.toArray());
        assertThat(hex(outbound(ch))).isEqualTo(hex(CLIENT));
        assertThat(((NbdOption) messages.get(2)).refCnt()).isZero();
        assertThat(ch.finish()).isFalse();
    }

    @Test
    void anOversizedOptionFailsAtItsHeaderAndABadMagicFailsToo() {
        NbdOptionDecoder decoder = new NbdOptionDecoder(64);
        EmbeddedChannel ch = new EmbeddedChannel(decoder);
        ByteBuf first = buf(concat(FLAGS, hex("49484156454f5054 | 00000001 | 00000041")));
        assertThatThrownBy(() -> ch.writeInbound(first)).isInstanceOf(TooLongFrameException.class)
                .hasMessage("option 1 of 65 bytes is too long");
        assertThat(inbound(ch)).containsExactly(new NbdClientFlags(3));
        ByteBuf more = Unpooled.buffer(1 << 20).writeZero(1 << 20);
        ByteBuf valid = buf(STRUCTURED);
        assertThat(ch.writeInbound(more, valid)).isFalse();
        assertThat(decoder.buffered()).isZero();
        assertThat(ch.finish()).isFalse();
        assertThat(List.of(first, more, valid)).allSatisfy(b -> assertThat(b.refCnt()).isZero());

        EmbeddedChannel bad = new EmbeddedChannel(new NbdOptionDecoder(64));
        ByteBuf in = buf(concat(FLAGS, hex("49484156454f5055 | 00000008 | 00000000"), STRUCTURED));
        assertThatThrownBy(() -> bad.writeInbound(in)).isInstanceOf(CorruptedFrameException.class)
                .hasMessage("bad option magic 0x49484156454f5055");
        assertThat(inbound(bad)).containsExactly(new NbdClientFlags(3));
        assertThat(bad.finish()).isFalse();
        assertThat(in.refCnt()).isZero();
    }

    @Test
    void optionRepliesEncodeToTheDocumentedBytesAndDecodeBackWhateverTheSplit() {
        EmbeddedChannel enc = new EmbeddedChannel(new NbdOptionReplyEncoder());
        List<NbdOptionReply> replies = serverMessages();
        enc.writeOutbound(replies.toArray());
        assertThat(hex(outbound(enc))).isEqualTo(hex(SERVER));
        assertThat(replies.get(1).refCnt()).isZero();
        for (int i = 0; i <= SERVER.length; i++) {
            assertThat(decode(new EmbeddedChannel(new NbdOptionReplyDecoder(64)), Arrays.copyOfRange(SERVER, 0, i),
                    Arrays.copyOfRange(SERVER, i, SERVER.length))).as("split at %d", i)
                    .containsExactlyElementsOf(serverMessages());
        }
    }
}
