package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.NbdBytes.buf;
import static io.blockjobs.platform.nbd.NbdBytes.chunk;
import static io.blockjobs.platform.nbd.NbdBytes.concat;
import static io.blockjobs.platform.nbd.NbdBytes.hex;
import static io.blockjobs.platform.nbd.NbdBytes.inbound;
import static io.blockjobs.platform.nbd.NbdBytes.outbound;
import static io.blockjobs.platform.nbd.NbdBytes.u16;
import static io.blockjobs.platform.nbd.NbdBytes.u32;
import static io.blockjobs.platform.nbd.NbdBytes.u64;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.nbd.NbdReply.BlockStatusChunk;
import io.blockjobs.platform.nbd.NbdReply.ErrorChunk;
import io.blockjobs.platform.nbd.NbdReply.Extent;
import io.blockjobs.platform.nbd.NbdReply.NoneChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetDataChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetHoleChunk;
import io.blockjobs.platform.nbd.NbdReply.SimpleReply;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.util.ReferenceCountUtil;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.LongToIntFunction;
import org.junit.jupiter.api.Test;

/** {@link NbdReplyEncoder} and {@link NbdReplyDecoder} against hand-written bytes. */
class NbdReplyCodecTest {
    /** Cookie 8 is a read of 4 bytes; nothing else carries data in a simple reply. */
    static final LongToIntFunction READS = cookie -> cookie == 8 ? 4 : 0;

    /** One of each reply, as the encoder's Javadoc lays them out. */
    static final byte[][] WIRE = {
            hex("67446698 | 00000000 | 0000000000000007"),
            hex("67446698 | 00000000 | 0000000000000008 | deadbeef"),
            hex("67446698 | 00000005 | 0000000000000009"),
            hex("668e33ef | 0001 | 0001 | 000000000000000a | 0000000c | 0000000000000200 | deadbeef"),
            hex("668e33ef | 0000 | 0002 | 000000000000000b | 0000000c | 0000000000001000 | 00010000"),
            hex("668e33ef | 0001 | 0005 | 000000000000000c | 00000014 | 00000001 | 00010000 00000000 | 000f0000 00000003"),
            hex("668e33ef | 0001 | 8001 | 000000000000000d | 00000009 | 00000016 | 0003 | 626164"),
            hex("668e33ef | 0001 | 0000 | 000000000000000e | 00000000"),
    };
    static final byte[] STREAM = concat(WIRE);

    static List<NbdReply> replies() {
        return List.of(new SimpleReply(7, 0),
                new SimpleReply(8, 0, buf(hex("deadbeef"))),
                new SimpleReply(9, Nbd.EIO),
                new OffsetDataChunk(10, true, 512, buf(hex("deadbeef"))),
                new OffsetHoleChunk(11, false, 4096, 65536),
                new BlockStatusChunk(12, true, 1, List.of(new Extent(65536, 0), new Extent(983040, 3))),
                new ErrorChunk(13, true, Nbd.EINVAL, "bad"),
                new NoneChunk(14));
    }

    /** A copy whose data is unpooled and unshared, to compare after the original is released. */
    static NbdReply copy(NbdReply r) {
        return switch (r) {
            case SimpleReply s -> s.replace(Unpooled.copiedBuffer(s.data()));
            case OffsetDataChunk c -> c.replace(Unpooled.copiedBuffer(c.data()));
            default -> r;
        };
    }

