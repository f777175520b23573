package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One NBD client: the fixed newstyle handshake, then transmission. Requests are decoded on the
 * event loop and served on virtual threads, several at once; replies go out as each completes.
 *
 * <pre>
 * server: "NBDMAGIC" "IHAVEOPT" u16 flags        client: u32 flags
 * client: "IHAVEOPT" u32 option u32 length data  server: u64 0x3e889045565a9 u32 option u32 type u32 length data
 * request: u32 0x25609513 u16 flags u16 type u64 cookie u64 offset u32 length [data]
 * simple reply: u32 0x67446698 u32 error u64 cookie [data]
 * structured chunk: u32 0x668e33ef u16 flags u16 type u64 cookie u32 length payload
 * </pre>
 */
final class NbdConnection extends ByteToMessageDecoder {
    private static final java.util.Set<RequestFlag> FUA = java.util.Set.of(RequestFlag.FUA);
    private static final Logger LOG = LoggerFactory.getLogger(NbdConnection.class);
    private static final int MAX_OPTION = 64 * 1024;
    private static final int MAX_IN_FLIGHT = 64;
    private static final int MAX_EXTENTS = 4096;

    private enum Phase { CLIENT_FLAGS, OPTIONS, TRANSMISSION, CLOSED }

    private final NbdServer server;
    private final Executor io;
    private Phase phase = Phase.CLIENT_FLAGS;
    private boolean noZeroes;
    private boolean structured;
    private String metaExport; // export for which base:allocation was selected
    private NbdExport export;
    private long size;
    private int inFlight;

    NbdConnection(NbdServer server, Executor io) {
        this.server = server;
        this.io = io;
    }

