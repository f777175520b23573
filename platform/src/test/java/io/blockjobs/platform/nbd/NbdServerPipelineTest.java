package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;
import static io.blockjobs.platform.nbd.NbdBytes.ascii;
import static io.blockjobs.platform.nbd.NbdBytes.buf;
import static io.blockjobs.platform.nbd.NbdBytes.chunk;
import static io.blockjobs.platform.nbd.NbdBytes.concat;
import static io.blockjobs.platform.nbd.NbdBytes.hex;
import static io.blockjobs.platform.nbd.NbdBytes.option;
import static io.blockjobs.platform.nbd.NbdBytes.optionReply;
import static io.blockjobs.platform.nbd.NbdBytes.outbound;
import static io.blockjobs.platform.nbd.NbdBytes.request;
import static io.blockjobs.platform.nbd.NbdBytes.simple;
import static io.blockjobs.platform.nbd.NbdBytes.string;
import static io.blockjobs.platform.nbd.NbdBytes.u16;
import static io.blockjobs.platform.nbd.NbdBytes.u32;
import static io.blockjobs.platform.nbd.NbdBytes.u64;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.node.ObjectNode;

/**
 * A server-side pipeline, as {@link NbdServer} builds it, driven through an {@link EmbeddedChannel}
 * with hand-written client bytes: the handshake, the switch to transmission, and requests against
 * a 1 MiB qcow2 image. Requests are served on the test's thread (a direct executor), or held in
 * a queue and completed in the order a test chooses.
 */
class NbdServerPipelineTest {
    static final byte[] GREETING = hex("4e42444d41474943 | 49484156454f5054 | 0003");
    static final long SIZE = 1 << 20;
    /** HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN, SEND_CACHE. */
    static final int WRITABLE = 0x56d;
    static final int WRITABLE_DF = WRITABLE | TFLAG_SEND_DF;
    /** HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, CAN_MULTI_CONN, SEND_CACHE. */
    static final int READ_ONLY = 0x50f;

    @TempDir
    Path dir;
    BlockGraph graph;
    final Map<String, NbdExport> exports = new LinkedHashMap<>();
    final List<ByteBuf> inputs = new ArrayList<>();
    final List<EmbeddedChannel> channels = new ArrayList<>();
    final Deque<Runnable> queued = new ArrayDeque<>();
    Executor executor = Runnable::run;

    @BeforeEach
    void export() throws Exception {
        graph = BlockGraph.withBuiltInDrivers();
        Path image = dir.resolve("disk.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(SIZE));
        ObjectNode o = Json.object().put("driver", "qcow2").put("node-name", "disk");
        o.putObject("file").put("driver", "file").put("filename", image.toString());
        GraphNode node = graph.add(o);
        int shared = Perm.ALL & ~Perm.RESIZE.bit();
        exports.put("disk", new NbdExport("e0", "disk", "the disk", graph.attachRoot(BlockGraph.RootUser.export("e0"),
                "root", node, Perm.CONSISTENT_READ.bit() | Perm.WRITE.bit(), shared, true), true));
        exports.put("ro", new NbdExport("e1", "ro", null, graph.attachRoot(BlockGraph.RootUser.export("e1"),
                "root", node, Perm.CONSISTENT_READ.bit(), shared, true), false));
    }

    @AfterEach
    void everythingReadAndReleased() {
        for (EmbeddedChannel ch : channels) {
            assertThat(ch.finish()).as("messages left unread").isFalse();
        }
        assertThat(queued).as("requests never completed").isEmpty();
        assertThat(inputs).allSatisfy(b -> assertThat(b.refCnt()).as("input released").isZero());
        graph.close();
    }

    /** A new client connection; checks the greeting. */
    private EmbeddedChannel connect() {
        EmbeddedChannel ch = new EmbeddedChannel(new ChannelInitializer<Channel>() {
            @Override
            protected void initChannel(Channel c) {
                NbdHandshakeHandler.addTo(c.pipeline(), exports::get, exports::values, task -> executor.execute(task));
            }
        });
        channels.add(ch);
        assertThat(hex(outbound(ch))).isEqualTo(hex(GREETING));
        return ch;
    }

    /** Sends the parts as one buffer, and returns everything the server wrote back. */
    private byte[] send(EmbeddedChannel ch, byte[]... parts) {
        ByteBuf b = buf(concat(parts));
        inputs.add(b);
        ch.writeInbound(b);
        return outbound(ch);
    }

    private static void assertBytes(byte[] actual, byte[]... expected) {
        assertThat(hex(actual)).isEqualTo(hex(concat(expected)));
    }

    private static byte[] go(String name, int... infos) {
        byte[][] parts = new byte[infos.length + 2][];
        parts[0] = string(name);
        parts[1] = u16(infos.length);
        for (int i = 0; i < infos.length; i++) {
            parts[i + 2] = u16(infos[i]);
        }
        return option(OPT_GO, concat(parts));
    }

    private static byte[] infoReplies(int option, long size, int flags) {
        return concat(optionReply(option, REP_INFO, concat(u16(INFO_EXPORT), u64(size), u16(flags))),
                optionReply(option, REP_INFO, concat(u16(INFO_BLOCK_SIZE), u32(1), u32(4096), u32(MAX_REQUEST))),
                optionReply(option, REP_ACK, new byte[0]));
    }

    private static byte[] errorChunk(long cookie, int errno, String message) {
        byte[] m = ascii(message);
        return chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, concat(u32(errno), u16(m.length), m));
    }