    private static List<NbdReply> decode(int maxPayload, byte[]... chunks) {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdReplyDecoder(maxPayload, READS));
        List<ByteBuf> inputs = new ArrayList<>();
        for (byte[] c : chunks) {
            ByteBuf b = buf(c);
            inputs.add(b);
            ch.writeInbound(b);
        }
        List<NbdReply> replies = inbound(ch);
        List<NbdReply> copies = new ArrayList<>();
        for (NbdReply r : replies) {
            copies.add(copy(r));
            ReferenceCountUtil.release(r);
        }
        assertThat(ch.finish()).isFalse();
        assertThat(inputs).allSatisfy(b -> assertThat(b.refCnt()).as("input released").isZero());
        assertThat(replies).filteredOn(r -> r instanceof NbdByteBufHolder h && h.data() != Unpooled.EMPTY_BUFFER)
                .allSatisfy(r -> assertThat(ReferenceCountUtil.refCnt(r)).as("reply data released").isZero());
        return copies;
    }

    @Test
    void encoderWritesTheDocumentedBytes() {
        List<NbdReply> replies = replies();
        for (int i = 0; i < replies.size(); i++) {
            EmbeddedChannel ch = new EmbeddedChannel(new NbdReplyEncoder());
            NbdReply r = replies.get(i);
            ch.writeOutbound(r);
            assertThat(hex(outbound(ch))).as("%s", r).isEqualTo(hex(WIRE[i]));
            if (r instanceof NbdByteBufHolder h && h.data() != Unpooled.EMPTY_BUFFER) {
                assertThat(h.refCnt()).as("data released after it was written").isZero();
            }
            assertThat(ch.finish()).isFalse();
        }
    }

    @Test
    void encoderCutsLongErrorMessagesAtACharacterBoundary() {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdReplyEncoder());
        ch.writeOutbound(new ErrorChunk(1, true, Nbd.EIO, "€".repeat(2000))); // 3 bytes each: 4095 fit
        byte[] euro = "€".repeat(1365).getBytes(StandardCharsets.UTF_8);
        assertThat(hex(outbound(ch))).isEqualTo(hex(chunk(1, 0x8001, 1, concat(u32(Nbd.EIO), u16(4095), euro))));
    }

    @Test
    void decodesRepliesSplitAtEveryByteBoundary() {
        for (int i = 0; i <= STREAM.length; i++) {
            assertThat(decode(64, Arrays.copyOfRange(STREAM, 0, i), Arrays.copyOfRange(STREAM, i, STREAM.length)))
                    .as("split at %d", i).containsExactlyElementsOf(replies());
        }
    }

    @Test
    void decodesOneByteAtATime() {
        byte[][] bytes = new byte[STREAM.length][];
        for (int i = 0; i < STREAM.length; i++) {
            bytes[i] = new byte[] {STREAM[i]};
        }
        assertThat(decode(64, bytes)).containsExactlyElementsOf(replies());
    }

    @Test
    void encoderAndDecoderAreInverses() {
        EmbeddedChannel enc = new EmbeddedChannel(new NbdReplyEncoder());
        enc.writeOutbound(replies().toArray());
        assertThat(hex(outbound(enc))).isEqualTo(hex(STREAM));
        assertThat(decode(64, STREAM)).containsExactlyElementsOf(replies());
    }

    @Test
    void unknownErrorTypesAreErrorsAndErrorOffsetKeepsItsMessage() {
        byte[] errorOffset = chunk(1, Nbd.REPLY_TYPE_ERROR_OFFSET, 5, concat(u32(Nbd.EIO), u16(2), hex("6f6b"), u64(4096)));
        assertThat(decode(64, errorOffset)).containsExactly(new ErrorChunk(5, true, Nbd.EIO, "ok"));
    }

    @Test
    void anOversizedChunkFailsAtItsHeaderAndNothingIsBuffered() {
        NbdReplyDecoder decoder = new NbdReplyDecoder(16, READS);
        EmbeddedChannel ch = new EmbeddedChannel(decoder);
        ByteBuf fits = buf(chunk(1, 1, 1, new byte[24])); // 8 bytes of offset, 16 of data: the most accepted
        ch.writeInbound(fits);
        assertThat(inbound(ch)).singleElement().satisfies(r -> {
            assertThat(((OffsetDataChunk) r).data().readableBytes()).isEqualTo(16);
            ReferenceCountUtil.release(r);
        });
        ByteBuf header = buf(Arrays.copyOf(chunk(1, 1, 2, new byte[25]), 20));
        assertThatThrownBy(() -> ch.writeInbound(header)).isInstanceOf(TooLongFrameException.class)
                .hasMessage("reply chunk of 25 bytes");
        assertThat(decoder.buffered()).isZero();
        ByteBuf more = Unpooled.buffer(1 << 20).writeZero(1 << 20);
        ByteBuf valid = buf(WIRE[0]);
        assertThat(ch.writeInbound(more, valid)).isFalse();
        assertThat(decoder.buffered()).isZero();
        assertThat(ch.finish()).isFalse();
        assertThat(List.of(fits, header, more, valid)).allSatisfy(b -> assertThat(b.refCnt()).isZero());
    }

    @Test
    void aSimpleReplyAnnouncedLongerThanTheMaximumFails() {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdReplyDecoder(3, READS));
        ByteBuf in = buf(WIRE[1]);
        assertThatThrownBy(() -> ch.writeInbound(in)).isInstanceOf(TooLongFrameException.class);
        assertThat(ch.finish()).isFalse();
        assertThat(in.refCnt()).isZero();
    }

    @Test
    void badMagicAndMalformedChunksAreCorrupt() {
        for (byte[] bad : List.of(hex("67446699 00000000 0000000000000007"),
                chunk(1, Nbd.REPLY_TYPE_OFFSET_HOLE, 1, new byte[8]), // hole without its length
                chunk(1, Nbd.REPLY_TYPE_BLOCK_STATUS, 1, new byte[4 + 7]), // a partial extent
                chunk(0, Nbd.REPLY_TYPE_NONE, 1, new byte[0]), // NONE without DONE
                chunk(1, 3, 1, new byte[0]))) { // unknown, and not an error
            EmbeddedChannel ch = new EmbeddedChannel(new NbdReplyDecoder(64, READS));
            ByteBuf in = buf(concat(bad, WIRE[0]));
            assertThatThrownBy(() -> ch.writeInbound(in)).as(hex(bad)).isInstanceOf(CorruptedFrameException.class);
            assertThat((Object) ch.readInbound()).as("nothing after the corrupt reply").isNull();
            assertThat(ch.finish()).isFalse();
            assertThat(in.refCnt()).isZero();
        }
    }
}
