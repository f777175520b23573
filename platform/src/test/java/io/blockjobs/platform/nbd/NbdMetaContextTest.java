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
import static io.blockjobs.platform.nbd.NbdBytes.string;
import static io.blockjobs.platform.nbd.NbdBytes.u16;
import static io.blockjobs.platform.nbd.NbdBytes.u32;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.sdk.block.RequestFlag;
import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.node.ObjectNode;

/**
 * Meta contexts at the handshake and in block status, through the server's pipeline
 * ({@link EmbeddedChannel}, hand-written client bytes). The expected answers are what QEMU 7.2's
 * qemu-storage-daemon sent for the same queries on an export of the same shape (two bitmaps and
 * allocation depth): its context ids, its order, its messages.
 *
 * <p>The image: a 1 MiB qcow2 {@code top} (64 KiB clusters) over {@code base}. {@code base} holds
 * data in [0, 256K), recorded by its bitmap {@code b1} (4 KiB granules, disabled since); after
 * {@code b0} was added to {@code top}, top got data in [192K, 320K) and a zero cluster at
 * [512K, 576K).
 */
class NbdMetaContextTest {
    static final long K = 1024;
    static final long SIZE = 1 << 20;

    @TempDir
    Path dir;
    BlockGraph graph;
    Bitmaps bitmaps;
    Bitmap b0;
    Bitmap b1;
    final Map<String, NbdExport> exports = new LinkedHashMap<>();
    final List<ByteBuf> inputs = new ArrayList<>();
    final List<EmbeddedChannel> channels = new ArrayList<>();

    @BeforeEach
    void export() throws Exception {
        graph = BlockGraph.withBuiltInDrivers();
        bitmaps = new Bitmaps(graph);
        Images.createQcow2(dir.resolve("base.qcow2"), Qcow2CreateOptions.of(SIZE));
        Images.createQcow2(dir.resolve("top.qcow2"), Qcow2CreateOptions.of(SIZE).withBacking("base.qcow2", "qcow2"));
        GraphNode base = graph.add(qcow2("base", "base.qcow2"));
        b1 = bitmaps.add("base", "b1", Optional.of(4096L), false, false);
        base.write(0, ByteBuffer.wrap(new byte[(int) (256 * K)]));
        b1.disable();
        ObjectNode t = qcow2("top", "top.qcow2");
        t.put("backing", "base");
        GraphNode top = graph.add(t);
        b0 = bitmaps.add("top", "b0", Optional.empty(), false, false);
        byte[] data = new byte[(int) (128 * K)];
        java.util.Arrays.fill(data, (byte) 0x22);
        top.write(192 * K, ByteBuffer.wrap(data));
        top.writeZeroes(512 * K, 64 * K, java.util.Set.<RequestFlag>of());
        int shared = Perm.ALL & ~Perm.RESIZE.bit();
        exports.put("top", new NbdExport("e0", "top", null, graph.attachRoot(BlockGraph.RootUser.export("e0"), "root", top,
                Perm.CONSISTENT_READ.bit() | Perm.WRITE.bit(), shared, true), true, List.of(b0, b1), true));
        exports.put("plain", new NbdExport("e1", "plain", null, graph.attachRoot(BlockGraph.RootUser.export("e1"), "root",
                top, Perm.CONSISTENT_READ.bit(), shared, true), false));
    }

    private ObjectNode qcow2(String name, String file) {
        ObjectNode o = Json.object().put("driver", "qcow2").put("node-name", name);
        o.putObject("file").put("driver", "file").put("filename", dir.resolve(file).toString());
        return o;
    }

    @AfterEach
    void everythingReadAndReleased() {
        for (EmbeddedChannel ch : channels) {
            ch.finish();
            assertThat(outbound(ch)).as("replies left unread").isEmpty();
        }
        assertThat(inputs).allSatisfy(b -> assertThat(b.refCnt()).as("input released").isZero());
        graph.close();
    }

