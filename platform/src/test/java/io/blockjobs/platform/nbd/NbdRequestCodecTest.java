package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.NbdBytes.buf;
import static io.blockjobs.platform.nbd.NbdBytes.concat;
import static io.blockjobs.platform.nbd.NbdBytes.hex;
import static io.blockjobs.platform.nbd.NbdBytes.inbound;
import static io.blockjobs.platform.nbd.NbdBytes.outbound;
import static io.blockjobs.platform.nbd.NbdBytes.request;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@link NbdRequestDecoder} and {@link NbdRequestEncoder} against hand-written bytes. */
class NbdRequestCodecTest {
    /** A read of 4 KiB at 1 MiB, cookie 7: the example in the decoder's Javadoc. */
    static final byte[] READ = hex("25609513 | 0000 | 0000 | 0000000000000007 | 0000000000100000 | 00001000");
    /** A FUA write of 4 bytes at 512, cookie 8. */
    static final byte[] WRITE = hex("25609513 | 0001 | 0001 | 0000000000000008 | 0000000000000200 | 00000004 | deadbeef");
    /** A flush, cookie 9. */
    static final byte[] FLUSH = hex("25609513 | 0000 | 0003 | 0000000000000009 | 0000000000000000 | 00000000");
    static final byte[] STREAM = concat(READ, WRITE, FLUSH);

    static List<NbdRequest> expected() {
        return List.of(new NbdRequest(0, Nbd.CMD_READ, 7, 1 << 20, 4096),
                NbdRequest.write(Nbd.CMD_FLAG_FUA, 8, 512, buf(hex("deadbeef"))),
                new NbdRequest(0, Nbd.CMD_FLUSH, 9, 0, 0));
    }

