package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.NbdBytes.ascii;
import static io.blockjobs.platform.nbd.NbdBytes.concat;
import static io.blockjobs.platform.nbd.NbdBytes.hex;
import static io.blockjobs.platform.nbd.NbdBytes.u16;
import static io.blockjobs.platform.nbd.NbdBytes.u32;
import static io.blockjobs.platform.nbd.NbdBytes.u64;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.ConnectionLostException;
import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.Pending;
import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.Result;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The client's side of the codec: the greeting, the handshake it drives (against server bytes
 * written out by hand) and the matching of replies to requests, bytes fed one at a time.
 */
class NbdClientCodecTest {
    private static final byte[] GREETING = concat(ascii("NBDMAGIC"), ascii("IHAVEOPT"), u16(3));
    private static final long REPLY_MAGIC = 0x3e889045565a9L;

    private static EmbeddedChannel client(String export, String context) {
        return new EmbeddedChannel(new NbdGreetingDecoder(), new NbdOptionReplyDecoder(64 * 1024), new NbdOptionEncoder(),
                new NbdClientHandshakeHandler(export, context));
    }

    private static NbdClientHandshakeHandler handshake(EmbeddedChannel ch) {
        return ch.pipeline().get(NbdClientHandshakeHandler.class);
    }

    /** Feeds bytes one at a time, as the worst split a socket can give. */
    private static void feed(EmbeddedChannel ch, byte[] bytes) {
        for (byte b : bytes) {
            if (!ch.isOpen()) {
                return; // the client hung up: the rest is never read
            }
            ch.writeInbound(Unpooled.wrappedBuffer(new byte[] {b}));
        }
    }