    NbdExport export() {
        return export;
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) throws Exception {
        ByteBuf b = ctx.alloc().buffer(18);
        b.writeLong(NBDMAGIC).writeLong(IHAVEOPT).writeShort(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        ctx.writeAndFlush(b);
        super.channelActive(ctx);
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        while (phase != Phase.CLOSED) {
            int before = in.readableBytes();
            switch (phase) {
                case CLIENT_FLAGS -> clientFlags(ctx, in);
                case OPTIONS -> option(ctx, in);
                case TRANSMISSION -> request(ctx, in);
                default -> { }
            }
            if (in.readableBytes() == before || !ctx.channel().isActive()) {
                return; // needs more bytes
            }
        }
        in.skipBytes(in.readableBytes());
    }

    private void clientFlags(ChannelHandlerContext ctx, ByteBuf in) {
        if (in.readableBytes() < 4) {
            return;
        }
        int flags = in.readInt();
        if ((flags & FLAG_FIXED_NEWSTYLE) == 0) {
            close(ctx, "client does not speak fixed newstyle");
            return;
        }
        noZeroes = (flags & FLAG_NO_ZEROES) != 0;
        phase = Phase.OPTIONS;
    }

    // ---- handshake ----------------------------------------------------------------------------

    private void option(ChannelHandlerContext ctx, ByteBuf in) {
        if (in.readableBytes() < 16) {
            return;
        }
        int base = in.readerIndex();
        long magic = in.getLong(base);
        int option = in.getInt(base + 8);
        long length = in.getUnsignedInt(base + 12);
        if (magic != IHAVEOPT) {
            close(ctx, "bad option magic");
            return;
        }
        if (length > MAX_OPTION) {
            close(ctx, "option " + option + " of " + length + " bytes is too long");
            return;
        }
        if (in.readableBytes() < 16 + length) {
            return;
        }
        in.skipBytes(16);
        ByteBuf data = in.readSlice((int) length);
        switch (option) {
            case OPT_EXPORT_NAME -> exportName(ctx, data.toString(StandardCharsets.UTF_8));
            case OPT_ABORT -> {
                optionReply(ctx, option, REP_ACK, null);
                close(ctx, null);
            }
            case OPT_LIST -> list(ctx, option, data);
            case OPT_INFO, OPT_GO -> infoOrGo(ctx, option, data);
            case OPT_STRUCTURED_REPLY -> {
                if (data.isReadable()) {
                    optionError(ctx, option, REP_ERR_INVALID, "structured reply takes no data");
                } else if (structured) {
                    optionError(ctx, option, REP_ERR_INVALID, "structured replies are already on");
                } else {
                    structured = true;
                    optionReply(ctx, option, REP_ACK, null);
                }
            }
            case OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> metaContext(ctx, option, data);
            case OPT_STARTTLS -> optionError(ctx, option, REP_ERR_POLICY, "TLS is not configured on this server");
            default -> optionError(ctx, option, REP_ERR_UNSUP, "option " + option + " is not supported");
        }
    }

    private void exportName(ChannelHandlerContext ctx, String name) {
        NbdExport e = server.lookup(name);
        if (e == null) {
            close(ctx, "unknown export '" + name + "'");
            return;
        }
        if (!enter(ctx, e)) {
            return;
        }
        ByteBuf b = ctx.alloc().buffer(10 + (noZeroes ? 0 : 124));
        b.writeLong(size).writeShort(transmissionFlags());
        if (!noZeroes) {
            b.writeZero(124);
        }
        ctx.writeAndFlush(b);
    }

    private void list(ChannelHandlerContext ctx, int option, ByteBuf data) {
        if (data.isReadable()) {
            optionError(ctx, option, REP_ERR_INVALID, "list takes no data");
            return;
        }
        for (NbdExport e : server.exports()) {
            byte[] name = e.name().getBytes(StandardCharsets.UTF_8);
            byte[] desc = e.description() == null ? new byte[0] : e.description().getBytes(StandardCharsets.UTF_8);
            ByteBuf payload = ctx.alloc().buffer(4 + name.length + desc.length);
            payload.writeInt(name.length).writeBytes(name).writeBytes(desc);
            optionReply(ctx, option, REP_SERVER, payload);
        }
        optionReply(ctx, option, REP_ACK, null);
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
            optionError(ctx, option, REP_ERR_INVALID, "malformed info request");
            return;
        }
        NbdExport e = server.lookup(name);
        if (e == null) {
            optionError(ctx, option, REP_ERR_UNKNOWN, "export '" + name + "' not present");
            return;
        }
        long exportSize;
        try {
            exportSize = e.backend().size();
        } catch (IOException ex) {
            optionError(ctx, option, REP_ERR_INVALID, "export '" + name + "' is unavailable: " + ex.getMessage());
            return;
        }
        ByteBuf info = ctx.alloc().buffer(12);
        info.writeShort(INFO_EXPORT).writeLong(exportSize).writeShort(flagsFor(e));
        optionReply(ctx, option, REP_INFO, info);
        if (requests.contains(INFO_NAME)) {
            byte[] n = e.name().getBytes(StandardCharsets.UTF_8);
            ByteBuf b = ctx.alloc().buffer(2 + n.length);
            b.writeShort(INFO_NAME).writeBytes(n);
            optionReply(ctx, option, REP_INFO, b);
        }
        if (requests.contains(INFO_DESCRIPTION) && e.description() != null) {
            byte[] d = e.description().getBytes(StandardCharsets.UTF_8);
            ByteBuf b = ctx.alloc().buffer(2 + d.length);
            b.writeShort(INFO_DESCRIPTION).writeBytes(d);
            optionReply(ctx, option, REP_INFO, b);
        }
        ByteBuf sizes = ctx.alloc().buffer(14);
        sizes.writeShort(INFO_BLOCK_SIZE).writeInt(1).writeInt(4096).writeInt(MAX_REQUEST);
        optionReply(ctx, option, REP_INFO, sizes);
        optionReply(ctx, option, REP_ACK, null);
        if (option == OPT_GO) {
            enter(ctx, e);
        }
    }