    /** Feeds {@code chunks}, returns the requests (released), checks every buffer was released. */
    private static List<NbdRequest> decode(int maxPayload, byte[]... chunks) {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(maxPayload));
        List<ByteBuf> inputs = new ArrayList<>();
        for (byte[] c : chunks) {
            ByteBuf b = buf(c);
            inputs.add(b);
            ch.writeInbound(b);
        }
        List<NbdRequest> requests = inbound(ch);
        List<NbdRequest> copies = new ArrayList<>();
        for (NbdRequest r : requests) {
            copies.add(r.replace(Unpooled.copiedBuffer(r.data()))); // a copy, to compare after the release
            r.release();
        }
        assertThat(ch.finish()).isFalse();
        assertThat(inputs).allSatisfy(b -> assertThat(b.refCnt()).as("input released").isZero());
        assertThat(requests).filteredOn(r -> r.data() != Unpooled.EMPTY_BUFFER)
                .allSatisfy(r -> assertThat(r.data().refCnt()).as("request data released").isZero());
        return copies;
    }

    @Test
    void encoderWritesTheDocumentedBytesAndPassesDataOnWithoutCopying() {
        EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestEncoder());
        List<NbdRequest> requests = expected();
        ByteBuf data = requests.get(1).data();
        assertThat(ch.writeOutbound(requests.toArray())).isTrue();
        ByteBuf read = ch.readOutbound();
        assertThat(hex(ByteBufUtil.getBytes(read))).isEqualTo(hex(READ));
        read.release();
        ByteBuf header = ch.readOutbound();
        assertThat(hex(ByteBufUtil.getBytes(header))).isEqualTo(hex(Arrays.copyOf(WRITE, 28)));
        header.release();
        ByteBuf payload = ch.readOutbound();
        assertThat(payload).as("the data itself, not a copy").isSameAs(data);
        assertThat(data.refCnt()).as("the request's reference, now the socket's").isOne();
        payload.release();
        assertThat(hex(outbound(ch))).isEqualTo(hex(FLUSH));
        assertThat(data.refCnt()).isZero();
        assertThat(ch.finish()).isFalse();
    }

    @Test
    void decodesARequestStreamSplitAtEveryByteBoundary() {
        for (int i = 0; i <= STREAM.length; i++) {
            assertThat(decode(64, Arrays.copyOfRange(STREAM, 0, i), Arrays.copyOfRange(STREAM, i, STREAM.length)))
                    .as("split at %d", i).containsExactlyElementsOf(expected());
        }
    }

    @Test
    void decodesOneByteAtATime() {
        byte[][] bytes = new byte[STREAM.length][];
        for (int i = 0; i < STREAM.length; i++) {
            bytes[i] = new byte[] {STREAM[i]};
        }
        assertThat(decode(64, bytes)).containsExactlyElementsOf(expected());
    }

    @Test
    void decodesSeveralRequestsInOneBuffer() {
        byte[] disc = hex("25609513 | 0000 | 0002 | 000000000000000a | 0000000000000000 | 00000000");
        byte[] zeroes = request(Nbd.CMD_FLAG_NO_HOLE | Nbd.CMD_FLAG_FAST_ZERO, Nbd.CMD_WRITE_ZEROES, -1L, Long.MIN_VALUE,
                0xffffffffL);
        List<NbdRequest> all = new ArrayList<>(expected());
        all.add(new NbdRequest(Nbd.CMD_FLAG_NO_HOLE | Nbd.CMD_FLAG_FAST_ZERO, Nbd.CMD_WRITE_ZEROES, -1L, Long.MIN_VALUE,
                0xffffffffL));
        all.add(new NbdRequest(0, Nbd.CMD_DISC, 10, 0, 0));
        assertThat(decode(64, concat(STREAM, zeroes, disc))).containsExactlyElementsOf(all);
    }

    /**
     * A write's payload arrives in an aligned direct buffer whatever the split of the stream (the
     * header puts it 28 bytes into the received bytes), so that an O_DIRECT file writes it as it
     * is; the connection closing mid-payload releases it.
     */
    @Test
    void aWritesPayloadIsReceivedIntoAnAlignedDirectBufferAndAHalfReceivedOneIsReleased() {
        byte[] payload = new byte[3 * 4096 + 5];
        new java.util.SplittableRandom(3).nextBytes(payload);
        byte[] write = request(0, Nbd.CMD_WRITE, 5, 8192, payload.length, payload);
        EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(1 << 20));
        for (int at = 0; at < write.length; at += 1000) { // in pieces, the first holding the header
            ch.writeInbound(buf(Arrays.copyOfRange(write, at, Math.min(write.length, at + 1000))));
        }
        NbdRequest r = ch.readInbound();
        try {
            assertThat(r.data().isDirect()).isTrue();
            assertThat(r.data().memoryAddress() % 4096).as("payload address modulo 4096").isZero();
            assertThat(ByteBufUtil.getBytes(r.data())).isEqualTo(payload);
        } finally {
            r.release();
        }
        byte[] longPayload = new byte[NbdRequestDecoder.ALIGNED_UPFRONT + 4096]; // taken once all of it is in
        new java.util.SplittableRandom(4).nextBytes(longPayload);
        byte[] longWrite = request(0, Nbd.CMD_WRITE, 6, 0, longPayload.length, longPayload);
        EmbeddedChannel longCh = new EmbeddedChannel(new NbdRequestDecoder(32 << 20));
        for (int at = 0; at < longWrite.length; at += 65536) {
            longCh.writeInbound(buf(Arrays.copyOfRange(longWrite, at, Math.min(longWrite.length, at + 65536))));
        }
        NbdRequest l = longCh.readInbound();
        try {
            assertThat(l.data().memoryAddress() % 4096).as("long payload address modulo 4096").isZero();
            assertThat(ByteBufUtil.getBytes(l.data())).isEqualTo(longPayload);
        } finally {
            l.release();
        }
        NbdRequestDecoder decoder = new NbdRequestDecoder(1 << 20);
        EmbeddedChannel half = new EmbeddedChannel(decoder);
        half.writeInbound(buf(Arrays.copyOf(write, 28 + 4096)));
        assertThat(decoder.buffered()).isEqualTo(4096);
        assertThat(half.finish()).isFalse(); // removes the decoder: the payload goes back
        assertThat(decoder.buffered()).isZero();
    }

    @Test
    void aWriteOfExactlyTheMaximumIsAcceptedOneByteMoreFailsAtItsHeaderAndNothingIsBuffered() {
        byte[] max = request(0, Nbd.CMD_WRITE, 1, 0, 16, new byte[16]);
        assertThat(decode(16, max)).hasSize(1).first().satisfies(r -> assertThat(r.length()).isEqualTo(16));

        NbdRequestDecoder decoder = new NbdRequestDecoder(16);
        EmbeddedChannel ch = new EmbeddedChannel(decoder);
        byte[] header = request(0, Nbd.CMD_WRITE, 0x1234, 0, 17);
        ByteBuf partial = buf(Arrays.copyOf(header, 27));
        assertThat(ch.writeInbound(partial)).isFalse();
        assertThat(decoder.buffered()).isEqualTo(27);
        ByteBuf rest = buf(concat(new byte[] {header[27]}, new byte[5]));
        assertThatThrownBy(() -> ch.writeInbound(rest)).isInstanceOfSatisfying(NbdRequestTooLargeException.class, e -> {
            assertThat(e.cookie()).isEqualTo(0x1234);
            assertThat(e.length()).isEqualTo(17);
            assertThat(e.getMessage()).isEqualTo("len (17 ) is larger than max len (16)");
        });
        assertThat(decoder.buffered()).isZero();
        // Whatever follows is dropped as it comes, even a valid request.
        List<ByteBuf> more = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            ByteBuf b = Unpooled.buffer(1 << 20).writeZero(1 << 20);
            more.add(b);
            assertThat(ch.writeInbound(b)).isFalse();
            assertThat(decoder.buffered()).isZero();
        }
        ByteBuf read = buf(READ);
        assertThat(ch.writeInbound(read)).isFalse();
        assertThat(ch.finish()).isFalse();
        assertThat(List.of(partial, rest, read)).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(more).allSatisfy(b -> assertThat(b.refCnt()).isZero());
    }

    @Test
    void aReadLongerThanTheMaximumIsNotTheDecodersBusiness() {
        // No data follows a read: the handler answers it with EINVAL and the stream goes on.
        assertThat(decode(16, request(0, Nbd.CMD_READ, 1, 0, 0xffffffffL), FLUSH))
                .containsExactly(new NbdRequest(0, Nbd.CMD_READ, 1, 0, 0xffffffffL), expected().get(2));
    }

    @Test
    void aBadMagicFailsAndEveryLaterByteIsDiscarded() {
        NbdRequestDecoder decoder = new NbdRequestDecoder(64);
        EmbeddedChannel ch = new EmbeddedChannel(decoder);
        byte[] bad = READ.clone();
        bad[3] = 0x14;
        ByteBuf first = buf(concat(READ, bad, FLUSH));
        assertThatThrownBy(() -> ch.writeInbound(first)).isInstanceOf(CorruptedFrameException.class)
                .hasMessage("bad request magic 0x25609514");
        List<NbdRequest> before = inbound(ch);
        assertThat(before).containsExactly(expected().get(0));
        ByteBuf later = buf(STREAM);
        assertThat(ch.writeInbound(later)).isFalse();
        assertThat(decoder.buffered()).isZero();
        assertThat(ch.finish()).isFalse();
        assertThat(first.refCnt()).isZero();
        assertThat(later.refCnt()).isZero();
    }

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4, 5, 6, 7, 8})
    void randomRequestsRoundTripThroughEncoderAndDecoderWhateverTheSplit(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<NbdRequest> sent = new ArrayList<>();
        for (int i = 0; i < 50; i++) {
            int type = r.nextInt(8);
            long offset = r.nextLong();
            int flags = r.nextInt(1 << 16);
            if (type == Nbd.CMD_WRITE) {
                byte[] data = new byte[r.nextInt(100)];
                r.nextBytes(data);
                sent.add(NbdRequest.write(flags, r.nextLong(), offset, buf(data)));
            } else {
                sent.add(new NbdRequest(flags, type, r.nextLong(), offset, r.nextLong(1L << 32)));
            }
        }
        List<NbdRequest> compare = new ArrayList<>();
        for (NbdRequest q : sent) {
            compare.add(q.replace(Unpooled.copiedBuffer(q.data())));
        }
        EmbeddedChannel enc = new EmbeddedChannel(new NbdRequestEncoder());
        enc.writeOutbound(sent.toArray());
        byte[] wire = outbound(enc);
        assertThat(sent).filteredOn(q -> q.data() != Unpooled.EMPTY_BUFFER)
                .allSatisfy(q -> assertThat(q.data().refCnt()).isZero());
        List<byte[]> chunks = new ArrayList<>();
        for (int pos = 0; pos < wire.length; ) {
            int n = Math.min(wire.length - pos, 1 + r.nextInt(64));
            chunks.add(Arrays.copyOfRange(wire, pos, pos + n));
            pos += n;
        }
        assertThat(decode(100, chunks.toArray(byte[][]::new))).as("seed %d", seed).containsExactlyElementsOf(compare);
    }
}