    /** A connection past the greeting and the client's flags (fixed newstyle). */
    private EmbeddedChannel connect() {
        EmbeddedChannel ch = new EmbeddedChannel(new ChannelInitializer<Channel>() {
            @Override
            protected void initChannel(Channel c) {
                NbdHandshakeHandler.addTo(c.pipeline(), exports::get, exports::values, Runnable::run);
            }
        });
        channels.add(ch);
        outbound(ch);
        send(ch, u32(FLAG_FIXED_NEWSTYLE));
        return ch;
    }

    private byte[] send(EmbeddedChannel ch, byte[]... parts) {
        ByteBuf b = buf(concat(parts));
        inputs.add(b);
        ch.writeInbound(b);
        return outbound(ch);
    }

    private static void assertBytes(byte[] actual, byte[]... expected) {
        assertThat(hex(actual)).isEqualTo(hex(concat(expected)));
    }

    /** LIST or SET's data: the export, then the queries. */
    private static byte[] queries(String export, String... queries) {
        byte[][] parts = new byte[queries.length + 2][];
        parts[0] = string(export);
        parts[1] = u32(queries.length);
        for (int i = 0; i < queries.length; i++) {
            parts[i + 2] = string(queries[i]);
        }
        return concat(parts);
    }

    private static byte[] context(int option, int id, String name) {
        return optionReply(option, REP_META_CONTEXT, concat(u32(id), ascii(name)));
    }

    private static byte[] ack(int option) {
        return optionReply(option, REP_ACK, new byte[0]);
    }

    private static byte[] invalid(int option, String message) {
        return optionReply(option, REP_ERR_INVALID, ascii(message));
    }

    /** Block status chunk: context id, then (length, flags) pairs. */
    private static byte[] status(boolean done, long cookie, int id, long... extents) {
        byte[][] parts = new byte[extents.length + 1][];
        parts[0] = u32(id);
        for (int i = 0; i < extents.length; i++) {
            parts[i + 1] = u32(extents[i]);
        }
        return chunk(done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_BLOCK_STATUS, cookie, concat(parts));
    }

