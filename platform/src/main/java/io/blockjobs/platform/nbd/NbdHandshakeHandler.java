package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.DecoderException;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fixed newstyle handshake of one client, the server's side: greets, answers options
 * (decoded by {@link NbdOptionDecoder}, replies encoded by {@link NbdOptionReplyEncoder}), and on
 * {@code NBD_OPT_GO} or {@code NBD_OPT_EXPORT_NAME} replaces the three of them in the pipeline with
 * an {@link NbdRequestDecoder}, an {@link NbdReplyEncoder} and an {@link NbdTransmissionHandler};
 * bytes the client sent after the option pass on to the new decoder. What it writes itself,
 * big-endian:
 *
 * <pre>
 * greeting, on connect:
 * offset size field
 *      0    8 magic   0x4e42444d41474943 ("NBDMAGIC")
 *      8    8 magic   0x49484156454f5054 ("IHAVEOPT")
 *     16    2 flags   NBD_FLAG_FIXED_NEWSTYLE 0x1 | NBD_FLAG_NO_ZEROES 0x2
 *
 * reply to NBD_OPT_EXPORT_NAME (not an option reply):
 *      0    8 size    of the export, in bytes
 *      8    2 flags   transmission flags, below
 *     10  124 zeroes  unless the client sent NBD_FLAG_C_NO_ZEROES
 *
 * NBD_INFO_EXPORT, in an NBD_REP_INFO reply to INFO or GO:
 *      0    2 type    0
 *      2    8 size
 *     10    2 flags   HAS_FLAGS 0x1, READ_ONLY 0x2, SEND_FLUSH 0x4, SEND_FUA 0x8, SEND_TRIM 0x20,
 *                     SEND_WRITE_ZEROES 0x40, SEND_DF 0x80 (with structured replies),
 *                     CAN_MULTI_CONN 0x100 (unless max-connections is 1), SEND_CACHE 0x400
 * NBD_INFO_BLOCK_SIZE: u16 3, u32 minimum 1, u32 preferred 4096, u32 maximum 32 MiB
 * NBD_INFO_NAME (if asked): u16 1, the name; NBD_INFO_DESCRIPTION (if asked and set): u16 2, it
 * </pre>
 *
 * <p>A client that does not speak fixed newstyle, asks {@code NBD_OPT_EXPORT_NAME} for an unknown
 * export, aborts, or sends an option with a bad magic or longer than {@value #MAX_OPTION} bytes is
 * disconnected; other mistakes (a malformed INFO, an unknown export for GO) get an
 * {@code NBD_REP_ERR_*} reply and the handshake goes on. Client flags other than
 * {@code FIXED_NEWSTYLE} and {@code NO_ZEROES} drop the connection, as in QEMU; so does a
 * handshake that takes longer than the server's limit (QEMU's {@code handshake-max-seconds}).
 * Runs on the event loop.
 */