    private void metaContext(ChannelHandlerContext ctx, int option, ByteBuf data) {
        if (option == OPT_SET_META_CONTEXT && !structured) {
            optionError(ctx, option, REP_ERR_INVALID, "set meta context needs structured replies first");
            return;
        }
        String name;
        List<String> queries = new ArrayList<>();
        try {
            name = readString(data);
            long n = data.readUnsignedInt();
            for (long i = 0; i < n; i++) {
                queries.add(readString(data));
            }
            if (data.isReadable()) {
                throw new IndexOutOfBoundsException();
            }
        } catch (IndexOutOfBoundsException e) {
            optionError(ctx, option, REP_ERR_INVALID, "malformed meta context request");
            return;
        }
        if (server.lookup(name) == null) {
            optionError(ctx, option, REP_ERR_UNKNOWN, "export '" + name + "' not present");
            return;
        }
        boolean selected = false;
        for (String q : queries) {
            if (q.equals(BASE_ALLOCATION) || option == OPT_LIST_META_CONTEXT && q.equals("base:")) {
                selected = true;
            }
        }
        if (option == OPT_LIST_META_CONTEXT && queries.isEmpty()) {
            selected = true;
        }
        if (selected) {
            byte[] ctxName = BASE_ALLOCATION.getBytes(StandardCharsets.US_ASCII);
            ByteBuf b = ctx.alloc().buffer(4 + ctxName.length);
            b.writeInt(BASE_ALLOCATION_ID).writeBytes(ctxName);
            optionReply(ctx, option, REP_META_CONTEXT, b);
        }
        if (option == OPT_SET_META_CONTEXT) {
            metaExport = selected ? name : null;
        }
        optionReply(ctx, option, REP_ACK, null);
    }

    private boolean enter(ChannelHandlerContext ctx, NbdExport e) {
        try {
            size = e.backend().size();
        } catch (IOException ex) {
            close(ctx, "export unavailable: " + ex.getMessage());
            return false;
        }
        export = e;
        phase = Phase.TRANSMISSION;
        if (metaExport != null && !metaExport.equals(e.name())) {
            metaExport = null;
        }
        return true;
    }

    private int transmissionFlags() {
        return flagsFor(export);
    }