    private static byte[] errorChunk(long cookie, int errno, String message) {
        byte[] m = ascii(message);
        return chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, concat(u32(errno), u16(m.length), m));
    }

    private static byte[] go(String name) {
        return option(OPT_GO, concat(string(name), u16(0)));
    }

    @Test
    void listAnswersQueriesAsQemuWithContextIdZero() {
        EmbeddedChannel ch = connect();
        int L = OPT_LIST_META_CONTEXT;
        assertBytes(send(ch, option(L, queries("top"))), context(L, 0, "base:allocation"),
                context(L, 0, "qemu:allocation-depth"), context(L, 0, "qemu:dirty-bitmap:b0"),
                context(L, 0, "qemu:dirty-bitmap:b1"), ack(L));
        assertBytes(send(ch, option(L, queries("top", "qemu:"))), context(L, 0, "qemu:allocation-depth"),
                context(L, 0, "qemu:dirty-bitmap:b0"), context(L, 0, "qemu:dirty-bitmap:b1"), ack(L));
        assertBytes(send(ch, option(L, queries("top", "qemu:dirty-bitmap:"))), context(L, 0, "qemu:dirty-bitmap:b0"),
                context(L, 0, "qemu:dirty-bitmap:b1"), ack(L));
        assertBytes(send(ch, option(L, queries("top", "base:"))), context(L, 0, "base:allocation"), ack(L));
        // Replies in QEMU's order, not the queries'; a context asked twice is listed once.
        assertBytes(send(ch, option(L, queries("top", "qemu:dirty-bitmap:b1", "qemu:allocation-depth"))),
                context(L, 0, "qemu:allocation-depth"), context(L, 0, "qemu:dirty-bitmap:b1"), ack(L));
        assertBytes(send(ch, option(L, queries("top", "qemu:allocation-depth", "qemu:allocation-depth", "base:allocation"))),
                context(L, 0, "base:allocation"), context(L, 0, "qemu:allocation-depth"), ack(L));
        // Unknown namespaces, names and near misses select nothing.
        assertBytes(send(ch, option(L, queries("top", "x:y", "qemu:foo", "qemu:dirty-bitmap:zz", "base:foo", "qemu",
                "qemu:dirty-bitmap", "", "base:allocation:"))), ack(L));
        // An export without allocation depth or bitmaps offers base:allocation alone.
        assertBytes(send(ch, option(L, queries("plain"))), context(L, 0, "base:allocation"), ack(L));
        assertBytes(send(ch, option(L, queries("plain", "qemu:", "qemu:allocation-depth"))), ack(L));
        assertBytes(send(ch, option(L, queries("nope"))),
                optionReply(L, REP_ERR_UNKNOWN, ascii("export 'nope' not present")));
        assertThat(ch.isOpen()).isTrue();
    }

    @Test
    void setGivesQemusContextIdsAndSelectsNothingWithoutExactNames() {
        EmbeddedChannel ch = connect();
        int S = OPT_SET_META_CONTEXT;
        assertBytes(send(ch, option(S, queries("top", "base:allocation"))),
                invalid(S, "request option 'set meta context' when structured reply is not negotiated"));
        send(ch, option(OPT_STRUCTURED_REPLY, new byte[0]));
        // In a SET, no queries and the namespace wildcards select nothing.
        for (String[] q : new String[][] {{}, {"qemu:"}, {"qemu:dirty-bitmap:"}, {"base:"}}) {
            assertBytes(send(ch, option(S, queries("top", q))), ack(S));
        }
        assertBytes(send(ch, option(S, queries("top", "qemu:dirty-bitmap:b1", "qemu:allocation-depth"))),
                context(S, 1, "qemu:allocation-depth"), context(S, 3, "qemu:dirty-bitmap:b1"), ack(S));
        assertBytes(send(ch, option(S, queries("top", "qemu:dirty-bitmap:b0", "base:allocation"))),
                context(S, 0, "base:allocation"), context(S, 2, "qemu:dirty-bitmap:b0"), ack(S));
    }

    @Test
    void malformedQueriesGetQemusMessagesAndTheHandshakeGoesOn() {
        EmbeddedChannel ch = connect();
        int L = OPT_LIST_META_CONTEXT;
        String name = "list meta context";
        assertBytes(send(ch, option(L, concat(string("top"), u32(2), string("base:allocation")))),
                invalid(L, "Inconsistent lengths in option " + name));
        assertBytes(send(ch, option(L, string("top"))), invalid(L, "Inconsistent lengths in option " + name));
        assertBytes(send(ch, option(L, hex("0000"))), invalid(L, "Inconsistent lengths in option " + name));
        assertBytes(send(ch, option(L, concat(string("top"), u32(1), string("base:\0allocation")))),
                invalid(L, "Unexpected embedded NUL in option " + name));
        assertBytes(send(ch, option(L, concat(u32(5000), new byte[5000], u32(0)))), invalid(L, "Invalid name length: 5000"));
        // An unknown export is found before the queries are read.
        assertBytes(send(ch, option(L, concat(string("nope"), hex("00")))),
                optionReply(L, REP_ERR_UNKNOWN, ascii("export 'nope' not present")));
        // A query longer than 4096 bytes is skipped.
        assertBytes(send(ch, option(L, concat(string("top"), u32(2), u32(5000), new byte[5000], string("base:allocation")))),
                context(L, 0, "base:allocation"), ack(L));
        assertThat(ch.isOpen()).isTrue();
        // Bytes after the last query: QEMU answers, then its stream is lost; here the connection closes.
        assertBytes(send(ch, option(L, concat(string("top"), u32(1), string("base:allocation"), hex("7878")))),
                context(L, 0, "base:allocation"), ack(L));
        assertThat(ch.isOpen()).isFalse();
    }

    @Test
    void blockStatusSendsAChunkPerChosenContextInQemusOrder() {
        EmbeddedChannel ch = connect();
        send(ch, option(OPT_STRUCTURED_REPLY, new byte[0]));
        assertThat(send(ch, option(OPT_SET_META_CONTEXT, queries("top", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b0",
                "qemu:allocation-depth", "base:allocation")), go("top"))).isNotEmpty();
        assertBytes(send(ch, request(0, CMD_BLOCK_STATUS, 1, 0, SIZE)),
                status(false, 1, 0, 320 * K, 0, 704 * K, STATE_HOLE | STATE_ZERO),
                // depth 2: base's data; 1: top's data and its zero cluster; 0: nowhere
                status(false, 1, 1, 192 * K, 2, 128 * K, 1, 192 * K, 0, 64 * K, 1, 448 * K, 0),
                status(false, 1, 2, 192 * K, 0, 128 * K, STATE_DIRTY, 192 * K, 0, 64 * K, STATE_DIRTY, 448 * K, 0),
                status(true, 1, 3, 256 * K, STATE_DIRTY, 768 * K, 0));
        // REQ_ONE: one extent each, as long as the state lasts (base:allocation's data runs on from
        // base's into top's); a range not on granule boundaries is clipped to the request.
        assertBytes(send(ch, request(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 2, 100000, 300000)),
                status(false, 2, 0, 320 * K - 100000, 0),
                status(false, 2, 1, 192 * K - 100000, 2),
                status(false, 2, 2, 192 * K - 100000, 0),
                status(true, 2, 3, 256 * K - 100000, STATE_DIRTY));
        assertBytes(send(ch, request(0, CMD_BLOCK_STATUS, 3, 200 * K, 10)),
                status(false, 3, 0, 10, 0), status(false, 3, 1, 10, 1), status(false, 3, 2, 10, STATE_DIRTY),
                status(true, 3, 3, 10, STATE_DIRTY));
        // QEMU's checks, in its order: the range, the flags, the length.
        assertBytes(send(ch, request(CMD_FLAG_DF, CMD_BLOCK_STATUS, 4, SIZE, 1), request(CMD_FLAG_DF, CMD_BLOCK_STATUS, 5, 0, 1),
                        request(0, CMD_BLOCK_STATUS, 6, SIZE, 0)),
                errorChunk(4, EINVAL, "operation past EOF; From: 1048576, Len: 1, Size: 1048576"),
                errorChunk(5, EINVAL, "unsupported flags for command block status (got 0x4)"),
                errorChunk(6, EINVAL, "need non-zero length"));
        // Writes through the export mark the bitmap that records: b0, not the disabled b1.
        assertBytes(send(ch, request(0, CMD_WRITE, 7, 700 * K, 1, hex("01"))),
                chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, 7, new byte[0]));
        assertThat(b0.nextDirty(640 * K, SIZE)).contains(new io.blockjobs.sdk.bitmap.DirtyRange(640 * K, 64 * K));
        assertThat(b1.nextDirty(256 * K, SIZE)).isEmpty();
    }

    @Test
    void contextsChosenForAnotherExportOrByNoSetDoNotCarryOver() {
        EmbeddedChannel ch = connect();
        send(ch, option(OPT_STRUCTURED_REPLY, new byte[0]));
        assertThat(send(ch, option(OPT_SET_META_CONTEXT, queries("top", "base:allocation")), go("plain"))).isNotEmpty();
        assertBytes(send(ch, request(0, CMD_BLOCK_STATUS, 1, 0, 4096)),
                errorChunk(1, EINVAL, "CMD_BLOCK_STATUS not negotiated"));
        // A SET that fails forgets what the SET before chose.
        EmbeddedChannel again = connect();
        send(again, option(OPT_STRUCTURED_REPLY, new byte[0]));
        assertBytes(send(again, option(OPT_SET_META_CONTEXT, queries("top", "base:allocation"))),
                context(OPT_SET_META_CONTEXT, 0, "base:allocation"), ack(OPT_SET_META_CONTEXT));
        assertBytes(send(again, option(OPT_SET_META_CONTEXT, string("top"))),
                invalid(OPT_SET_META_CONTEXT, "Inconsistent lengths in option set meta context"));
        assertThat(send(again, go("top"))).isNotEmpty();
        assertBytes(send(again, request(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 1, 0, 4096)),
                errorChunk(1, EINVAL, "CMD_BLOCK_STATUS not negotiated"));
    }
}