    /** Everything the client wrote since the last call. */
    private static String sent(EmbeddedChannel ch) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (ByteBuf b; (b = ch.readOutbound()) != null; ) {
            byte[] a = new byte[b.readableBytes()];
            b.readBytes(a);
            b.release();
            out.writeBytes(a);
        }
        return hex(out.toByteArray());
    }

    private static byte[] optionReply(int option, int type, byte[] data) {
        return concat(u64(REPLY_MAGIC), u32(option), u32(type), u32(data.length), data);
    }

    private static String option(int option, byte[] data) {
        return hex(concat(ascii("IHAVEOPT"), u32(option), u32(data.length), data));
    }

    @Test
    void handshakeAsksStructuredRepliesTheMetaContextThenGo() throws Exception {
        EmbeddedChannel ch = client("top", "base:allocation");
        feed(ch, GREETING);
        assertThat(sent(ch)).isEqualTo(hex(u32(3)) + option(8, new byte[0]));
        feed(ch, optionReply(8, 1, new byte[0]));
        assertThat(sent(ch)).isEqualTo(option(10, concat(u32(3), ascii("top"), u32(1), u32(15), ascii("base:allocation"))));
        feed(ch, optionReply(10, 4, concat(u32(1), ascii("base:allocation"))));
        feed(ch, optionReply(10, 1, new byte[0]));
        assertThat(sent(ch)).isEqualTo(option(7, concat(u32(3), ascii("top"), u16(1), u16(3))));
        feed(ch, optionReply(7, 3, concat(u16(0), u64(64L << 20), u16(0x1 | 0x4 | 0x8 | 0x20 | 0x40))));
        feed(ch, optionReply(7, 3, concat(u16(3), u32(512), u32(4096), u32(1 << 20))));
        assertThat(handshake(ch).result()).isNotDone();
        feed(ch, optionReply(7, 1, new byte[0]));
        NbdExportInfo info = handshake(ch).result().get();
        assertThat(info).isEqualTo(new NbdExportInfo(64L << 20, 0x6d, 512, 4096, 1 << 20, true, 1));
        assertThat(ch.isActive()).isTrue();
        ch.finishAndReleaseAll();
    }

    @Test
    void withoutStructuredRepliesTheClientGoesStraightToGoAndHasNoContext() throws Exception {
        EmbeddedChannel ch = client("", "base:allocation");
        feed(ch, GREETING);
        sent(ch);
        feed(ch, optionReply(8, 0x80000001, ascii("no")));
        assertThat(sent(ch)).isEqualTo(option(7, concat(u32(0), u16(1), u16(3))));
        feed(ch, concat(optionReply(7, 3, concat(u16(0), u64(4096), u16(0x3))), optionReply(7, 1, new byte[0])));
        NbdExportInfo info = handshake(ch).result().get();
        assertThat(info.structured()).isFalse();
        assertThat(info.hasContext()).isFalse();
        assertThat(info.has(Nbd.TFLAG_READ_ONLY)).isTrue();
        ch.finishAndReleaseAll();
    }

    @Test
    void anUnknownExportFailsWithQemusMessageAndCloses() {
        EmbeddedChannel ch = client("nope", "base:allocation");
        NbdClientHandshakeHandler hs = handshake(ch);
        feed(ch, GREETING);
        feed(ch, optionReply(8, 1, new byte[0]));
        feed(ch, optionReply(10, 1, new byte[0]));
        feed(ch, optionReply(7, 0x80000006, ascii("export 'nope' not present")));
        assertThat(hs.result()).failsWithin(java.time.Duration.ZERO).withThrowableThat()
                .havingCause().withMessage("Requested export not available");
        assertThat(ch.isActive()).isFalse();
        ch.finishAndReleaseAll();
    }

    @Test
    void anOldstyleServerIsRefused() {
        EmbeddedChannel ch = client("x", "base:allocation");
        NbdClientHandshakeHandler hs = handshake(ch);
        feed(ch, concat(ascii("NBDMAGIC"), hex("0000420281861253"), u64(1 << 20), u16(0)));
        assertThat(hs.result()).failsWithin(java.time.Duration.ZERO).withThrowableThat()
                .havingCause().withMessage("Server is not a newstyle NBD server");
        assertThat(ch.isActive()).isFalse();
        ch.finishAndReleaseAll();
    }

    // ---- transmission ------------------------------------------------------------------------------

    private static byte[] chunk(int flags, int type, long cookie, byte[] payload) {
        return concat(hex("668e33ef"), u16(flags), u16(type), u64(cookie), u32(payload.length), payload);
    }

    private static EmbeddedChannel transmission(NbdClientTransmissionHandler h) {
        return new EmbeddedChannel(new NbdReplyDecoder(1 << 20, h::readLength), h);
    }

    @Test
    void aReadAssemblesDataAndHoleChunksIntoTheCallersBuffer() throws Exception {
        NbdClientTransmissionHandler h = new NbdClientTransmissionHandler(1, () -> { });
        EmbeddedChannel ch = transmission(h);
        ByteBuffer dst = ByteBuffer.allocate(16);
        dst.put(new byte[] {9, 9, 9, 9}); // the read goes from the position on, which stays
        java.util.Arrays.fill(dst.array(), 4, 16, (byte) 0x7f);
        Pending read = new Pending(Nbd.CMD_READ, 100, 8, dst);
        h.register(5, read);
        Pending other = new Pending(Nbd.CMD_BLOCK_STATUS, 0, 4096, null);
        h.register(6, other);
        feed(ch, concat(
                chunk(0, 2, 5, concat(u64(104), u32(4))),                      // hole at the end first
                chunk(0, 5, 6, concat(u32(1), u32(512), u32(3), u32(512), u32(0))),
                chunk(1, 1, 5, concat(u64(100), hex("deadbeef"))),             // data, last
                hex("67446698 00000000 0000000000000006")));                   // a simple reply ends 6
        assertThat(read.done().get()).isEqualTo(new Result(0, "", null));
        assertThat(dst.position()).isEqualTo(4);
        assertThat(hex(dst.array())).isEqualTo("09090909" + "deadbeef" + "00000000" + "7f7f7f7f");
        assertThat(other.done().get().extent()).isEqualTo(new NbdReply.Extent(512, 3));
        ch.finishAndReleaseAll();
    }

    @Test
    void anErrorChunkGivesItsErrnoAndMessage() throws Exception {
        NbdClientTransmissionHandler h = new NbdClientTransmissionHandler(-1, () -> { });
        EmbeddedChannel ch = transmission(h);
        Pending w = new Pending(Nbd.CMD_WRITE, 0, 512, null);
        h.register(9, w);
        feed(ch, concat(chunk(0, 0x8001, 9, concat(u32(28), u16(4), ascii("full"))), chunk(1, 0, 9, new byte[0])));
        assertThat(w.done().get()).isEqualTo(new Result(28, "full", null));
        assertThat(NbdClientTransmissionHandler.errno(28)).isEqualTo(io.blockjobs.sdk.block.Errno.ENOSPC);
        assertThat(NbdClientTransmissionHandler.errno(75)).isEqualTo(io.blockjobs.sdk.block.Errno.EINVAL);
        ch.finishAndReleaseAll();
    }

    @Test
    void aReplyTheClientCannotPlaceClosesTheConnectionAndFailsWhatIsInFlight() {
        for (byte[] bad : new byte[][] {
            chunk(1, 0, 77, new byte[0]),                                 // nobody asked cookie 77
            chunk(1, 1, 1, concat(u64(200), hex("00112233"))),            // data outside the read
            chunk(1, 5, 1, concat(u32(1), u32(512), u32(0))),             // block status for a read
        }) {
            AtomicInteger closed = new AtomicInteger();
            NbdClientTransmissionHandler h = new NbdClientTransmissionHandler(1, closed::incrementAndGet);
            EmbeddedChannel ch = transmission(h);
            Pending read = new Pending(Nbd.CMD_READ, 100, 8, ByteBuffer.allocate(8));
            h.register(1, read);
            feed(ch, bad);
            assertThat(ch.isActive()).isFalse();
            assertThat(read.done()).failsWithin(java.time.Duration.ZERO).withThrowableOfType(ExecutionException.class)
                    .withCauseInstanceOf(ConnectionLostException.class);
            assertThat(closed).hasValue(1);
            // A request registered after the loss fails at once.
            Pending late = new Pending(Nbd.CMD_FLUSH, 0, 0, null);
            h.register(2, late);
            assertThat(late.done()).isCompletedExceptionally();
            ch.finishAndReleaseAll();
        }
    }
}