    private int flagsFor(NbdExport e) {
        int flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
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

    private void optionReply(ChannelHandlerContext ctx, int option, int type, ByteBuf payload) {
        int length = payload == null ? 0 : payload.readableBytes();
        ByteBuf b = ctx.alloc().buffer(20);
        b.writeLong(REPLY_MAGIC).writeInt(option).writeInt(type).writeInt(length);
        ctx.write(b);
        if (payload != null) {
            ctx.write(payload);
        }
        ctx.flush();
    }

    private void optionError(ChannelHandlerContext ctx, int option, int type, String message) {
        byte[] m = message.getBytes(StandardCharsets.UTF_8);
        optionReply(ctx, option, type, ctx.alloc().buffer(m.length).writeBytes(m));
    }

    // ---- transmission ------------------------------------------------------------------------

    private void request(ChannelHandlerContext ctx, ByteBuf in) {
        if (in.readableBytes() < 28) {
            return;
        }
        int base = in.readerIndex();
        int magic = in.getInt(base);
        int flags = in.getUnsignedShort(base + 4);
        int type = in.getUnsignedShort(base + 6);
        long cookie = in.getLong(base + 8);
        long offset = in.getLong(base + 16);
        long length = in.getUnsignedInt(base + 24);
        if (magic != REQUEST_MAGIC) {
            close(ctx, "bad request magic");
            return;
        }
        if (type == CMD_WRITE) {
            if (length > MAX_REQUEST) {
                close(ctx, "write of " + length + " bytes is larger than " + MAX_REQUEST);
                return;
            }
            if (in.readableBytes() < 28 + length) {
                return;
            }
        }
        in.skipBytes(28);
        ByteBuf payload = type == CMD_WRITE ? in.readRetainedSlice((int) length) : null;
        if (type == CMD_DISC) {
            close(ctx, null);
            return;
        }
        if (++inFlight >= MAX_IN_FLIGHT) {
            ctx.channel().config().setAutoRead(false);
        }
        io.execute(() -> {
            try {
                // The export's root edge goes to whatever node it points to now; a drain holds it.
                serve(ctx, export.backend(), flags, type, cookie, offset, length, payload);
            } finally {
                if (payload != null) {
                    payload.release();
                }
                ctx.executor().execute(() -> {
                    if (--inFlight < MAX_IN_FLIGHT) {
                        ctx.channel().config().setAutoRead(true);
                    }
                });
            }
        });
    }

    private void serve(ChannelHandlerContext ctx, BlockNode node, int flags, int type, long cookie, long offset,
                       long length, ByteBuf payload) {
        try {
            boolean inRange = offset >= 0 && length <= size && offset <= size - length;
            switch (type) {
                case CMD_READ -> {
                    if (!inRange || length > MAX_REQUEST) {
                        error(ctx, cookie, EINVAL, "read past the end of the export or too large");
                        return;
                    }
                    read(ctx, node, cookie, offset, (int) length);
                }
                case CMD_WRITE -> {
                    if (!export.writable()) {
                        error(ctx, cookie, EPERM, "export is read-only");
                        return;
                    }
                    if (!inRange) {
                        error(ctx, cookie, ENOSPC, "write past the end of the export");
                        return;
                    }
                    node.write(offset, payload.nioBuffer(), (flags & CMD_FLAG_FUA) != 0 ? FUA : RequestFlag.NONE);
                    done(ctx, cookie);
                }
                case CMD_WRITE_ZEROES, CMD_TRIM -> {
                    if (!export.writable()) {
                        error(ctx, cookie, EPERM, "export is read-only");
                        return;
                    }
                    if (!inRange) {
                        error(ctx, cookie, ENOSPC, "request past the end of the export");
                        return;
                    }
                    if (type == CMD_TRIM) {
                        node.discard(offset, length);
                        if ((flags & CMD_FLAG_FUA) != 0) {
                            node.flush();
                        }
                    } else {
                        java.util.Set<RequestFlag> zf = java.util.EnumSet.noneOf(RequestFlag.class);
                        if ((flags & CMD_FLAG_NO_HOLE) == 0) {
                            zf.add(RequestFlag.MAY_UNMAP);
                        }
                        if ((flags & CMD_FLAG_FAST_ZERO) != 0) {
                            zf.add(RequestFlag.NO_FALLBACK);
                        }
                        if ((flags & CMD_FLAG_FUA) != 0) {
                            zf.add(RequestFlag.FUA);
                        }
                        node.writeZeroes(offset, length, zf);
                    }
                    done(ctx, cookie);
                }
                case CMD_FLUSH -> {
                    node.flush();
                    done(ctx, cookie);
                }
                case CMD_CACHE -> done(ctx, cookie);
                case CMD_BLOCK_STATUS -> {
                    if (!structured || metaExport == null) {
                        error(ctx, cookie, EINVAL, "no meta context was negotiated");
                        return;
                    }
                    if (!inRange || length == 0) {
                        error(ctx, cookie, EINVAL, "block status past the end of the export");
                        return;
                    }
                    blockStatus(ctx, node, cookie, offset, length, (flags & CMD_FLAG_REQ_ONE) != 0);
                }
                default -> error(ctx, cookie, EINVAL, "unknown command " + type);
            }
        } catch (IOException e) {
            LOG.warn("NBD request on export {} failed: {}", export.name(), e.getMessage());
            error(ctx, cookie, errno(e), e.getMessage());
        } catch (RuntimeException e) {
            LOG.error("NBD request on export {} failed", export.name(), e);
            error(ctx, cookie, EIO, e.toString());
        }
    }

    private void read(ChannelHandlerContext ctx, BlockNode node, long cookie, long offset, int length) throws IOException {
        int header = structured ? 28 : 16;
        ByteBuf b = ctx.alloc().directBuffer(header + length);
        try {
            if (structured) {
                b.writeInt(STRUCTURED_REPLY_MAGIC).writeShort(REPLY_FLAG_DONE).writeShort(REPLY_TYPE_OFFSET_DATA)
                        .writeLong(cookie).writeInt(8 + length).writeLong(offset);
            } else {
                b.writeInt(SIMPLE_REPLY_MAGIC).writeInt(0).writeLong(cookie);
            }
            ByteBuffer data = b.nioBuffer(header, length);
            node.read(offset, data);
            b.writerIndex(header + length);
        } catch (IOException | RuntimeException e) {
            b.release();
            throw e;
        }
        ctx.writeAndFlush(b);
    }

    private void blockStatus(ChannelHandlerContext ctx, BlockNode node, long cookie, long offset, long length,
                             boolean one) throws IOException {
        ByteBuf b = ctx.alloc().buffer();
        b.writeInt(STRUCTURED_REPLY_MAGIC).writeShort(REPLY_FLAG_DONE).writeShort(REPLY_TYPE_BLOCK_STATUS)
                .writeLong(cookie).writeInt(0).writeInt(BASE_ALLOCATION_ID);
        long pos = offset;
        long end = offset + length;
        int extents = 0;
        int lastFlags = -1;
        while (pos < end && extents < MAX_EXTENTS) {
            BlockStatus s = node.chainStatus(pos, end - pos);
            int f = s.zero() ? STATE_HOLE | STATE_ZERO : 0; // as QEMU: no data means a hole
            if (f == lastFlags) { // merge with the previous descriptor
                int at = b.writerIndex() - 8;
                b.setInt(at, (int) (b.getUnsignedInt(at) + s.length()));
            } else {
                b.writeInt((int) s.length()).writeInt(f);
                extents++;
                lastFlags = f;
            }
            pos = s.end();
            if (one) {
                break;
            }
        }
        b.setInt(16, b.readableBytes() - 20);
        ctx.writeAndFlush(b);
    }

    private void done(ChannelHandlerContext ctx, long cookie) {
        ByteBuf b = ctx.alloc().buffer(20);
        if (structured) {
            b.writeInt(STRUCTURED_REPLY_MAGIC).writeShort(REPLY_FLAG_DONE).writeShort(REPLY_TYPE_NONE)
                    .writeLong(cookie).writeInt(0);
        } else {
            b.writeInt(SIMPLE_REPLY_MAGIC).writeInt(0).writeLong(cookie);
        }
        ctx.writeAndFlush(b);
    }

    private void error(ChannelHandlerContext ctx, long cookie, int errno, String message) {
        ByteBuf b;
        if (structured) {
            byte[] m = (message == null ? "" : message).getBytes(StandardCharsets.UTF_8);
            int ml = Math.min(m.length, 4096);
            b = ctx.alloc().buffer(26 + ml);
            b.writeInt(STRUCTURED_REPLY_MAGIC).writeShort(REPLY_FLAG_DONE).writeShort(REPLY_TYPE_ERROR)
                    .writeLong(cookie).writeInt(6 + ml).writeInt(errno).writeShort(ml).writeBytes(m, 0, ml);
        } else {
            b = ctx.alloc().buffer(16);
            b.writeInt(SIMPLE_REPLY_MAGIC).writeInt(errno).writeLong(cookie);
        }
        ctx.writeAndFlush(b);
    }

    /** The NBD error for a failed request, by its errno (QEMU's {@code system_errno_to_nbd_errno}). */
    private static int errno(IOException e) {
        return switch (Errno.of(e)) {
            case EPERM, EACCES, EROFS -> EPERM;
            case EIO -> EIO;
            case ENOMEM -> ENOMEM;
            case ENOSPC, EFBIG -> ENOSPC;
            case ENOTSUP -> ENOTSUP;
            case ESHUTDOWN -> ESHUTDOWN;
            default -> EINVAL;
        };
    }

    private void close(ChannelHandlerContext ctx, String why) {
        if (why != null) {
            LOG.info("closing NBD connection: {}", why);
        }
        phase = Phase.CLOSED;
        ctx.close();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        LOG.debug("NBD connection error: {}", cause.toString());
        ctx.close();
    }
}