final class NbdHandshakeHandler extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = LoggerFactory.getLogger(NbdHandshakeHandler.class);
    /** Longest option accepted, in bytes. */
    static final int MAX_OPTION = 64 * 1024;
    static final String DECODER = "nbd-decoder";
    static final String ENCODER = "nbd-encoder";
    static final String HANDLER = "nbd-handler";

    private final Function<String, NbdExport> lookup;
    private final Supplier<? extends Collection<NbdExport>> exports;
    private final Executor io;
    private final boolean multiConn;
    private final long timeoutMillis;
    private ScheduledFuture<?> timeout;
    private boolean greeted;
    private boolean noZeroes;
    private boolean structured;
    private NbdMetaContexts meta; // chosen by the last NBD_OPT_SET_META_CONTEXT, or null
    private boolean finished;

    /**
     * @param lookup  the export of a name, or null
     * @param exports every export, for {@code NBD_OPT_LIST}
     * @param io      where the transmission phase serves requests (virtual threads)
     */
    NbdHandshakeHandler(Function<String, NbdExport> lookup, Supplier<? extends Collection<NbdExport>> exports,
                        Executor io, boolean multiConn, long timeoutMillis) {
        this.lookup = lookup;
        this.exports = exports;
        this.io = io;
        this.multiConn = multiConn;
        this.timeoutMillis = timeoutMillis;
    }

    /**
     * Adds a new client's handlers to its pipeline: option decoder, option reply encoder, this;
     * exports offer {@code NBD_FLAG_CAN_MULTI_CONN}, and the handshake has no time limit.
     */
    static void addTo(ChannelPipeline p, Function<String, NbdExport> lookup,
                      Supplier<? extends Collection<NbdExport>> exports, Executor io) {
        addTo(p, lookup, exports, io, true, 0);
    }

    /**
     * As {@link #addTo(ChannelPipeline, Function, Supplier, Executor)}.
     *
     * @param multiConn     whether exports offer {@code NBD_FLAG_CAN_MULTI_CONN} (QEMU offers it
     *                      unless the server takes one connection at most)
     * @param timeoutMillis a handshake not done in this time is dropped (0: no limit)
     */
    static void addTo(ChannelPipeline p, Function<String, NbdExport> lookup,
                      Supplier<? extends Collection<NbdExport>> exports, Executor io, boolean multiConn,
                      long timeoutMillis) {
        p.addLast(DECODER, new NbdOptionDecoder(MAX_OPTION));
        p.addLast(ENCODER, new NbdOptionReplyEncoder());
        p.addLast(HANDLER, new NbdHandshakeHandler(lookup, exports, io, multiConn, timeoutMillis));
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        if (timeoutMillis > 0) {
            timeout = ctx.executor().schedule(() -> {
                if (!finished) {
                    close(ctx, "option negotiation failed: the handshake did not finish in "
                            + timeoutMillis / 1000 + " seconds");
                }
            }, timeoutMillis, TimeUnit.MILLISECONDS);
        }
        if (ctx.channel().isActive()) {
            greet(ctx);
        }
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext ctx) {
        if (timeout != null) {
            timeout.cancel(false);
        }
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) {
        greet(ctx);
        ctx.fireChannelActive();
    }

    private void greet(ChannelHandlerContext ctx) {
        if (!greeted) {
            greeted = true;
            ctx.writeAndFlush(ctx.alloc().buffer(18).writeLong(NBDMAGIC).writeLong(IHAVEOPT)
                    .writeShort(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        try {
            if (finished) {
                return;
            }
            if (msg instanceof NbdClientFlags f) {
                int unknown = f.flags() & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
                if (unknown != 0) { // as QEMU's nbd_negotiate_options: no reply, the connection drops
                    close(ctx, String.format("option negotiation failed: Unknown client flags 0x%x received", unknown));
                    return;
                }
                if (!f.has(FLAG_FIXED_NEWSTYLE)) {
                    close(ctx, "client does not speak fixed newstyle");
                    return;
                }
                noZeroes = f.has(FLAG_NO_ZEROES);
            } else if (msg instanceof NbdOption o) {
                option(ctx, o.option(), o.data());
                ctx.flush();
            }
        } finally {
            ReferenceCountUtil.release(msg);
        }
    }

    private void option(ChannelHandlerContext ctx, int option, ByteBuf data) {
        switch (option) {
            case OPT_EXPORT_NAME -> exportName(ctx, data.toString(StandardCharsets.UTF_8));
            case OPT_ABORT -> {
                reply(ctx, NbdOptionReply.ack(option));
                close(ctx, null);
            }
            case OPT_LIST -> list(ctx, option, data);
            case OPT_INFO, OPT_GO -> infoOrGo(ctx, option, data);
            case OPT_STRUCTURED_REPLY -> {
                if (data.isReadable()) {
                    error(ctx, option, REP_ERR_INVALID, "structured reply takes no data");
                } else if (structured) {
                    error(ctx, option, REP_ERR_INVALID, "structured replies are already on");
                } else {
                    structured = true;
                    reply(ctx, NbdOptionReply.ack(option));
                }
            }
            case OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> metaContext(ctx, option, data);
            case OPT_STARTTLS -> error(ctx, option, REP_ERR_POLICY, "TLS is not configured on this server");
            default -> error(ctx, option, REP_ERR_UNSUP, "option " + option + " is not supported");
        }
    }

    private void exportName(ChannelHandlerContext ctx, String name) {
        NbdExport e = lookup.apply(name);
        if (e == null) {
            close(ctx, "unknown export '" + name + "'");
            return;
        }
        NbdExportIo exportIo = new NbdExportIo(e);
        long size;
        try {
            size = exportIo.size();
        } catch (IOException ex) {
            close(ctx, "export unavailable: " + ex.getMessage());
            return;
        }
        ByteBuf b = ctx.alloc().buffer(10 + (noZeroes ? 0 : 124));
        b.writeLong(size).writeShort(transmissionFlags(e));
        if (!noZeroes) {
            b.writeZero(124);
        }
        ctx.write(b);
        enterTransmission(ctx, e, exportIo, size);
    }

    private void list(ChannelHandlerContext ctx, int option, ByteBuf data) {
        if (data.isReadable()) {
            error(ctx, option, REP_ERR_INVALID, "list takes no data");
            return;
        }
        for (NbdExport e : exports.get()) {
            byte[] name = e.name().getBytes(StandardCharsets.UTF_8);
            byte[] desc = e.description() == null ? new byte[0] : e.description().getBytes(StandardCharsets.UTF_8);
            ByteBuf payload = ctx.alloc().buffer(4 + name.length + desc.length);
            payload.writeInt(name.length).writeBytes(name).writeBytes(desc);
            reply(ctx, new NbdOptionReply(option, REP_SERVER, payload));
        }
        reply(ctx, NbdOptionReply.ack(option));
    }

    private void infoOrGo(ChannelHandlerContext ctx, int option, ByteBuf data) {
        String name;
        List<Integer> requests = new ArrayList<>();
        try {
            name = readString(data);
            int n = data.readUnsignedShort();
            for (int i = 0; i < n; i++) {
                requests.add(data.readUnsignedShort());
            }
            if (data.isReadable()) {
                throw new IndexOutOfBoundsException();
            }
        } catch (IndexOutOfBoundsException e) {
            error(ctx, option, REP_ERR_INVALID, "malformed info request");
            return;
        }
        NbdExport e = lookup.apply(name);
        if (e == null) {
            error(ctx, option, REP_ERR_UNKNOWN, "export '" + name + "' not present");
            return;
        }
        NbdExportIo exportIo = new NbdExportIo(e);
        long size;
        try {
            size = exportIo.size();
        } catch (IOException ex) {
            error(ctx, option, REP_ERR_INVALID, "export '" + name + "' is unavailable: " + ex.getMessage());
            return;
        }
        info(ctx, option, ctx.alloc().buffer(12).writeShort(INFO_EXPORT).writeLong(size).writeShort(transmissionFlags(e)));
        if (requests.contains(INFO_NAME)) {
            byte[] n = e.name().getBytes(StandardCharsets.UTF_8);
            info(ctx, option, ctx.alloc().buffer(2 + n.length).writeShort(INFO_NAME).writeBytes(n));
        }
        if (requests.contains(INFO_DESCRIPTION) && e.description() != null) {
            byte[] d = e.description().getBytes(StandardCharsets.UTF_8);
            info(ctx, option, ctx.alloc().buffer(2 + d.length).writeShort(INFO_DESCRIPTION).writeBytes(d));
        }
        info(ctx, option, ctx.alloc().buffer(14).writeShort(INFO_BLOCK_SIZE).writeInt(1).writeInt(4096)
                .writeInt(MAX_REQUEST));
        reply(ctx, NbdOptionReply.ack(option));
        if (option == OPT_GO) {
            enterTransmission(ctx, e, exportIo, size);
        }
    }

    private void info(ChannelHandlerContext ctx, int option, ByteBuf payload) {
        reply(ctx, new NbdOptionReply(option, REP_INFO, payload));
    }

    /**
     * {@code NBD_OPT_LIST_META_CONTEXT} and {@code NBD_OPT_SET_META_CONTEXT}, as QEMU's
     * {@code nbd_negotiate_meta_queries}: the export name (checked first: an unknown export is
     * {@code NBD_REP_ERR_UNKNOWN} whatever follows), the number of queries, the queries (one
     * longer than {@value Nbd#MAX_STRING} bytes is skipped); then a {@code NBD_REP_META_CONTEXT}
     * per selected context ({@link NbdMetaContexts}), with id 0 in a LIST, and the ack. A SET
     * forgets the contexts chosen before as soon as it is read, even if it then fails. Data after
     * the last query is not read by QEMU, whose stream is then out of step and ends at the next
     * option: the connection is closed after the replies.
     */
    private void metaContext(ChannelHandlerContext ctx, int option, ByteBuf data) {
        String opt = option == OPT_LIST_META_CONTEXT ? "list meta context" : "set meta context";
        if (option == OPT_SET_META_CONTEXT && !structured) {
            error(ctx, option, REP_ERR_INVALID, "request option '" + opt + "' when structured reply is not negotiated");
            return;
        }
        boolean list = option == OPT_LIST_META_CONTEXT;
        if (!list) {
            meta = null;
        }
        OptionReader r = new OptionReader(data, opt);
        try {
            String name = r.name();
            NbdExport e = lookup.apply(name);
            if (e == null) {
                error(ctx, option, REP_ERR_UNKNOWN, "export '" + sanitize(name) + "' not present");
                return;
            }
            long n = r.u32();
            List<String> queries = new ArrayList<>();
            for (long i = 0; i < n; i++) {
                String q = r.query();
                if (q != null) {
                    queries.add(q);
                }
            }
            NbdMetaContexts selected = NbdMetaContexts.select(e, list, queries);
            for (NbdMetaContexts.Context c : selected.contexts()) {
                byte[] ctxName = c.name().getBytes(StandardCharsets.UTF_8);
                ByteBuf b = ctx.alloc().buffer(4 + ctxName.length).writeInt(list ? 0 : c.id()).writeBytes(ctxName);
                reply(ctx, new NbdOptionReply(option, REP_META_CONTEXT, b));
            }
            reply(ctx, NbdOptionReply.ack(option));
            if (!list) {
                meta = selected;
            }
            if (data.isReadable()) {
                close(ctx, opt + " has " + data.readableBytes() + " bytes after its queries");
            }
        } catch (OptionReader.Invalid invalid) {
            error(ctx, option, REP_ERR_INVALID, invalid.getMessage());
        }
    }

    /** QEMU's {@code nbd_sanitize_name}: a name in an error reply, cut after 80 bytes. */
    private static String sanitize(String name) {
        byte[] b = name.getBytes(StandardCharsets.UTF_8);
        return b.length < 80 ? name : new String(b, 0, 80, StandardCharsets.UTF_8) + "...";
    }

    /**
     * Reads an option's data as QEMU's {@code nbd_opt_read} does, with its messages: a field
     * longer than what is left is "Inconsistent lengths", a NUL in a string "Unexpected embedded
     * NUL", a name over {@value Nbd#MAX_STRING} bytes "Invalid name length".
     */
    private static final class OptionReader {
        private final ByteBuf data;
        private final String opt;

        OptionReader(ByteBuf data, String opt) {
            this.data = data;
            this.opt = opt;
        }

        static final class Invalid extends Exception {
            Invalid(String message) {
                super(message, null, false, false);
            }
        }

        private Invalid inconsistent() {
            return new Invalid("Inconsistent lengths in option " + opt);
        }

        long u32() throws Invalid {
            if (data.readableBytes() < 4) {
                throw inconsistent();
            }
            return data.readUnsignedInt();
        }

        private String string(long length) throws Invalid {
            if (length > data.readableBytes()) {
                throw inconsistent();
            }
            int at = data.readerIndex();
            if (data.indexOf(at, at + (int) length, (byte) 0) >= 0) {
                throw new Invalid("Unexpected embedded NUL in option " + opt);
            }
            return data.readCharSequence((int) length, StandardCharsets.UTF_8).toString();
        }

        /** QEMU's {@code nbd_opt_read_name}. */
        String name() throws Invalid {
            long length = u32();
            if (length > MAX_STRING) {
                throw new Invalid("Invalid name length: " + length);
            }
            return string(length);
        }

        /** One query of {@code nbd_negotiate_meta_query}; null for one too long, skipped. */
        String query() throws Invalid {
            long length = u32();
            if (length > MAX_STRING) {
                if (length > data.readableBytes()) {
                    throw inconsistent();
                }
                data.skipBytes((int) length);
                return null;
            }
            return string(length);
        }
    }

    /** Hands the connection to the transmission phase: the codec and handler take this one's place. */
    private void enterTransmission(ChannelHandlerContext ctx, NbdExport e, NbdExportIo exportIo, long size) {
        finished = true;
        ctx.flush();
        // As QEMU's nbd_check_meta_export: contexts chosen for another export do not carry over.
        NbdMetaContexts chosen = meta != null && meta.export() == e ? meta : NbdMetaContexts.none(e);
        ChannelPipeline p = ctx.pipeline();
        p.replace(ENCODER, ENCODER, new NbdReplyEncoder());
        p.replace(this, HANDLER, new NbdTransmissionHandler(e, exportIo, size, structured, chosen, io));
        // Last: the option decoder hands the bytes it still holds (the first requests) to the new one.
        p.replace(DECODER, DECODER, new NbdRequestDecoder(MAX_REQUEST));
    }

    private int transmissionFlags(NbdExport e) {
        int flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_CACHE;
        if (multiConn) {
            flags |= TFLAG_CAN_MULTI_CONN;
        }
        if (structured) {
            flags |= TFLAG_SEND_DF;
        }
        if (e.writable()) {
            flags |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
        } else {
            flags |= TFLAG_READ_ONLY;
        }
        return flags;
    }

    private static String readString(ByteBuf data) {
        long length = data.readUnsignedInt();
        if (length > data.readableBytes()) {
            throw new IndexOutOfBoundsException();
        }
        return data.readCharSequence((int) length, StandardCharsets.UTF_8).toString();
    }

    private static void reply(ChannelHandlerContext ctx, NbdOptionReply reply) {
        ctx.write(reply);
    }

    private static void error(ChannelHandlerContext ctx, int option, int type, String message) {
        reply(ctx, NbdOptionReply.error(option, type, message));
    }

    private void close(ChannelHandlerContext ctx, String why) {
        if (why != null) {
            LOG.info("closing NBD connection: {}", why);
        }
        finished = true;
        ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE); // after the replies
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        if (cause instanceof DecoderException) {
            LOG.info("closing NBD connection: {}", cause.getMessage());
        } else {
            LOG.debug("NBD connection error: {}", cause.toString());
        }
        finished = true;
        ctx.close();
    }
}