    private static byte[] none(long cookie) {
        return chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, new byte[0]);
    }

    private static byte[] filled(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return b;
    }

    private static boolean inHandshake(EmbeddedChannel ch) {
        return ch.pipeline().get(NbdHandshakeHandler.class) != null;
    }

    @Test
    void goOnAnUnknownExportGetsErrUnknownAndTheHandshakeGoesOn() {
        EmbeddedChannel ch = connect();
        assertBytes(send(ch, hex("00000003"), go("nope")),
                optionReply(OPT_GO, REP_ERR_UNKNOWN, ascii("export 'nope' not present")));
        assertThat(ch.isOpen()).isTrue();
        assertThat(inHandshake(ch)).isTrue();
        assertBytes(send(ch, option(OPT_INFO, concat(string("disk"), u16(0)))), infoReplies(OPT_INFO, SIZE, WRITABLE));
        assertThat(inHandshake(ch)).as("INFO does not end the handshake").isTrue();
        assertBytes(send(ch, option(OPT_GO, hex("00000009 6469736b"))),
                optionReply(OPT_GO, REP_ERR_INVALID, ascii("malformed info request")));
        assertBytes(send(ch, option(42, new byte[0])), optionReply(42, REP_ERR_UNSUP, ascii("option 42 is not supported")));
        assertBytes(send(ch, option(OPT_STARTTLS, new byte[0])),
                optionReply(OPT_STARTTLS, REP_ERR_POLICY, ascii("TLS is not configured on this server")));
        assertBytes(send(ch, option(OPT_ABORT, new byte[0])), optionReply(OPT_ABORT, REP_ACK, new byte[0]));
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void listNamesEveryExportWithItsDescription() {
        EmbeddedChannel ch = connect();
        assertBytes(send(ch, hex("00000003"), option(OPT_LIST, new byte[0])),
                optionReply(OPT_LIST, REP_SERVER, concat(u32(4), ascii("disk"), ascii("the disk"))),
                optionReply(OPT_LIST, REP_SERVER, concat(u32(2), ascii("ro"))),
                optionReply(OPT_LIST, REP_ACK, new byte[0]));
        assertBytes(send(ch, option(OPT_LIST, hex("00"))), optionReply(OPT_LIST, REP_ERR_INVALID, ascii("list takes no data")));
        assertThat(ch.isOpen()).isTrue();
    }

    @Test
    void structuredRepliesAndBaseAllocationThenGoThenTransmission() {
        EmbeddedChannel ch = connect();
        byte[] setMeta = option(OPT_SET_META_CONTEXT, concat(string("disk"), u32(1), string(BASE_ALLOCATION)));
        assertBytes(send(ch, hex("00000003"), option(OPT_SET_META_CONTEXT, concat(string("disk"), u32(0)))),
                optionReply(OPT_SET_META_CONTEXT, REP_ERR_INVALID,
                        ascii("request option 'set meta context' when structured reply is not negotiated")));
        assertBytes(send(ch, option(OPT_STRUCTURED_REPLY, new byte[0]), option(OPT_STRUCTURED_REPLY, new byte[0]), setMeta),
                optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]),
                optionReply(OPT_STRUCTURED_REPLY, REP_ERR_INVALID, ascii("structured replies are already on")),
                optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, concat(u32(BASE_ALLOCATION_ID), ascii(BASE_ALLOCATION))),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));

        // GO and the first request in one buffer: the request reaches the transmission codec.
        byte[] data = filled(4096, 0x5a);
        assertBytes(send(ch, go("disk", INFO_NAME, INFO_DESCRIPTION), request(0, CMD_WRITE, 1, 0, 4096, data)),
                optionReply(OPT_GO, REP_INFO, concat(u16(INFO_EXPORT), u64(SIZE), u16(WRITABLE_DF))),
                optionReply(OPT_GO, REP_INFO, concat(u16(INFO_NAME), ascii("disk"))),
                optionReply(OPT_GO, REP_INFO, concat(u16(INFO_DESCRIPTION), ascii("the disk"))),
                optionReply(OPT_GO, REP_INFO, concat(u16(INFO_BLOCK_SIZE), u32(1), u32(4096), u32(MAX_REQUEST))),
                optionReply(OPT_GO, REP_ACK, new byte[0]),
                none(1));
        assertThat(ch.pipeline().names()).startsWith(NbdHandshakeHandler.DECODER, NbdHandshakeHandler.ENCODER,
                NbdHandshakeHandler.HANDLER);
        assertThat(ch.pipeline().get(NbdHandshakeHandler.DECODER)).isInstanceOf(NbdRequestDecoder.class);
        assertThat(ch.pipeline().get(NbdHandshakeHandler.ENCODER)).isInstanceOf(NbdReplyEncoder.class);
        assertThat(ch.pipeline().get(NbdHandshakeHandler.HANDLER)).isInstanceOf(NbdTransmissionHandler.class);
        assertThat(ch.pipeline().get(NbdTransmissionHandler.class).export()).isSameAs(exports.get("disk"));

        assertBytes(send(ch, request(0, CMD_READ, 2, 4092, 8)),
                chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 2, concat(u64(4092), hex("5a5a5a5a 00000000"))));
        // One 64 KiB cluster of data, the rest a hole that reads as zeroes; REQ_ONE: the first extent only.
        assertBytes(send(ch, request(0, CMD_BLOCK_STATUS, 3, 0, SIZE), request(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 4, 0, SIZE)),
                chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 3,
                        concat(u32(BASE_ALLOCATION_ID), u32(65536), u32(0), u32(SIZE - 65536), u32(STATE_HOLE | STATE_ZERO))),
                chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 4, concat(u32(BASE_ALLOCATION_ID), u32(65536), u32(0))));
        assertBytes(send(ch, request(0, CMD_READ, 5, SIZE - 4, 8), request(CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 6, 0, 4096),
                        request(0, CMD_BLOCK_STATUS, 7, SIZE, 0), request(0, 99, 8, 0, 0)),
                errorChunk(5, EINVAL, "operation past EOF; From: 1048572, Len: 8, Size: 1048576"),
                errorChunk(6, ENOTSUP, dir.resolve("disk.qcow2") + ": fast zero is not supported"),
                errorChunk(7, EINVAL, "need non-zero length"),
                errorChunk(8, EINVAL, "invalid request type (99) received"));
        assertBytes(send(ch, request(CMD_FLAG_FUA, CMD_WRITE_ZEROES, 9, 0, 2), request(CMD_FLAG_FUA, CMD_TRIM, 10, 65536, 65536),
                        request(0, CMD_FLUSH, 11, 0, 0), request(0, CMD_CACHE, 12, 0, 4096), request(0, CMD_READ, 13, 0, 4)),
                none(9), none(10), none(11), none(12),
                chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 13, concat(u64(0), hex("00005a5a"))));
        assertThat(send(ch, request(0, CMD_DISC, 14, 0, 0))).isEmpty();
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void exportNameGivesSimpleRepliesAndTheZeroesUnlessAskedNot() {
        for (int flags : new int[] {FLAG_FIXED_NEWSTYLE, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES}) {
            EmbeddedChannel ch = connect();
            byte[] zeroes = new byte[(flags & FLAG_NO_ZEROES) != 0 ? 0 : 124];
            assertBytes(send(ch, u32(flags), option(OPT_EXPORT_NAME, ascii("disk"))), u64(SIZE), u16(WRITABLE), zeroes);
            assertThat(inHandshake(ch)).isFalse();
            assertBytes(send(ch, request(0, CMD_WRITE, 1, 8, 4, hex("01020304")), request(0, CMD_READ, 2, 6, 8),
                            request(0, CMD_BLOCK_STATUS, 3, 0, 4096), request(0, CMD_WRITE, 4, SIZE - 2, 4, hex("01020304"))),
                    simple(0, 1, new byte[0]), simple(0, 2, hex("0000 01020304 0000")),
                    simple(EINVAL, 3, new byte[0]), simple(ENOSPC, 4, new byte[0]));
            assertThat(send(ch, request(0, CMD_DISC, 5, 0, 0))).isEmpty();
            assertThat(ch.isOpen()).isFalse();
        }
    }

    @Test
    void anUnknownExportNameOrAClientWithoutFixedNewstyleIsDisconnected() {
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000001"), option(OPT_EXPORT_NAME, ascii("nope")))).isEmpty();
        assertThat(ch.isOpen()).isFalse();
        EmbeddedChannel old = connect();
        assertThat(send(old, hex("00000000"), option(OPT_LIST, new byte[0]))).isEmpty();
        assertThat(old.isOpen()).isFalse();
    }

    @Test
    void aBadOptionMagicOrAnOversizedOptionCloses() {
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000003"), hex("49484156454f5054 | 00000003 | 00010001"), new byte[1 << 16])).isEmpty();
        assertThat(ch.isOpen()).isFalse();
        EmbeddedChannel bad = connect();
        assertThat(send(bad, hex("00000003"), hex("49484156454f5053 | 00000003 | 00000000"))).isEmpty();
        assertThat(bad.isOpen()).isFalse();
    }

    @Test
    void aReadOnlyExportRefusesWritesWithEperm() {
        EmbeddedChannel ch = connect();
        assertBytes(send(ch, hex("00000003"), go("ro")), infoReplies(OPT_GO, SIZE, READ_ONLY));
        assertBytes(send(ch, request(0, CMD_WRITE, 1, 0, 2, hex("0102")), request(0, CMD_TRIM, 2, 0, 2),
                        request(0, CMD_WRITE_ZEROES, 3, 0, 2), request(0, CMD_READ, 4, 0, 2)),
                simple(EPERM, 1, new byte[0]), simple(EPERM, 2, new byte[0]), simple(EPERM, 3, new byte[0]),
                simple(0, 4, hex("0000")));
        assertThat(send(ch, request(0, CMD_DISC, 5, 0, 0))).isEmpty();
    }

    @Test
    void anOversizedWriteIsAnsweredWithEinvalAndTheConnectionClosesWithoutBufferingIt() {
        executor = queued::add;
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000003"), option(OPT_STRUCTURED_REPLY, new byte[0]), go("disk"))).isNotEmpty();
        // One request in flight, then a write one byte too long with a MiB of its data behind it.
        assertThat(send(ch, request(0, CMD_READ, 1, 0, 2))).isEmpty();
        NbdRequestDecoder decoder = ch.pipeline().get(NbdRequestDecoder.class);
        byte[] header = request(0, CMD_WRITE, 9, 0, MAX_REQUEST + 1L);
        assertBytes(send(ch, header, new byte[1 << 20]),
                errorChunk(9, EINVAL, "len (33554433 ) is larger than max len (33554432)"));
        assertThat(decoder.buffered()).isZero();
        assertThat(ch.isOpen()).as("open until the request in flight is answered").isTrue();
        assertThat(ch.config().isAutoRead()).isFalse();
        queued.poll().run();
        assertBytes(outbound(ch), chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1, concat(u64(0), hex("0000"))));
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void aBadRequestMagicClosesAtOnce() {
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000003"), go("disk"))).isNotEmpty();
        byte[] bad = request(0, CMD_READ, 1, 0, 2);
        bad[0] = 0x26;
        assertThat(send(ch, bad, request(0, CMD_READ, 2, 0, 2))).isEmpty();
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void repliesLeaveInCompletionOrderAndAtMost64AreInFlight() {
        executor = queued::add;
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000003"), go("disk"))).isNotEmpty();
        assertThat(send(ch, request(0, CMD_WRITE, 100, 0, 8, hex("0102030405060708")))).isEmpty();
        queued.poll().run();
        assertBytes(outbound(ch), simple(0, 100, new byte[0]));
        for (int cookie = 1; cookie <= NbdTransmissionHandler.MAX_IN_FLIGHT; cookie++) {
            assertThat(ch.config().isAutoRead()).as("reading before request %d", cookie).isTrue();
            assertThat(send(ch, request(0, CMD_READ, cookie, cookie - 1, 1))).isEmpty();
        }
        assertThat(ch.config().isAutoRead()).as("reading with 64 in flight").isFalse();
        byte[][] expected = new byte[NbdTransmissionHandler.MAX_IN_FLIGHT][];
        for (int i = 0; i < expected.length; i++) {
            int cookie = NbdTransmissionHandler.MAX_IN_FLIGHT - i;
            expected[i] = simple(0, cookie, new byte[] {(byte) (cookie <= 8 ? cookie : 0)});
            queued.pollLast().run(); // the last request completes first
            assertThat(ch.config().isAutoRead()).isTrue();
        }
        assertBytes(outbound(ch), expected);
        // NBD_CMD_DISC with a request in flight: the reply still goes out, then the connection closes.
        assertThat(send(ch, request(0, CMD_READ, 200, 0, 1), request(0, CMD_DISC, 201, 0, 0))).isEmpty();
        assertThat(ch.isOpen()).isTrue();
        assertThat(ch.config().isAutoRead()).isFalse();
        queued.poll().run();
        assertBytes(outbound(ch), simple(0, 200, hex("01")));
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void requestsOverTheLimitWaitUnreadUntilEarlierOnesComplete() {
        executor = queued::add;
        EmbeddedChannel ch = connect();
        assertThat(send(ch, hex("00000003"), go("disk"))).isNotEmpty();
        NbdTransmissionHandler handler = ch.pipeline().get(NbdTransmissionHandler.class);
        int extra = 6;
        byte[][] reads = new byte[NbdTransmissionHandler.MAX_IN_FLIGHT + extra][];
        for (int i = 0; i < reads.length; i++) {
            reads[i] = request(0, CMD_READ, i, 0, 1);
        }
        assertThat(send(ch, reads)).isEmpty(); // all in one buffer: decoded at once
        assertThat(queued).as("started").hasSize(NbdTransmissionHandler.MAX_IN_FLIGHT);
        assertThat(handler.waiting()).isEqualTo(extra);
        assertThat(ch.config().isAutoRead()).isFalse();
        queued.poll().run();
        assertThat(handler.waiting()).as("one done, one more started").isEqualTo(extra - 1);
        assertThat(ch.config().isAutoRead()).isFalse();
        while (!queued.isEmpty()) {
            queued.poll().run();
        }
        assertThat(handler.waiting()).isZero();
        assertThat(ch.config().isAutoRead()).isTrue();
        assertThat(outbound(ch)).hasSize(reads.length * (16 + 1));

        // Bytes: two reads of 32 MiB are in flight at most (refused when served: the export is smaller).
        assertThat(send(ch, request(0, CMD_READ, 100, 0, MAX_REQUEST), request(0, CMD_READ, 101, 0, MAX_REQUEST),
                request(0, CMD_READ, 102, 0, MAX_REQUEST))).isEmpty();
        assertThat(queued).hasSize(2);
        assertThat(handler.waiting()).isEqualTo(1);
        while (!queued.isEmpty()) {
            queued.poll().run();
        }
        assertThat(handler.waiting()).isZero();
        assertThat(outbound(ch)).hasSize(3 * 16);
        assertThat(send(ch, request(0, CMD_DISC, 103, 0, 0))).isEmpty();
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void unknownClientFlagsDropTheConnectionWithoutAReply() {
        for (String flags : new String[] {"00000007", "80000001"}) {
            EmbeddedChannel ch = connect();
            assertThat(send(ch, hex(flags), option(OPT_LIST, new byte[0]))).isEmpty();
            assertThat(ch.isOpen()).isFalse();
        }
    }

    @Test
    void aHandshakeThatTakesTooLongIsDropped() {
        EmbeddedChannel slow = new EmbeddedChannel(new ChannelInitializer<Channel>() {
            @Override
            protected void initChannel(Channel c) {
                NbdHandshakeHandler.addTo(c.pipeline(), exports::get, exports::values, Runnable::run, true, 10_000);
            }
        });
        channels.add(slow);
        assertThat(hex(outbound(slow))).isEqualTo(hex(GREETING));
        assertThat(send(slow, hex("00000003"))).isEmpty();
        slow.advanceTimeBy(9, java.util.concurrent.TimeUnit.SECONDS);
        slow.runScheduledPendingTasks();
        assertThat(slow.isOpen()).isTrue();
        slow.advanceTimeBy(1, java.util.concurrent.TimeUnit.SECONDS);
        slow.runScheduledPendingTasks();
        assertThat(slow.isOpen()).as("dropped at 10 s").isFalse();
        assertThat(outbound(slow)).as("without a word").isEmpty();
    }
}
