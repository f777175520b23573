package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;

import io.blockjobs.platform.nbd.NbdReply.BlockStatusChunk;
import io.blockjobs.platform.nbd.NbdReply.ErrorChunk;
import io.blockjobs.platform.nbd.NbdReply.NoneChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetDataChunk;
import io.blockjobs.platform.nbd.NbdReply.SimpleReply;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.DecoderException;
import io.netty.util.concurrent.EventExecutor;
import java.io.IOException;
import java.util.ArrayDeque;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The transmission phase of one client, the server's side, after {@link NbdHandshakeHandler}:
 * {@link NbdRequest}s from an {@link NbdRequestDecoder} in, {@link NbdReply}s to an
 * {@link NbdReplyEncoder} out.
 *
 * <p>Each request is served on the I/O executor (virtual threads), through {@link NbdExportIo}.
 * Memory is bounded per connection, as QEMU bounds it by its request limit, so that a client
 * that sends many large reads and never reads the replies slows only itself: decoded requests
 * wait in a queue, and one starts only while fewer than {@value #MAX_IN_FLIGHT} are in flight,
 * the buffers of those in flight (a write's data, a read's reply) stay within
 * {@value #MAX_BYTES_IN_FLIGHT} bytes (one request of any size may always start), and the
 * channel is writable (its unsent replies are under the high water mark {@link NbdServer} sets).
 * While a request waits the channel stops reading. Each reply is written as soon as its request
 * completes, so replies leave in completion order (the cookie pairs them with requests). With
 * structured replies negotiated a reply is one chunk with {@code NBD_REPLY_FLAG_DONE}:
 * {@code OFFSET_DATA} for a read, {@code ERROR}, or {@code NONE}; a block status request gets one
 * {@code BLOCK_STATUS} chunk per meta context the client chose, the last with {@code DONE};
 * without structured replies, simple replies.
 *
 * <p>Each request is checked as QEMU 7.2's {@code nbd_co_receive_request} checks it, in its order
 * and with its messages: the length of a read, write or cache (at most 32 MiB), writes to a
 * read-only export, the range, then the flags the command accepts ({@code FUA} for every command;
 * {@code DF} for a structured read; {@code NO_HOLE} and {@code FAST_ZERO} for write zeroes;
 * {@code REQ_ONE} for block status). Each refusal is {@code EINVAL} as in QEMU, but for a write to
 * a read-only export ({@code EPERM}) and a write past the end ({@code ENOSPC}), as the NBD
 * specification asks.
 *
 * <p>{@code NBD_CMD_DISC} stops reading and closes the connection once the requests before it
 * have been answered. A write larger than the decoder accepts
 * ({@link NbdRequestTooLargeException}) is answered with {@code EINVAL} and then treated as a
 * {@code NBD_CMD_DISC}, as QEMU does: its data was not read, so the stream is lost. Any other
 * decoding error (a bad magic) closes at once.
 *
 * <p>Threads: {@link #channelRead}, {@link #exceptionCaught} and the bookkeeping after each
 * request run on the event loop; requests are served on I/O threads, several at once, and write
 * their replies from there.
 */
final class NbdTransmissionHandler extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = LoggerFactory.getLogger(NbdTransmissionHandler.class);
    /** Requests served at once, at most. */
    static final int MAX_IN_FLIGHT = 64;
    /** Bytes of request buffers (write data, read replies) in flight, at most: two of the largest. */
    static final long MAX_BYTES_IN_FLIGHT = 2L * MAX_REQUEST;

    private final NbdExport export;
    private final NbdExportIo exportIo;
    private final long size;
    private final boolean structured;
    private final NbdMetaContexts meta;
    private final Executor executor;
    private final ArrayDeque<NbdRequest> waiting = new ArrayDeque<>(); // event loop only
    private int inFlight; // event loop only
    private long bytesInFlight; // event loop only
    private boolean closing; // event loop only

    /**
     * @param export         what the client chose
     * @param exportIo       its I/O
     * @param size           its size as told to the client
     * @param structured     whether structured replies were negotiated
     * @param meta           the meta contexts chosen for this export (none: no block status)
     * @param executor       where requests are served
     */
    NbdTransmissionHandler(NbdExport export, NbdExportIo exportIo, long size, boolean structured,
                           NbdMetaContexts meta, Executor executor) {
        this.export = export;
        this.exportIo = exportIo;
        this.size = size;
        this.structured = structured;
        this.meta = meta;
        this.executor = executor;
    }

    /** The export this connection serves. */
    NbdExport export() {
        return export;
    }

    /** Requests decoded and not yet started (for tests). */
    int waiting() {
        return waiting.size();
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof NbdRequest r)) {
            ctx.fireChannelRead(msg);
            return;
        }
        if (closing) {
            r.release();
            return;
        }
        waiting.add(r);
        pump(ctx);
    }

    @Override
    public void channelWritabilityChanged(ChannelHandlerContext ctx) {
        pump(ctx);
        ctx.fireChannelWritabilityChanged();
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        releaseWaiting();
        ctx.fireChannelInactive();
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext ctx) {
        releaseWaiting();
    }

    private void releaseWaiting() {
        NbdRequest r;
        while ((r = waiting.poll()) != null) {
            r.release();
        }
    }

    /** On the event loop: starts what the bounds allow, and reads on only if nothing waits. */
    private void pump(ChannelHandlerContext ctx) {
        while (!closing && !waiting.isEmpty() && mayStart(ctx, waiting.peek())) {
            NbdRequest r = waiting.poll();
            if (r.type() == CMD_DISC) {
                r.release();
                disconnect(ctx);
                return;
            }
            start(ctx, r);
        }
        if (!closing) {
            ctx.channel().config().setAutoRead(waiting.isEmpty() && inFlight < MAX_IN_FLIGHT
                    && bytesInFlight < MAX_BYTES_IN_FLIGHT && ctx.channel().isWritable());
        }
    }

    private boolean mayStart(ChannelHandlerContext ctx, NbdRequest r) {
        if (r.type() == CMD_DISC) {
            return true; // waits for nothing: the connection closes once the others are answered
        }
        return inFlight < MAX_IN_FLIGHT && ctx.channel().isWritable()
                && (inFlight == 0 || bytesInFlight + cost(r) <= MAX_BYTES_IN_FLIGHT);
    }

    /** The bytes a request holds while it is served: a write's data, a read's reply. */
    private static long cost(NbdRequest r) {
        return r.type() == CMD_WRITE || r.type() == CMD_READ && r.length() <= MAX_REQUEST ? r.length() : 0;
    }

    private void start(ChannelHandlerContext ctx, NbdRequest r) {
        long cost = cost(r);
        inFlight++;
        bytesInFlight += cost;
        try {
            executor.execute(() -> run(ctx, r, cost));
        } catch (RejectedExecutionException e) { // the server is shutting down
            r.release();
            inFlight--;
            bytesInFlight -= cost;
            ctx.close();
        }
    }

    /** On an I/O thread. */
    private void run(ChannelHandlerContext ctx, NbdRequest r, long cost) {
        try {
            NbdReply reply;
            try {
                reply = serve(ctx, r);
            } finally {
                r.release();
            }
            ctx.writeAndFlush(reply);
        } finally {
            EventExecutor loop = ctx.executor();
            if (loop.inEventLoop()) {
                completed(ctx, cost);
            } else {
                try {
                    loop.execute(() -> completed(ctx, cost));
                } catch (RejectedExecutionException e) {
                    // the event loop is gone, and the channel with it
                }
            }
        }
    }

    /** On the event loop, after a reply was written. */
    private void completed(ChannelHandlerContext ctx, long cost) {
        inFlight--;
        bytesInFlight -= cost;
        if (closing) {
            closeWhenIdle(ctx);
        } else {
            pump(ctx);
        }
    }

    private void disconnect(ChannelHandlerContext ctx) {
        closing = true;
        releaseWaiting(); // after NBD_CMD_DISC (or a lost stream) nothing more is served
        ctx.channel().config().setAutoRead(false);
        closeWhenIdle(ctx);
    }

    private void closeWhenIdle(ChannelHandlerContext ctx) {
        if (inFlight == 0) {
            ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE); // after the replies
        }
    }

    /** QEMU's {@code nbd_cmd_lookup}, for messages. */
    private static String commandName(int type) {
        return switch (type) {
            case CMD_READ -> "read";
            case CMD_WRITE -> "write";
            case CMD_DISC -> "disconnect";
            case CMD_FLUSH -> "flush";
            case CMD_TRIM -> "trim";
            case CMD_CACHE -> "cache";
            case CMD_WRITE_ZEROES -> "write zeroes";
            case CMD_BLOCK_STATUS -> "block status";
            default -> "<unknown>";
        };
    }

    /** QEMU 7.2's message for a request longer than 32 MiB (the stray space is QEMU's). */
    static String tooLong(long length) {
        return "len (" + length + " ) is larger than max len (" + MAX_REQUEST + ")";
    }

    /**
     * The refusal of a request that {@code nbd_co_receive_request} would refuse, in its order, or
     * null.
     */
    private NbdReply refusal(NbdRequest r) {
        int type = r.type();
        long cookie = r.cookie();
        long offset = r.offset();
        long length = r.length();
        if ((type == CMD_READ || type == CMD_WRITE || type == CMD_CACHE) && length > MAX_REQUEST) {
            return error(cookie, EINVAL, tooLong(length));
        }
        boolean writes = type == CMD_WRITE || type == CMD_WRITE_ZEROES || type == CMD_TRIM;
        if (writes && !export.writable()) {
            return error(cookie, EPERM, "Export is read-only");
        }
        if (offset < 0 || offset > size || length > size - offset) {
            return error(cookie, type == CMD_WRITE || type == CMD_WRITE_ZEROES ? ENOSPC : EINVAL,
                    "operation past EOF; From: " + Long.toUnsignedString(offset) + ", Len: " + length + ", Size: " + size);
        }
        int valid = CMD_FLAG_FUA;
        if (type == CMD_READ && structured) {
            valid |= CMD_FLAG_DF;
        } else if (type == CMD_WRITE_ZEROES) {
            valid |= CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
        } else if (type == CMD_BLOCK_STATUS) {
            valid |= CMD_FLAG_REQ_ONE;
        }
        if ((r.flags() & ~valid) != 0) {
            return error(cookie, EINVAL, String.format("unsupported flags for command %s (got 0x%x)",
                    commandName(type), r.flags()));
        }
        return null;
    }

    private NbdReply serve(ChannelHandlerContext ctx, NbdRequest r) {
        NbdReply refused = refusal(r);
        if (refused != null) {
            return refused;
        }
        long cookie = r.cookie();
        long offset = r.offset();
        long length = r.length();
        try {
            switch (r.type()) {
                case CMD_READ -> {
                    return read(ctx, cookie, offset, (int) length);
                }
                case CMD_WRITE -> {
                    exportIo.write(offset, r.data().nioBuffer(), r.has(CMD_FLAG_FUA));
                    return done(cookie);
                }
                case CMD_WRITE_ZEROES -> {
                    exportIo.writeZeroes(offset, length, !r.has(CMD_FLAG_NO_HOLE), r.has(CMD_FLAG_FUA),
                            r.has(CMD_FLAG_FAST_ZERO));
                    return done(cookie);
                }
                case CMD_TRIM -> {
                    exportIo.trim(offset, length, r.has(CMD_FLAG_FUA));
                    return done(cookie);
                }
                case CMD_FLUSH -> {
                    exportIo.flush();
                    return done(cookie);
                }
                case CMD_CACHE -> {
                    return done(cookie); // a hint: nothing to prefetch into
                }
                case CMD_BLOCK_STATUS -> {
                    if (length == 0) {
                        return error(cookie, EINVAL, "need non-zero length");
                    }
                    if (!structured || meta.count() == 0) {
                        return error(cookie, EINVAL, "CMD_BLOCK_STATUS not negotiated");
                    }
                    return blockStatus(ctx, cookie, offset, length, r.has(CMD_FLAG_REQ_ONE));
                }
                default -> {
                    return error(cookie, EINVAL, "invalid request type (" + r.type() + ") received");
                }
            }
        } catch (IOException e) {
            if (io.blockjobs.sdk.block.Errno.of(e) == io.blockjobs.sdk.block.Errno.ENOTSUP) {
                return error(cookie, NbdExportIo.nbdErrno(e), e.getMessage()); // the client's choice (fast zero)
            }
            LOG.warn("NBD request on export {} failed: {}", export.name(), e.getMessage());
            return error(cookie, NbdExportIo.nbdErrno(e), e.getMessage());
        } catch (RuntimeException e) {
            LOG.error("NBD request on export {} failed", export.name(), e);
            return error(cookie, EIO, e.toString());
        }
    }

    private NbdReply read(ChannelHandlerContext ctx, long cookie, long offset, int length) throws IOException {
        ByteBuf data = ctx.alloc().directBuffer(length);
        try {
            exportIo.read(offset, data.nioBuffer(0, length));
            data.writerIndex(length);
        } catch (IOException | RuntimeException e) {
            data.release();
            throw e;
        }
        return structured ? new OffsetDataChunk(cookie, true, offset, data) : new SimpleReply(cookie, 0, data);
    }

    /**
     * One {@code BLOCK_STATUS} chunk per chosen context, in QEMU's order ({@code base:allocation},
     * {@code qemu:allocation-depth}, the bitmaps), each with at most {@link ExtentArray#MAX}
     * extents, or one with {@code NBD_CMD_FLAG_REQ_ONE}. Each chunk but the last is written as
     * soon as it is gathered, as QEMU's server sends it (chunks of other requests may come
     * between, as the protocol allows); the last, flagged {@code DONE}, is returned. A context whose status cannot be read ends the reply
     * with an error chunk.
     */
    private NbdReply blockStatus(ChannelHandlerContext ctx, long cookie, long offset, long length, boolean one) {
        List<NbdMetaContexts.Context> contexts = meta.contexts();
        for (int i = 0; i < contexts.size(); i++) {
            NbdMetaContexts.Context c = contexts.get(i);
            ExtentArray extents = ExtentArray.forRequest(one);
            try {
                switch (c.id()) {
                    case NbdMetaContexts.BASE_ALLOCATION_ID -> exportIo.baseAllocation(offset, length, extents);
                    case NbdMetaContexts.ALLOCATION_DEPTH_ID -> exportIo.allocationDepth(offset, length, extents);
                    default -> NbdExportIo.dirtyBitmap(export.bitmaps().get(c.id() - NbdMetaContexts.DIRTY_BITMAP_ID),
                            offset, length, extents);
                }
            } catch (IOException e) {
                LOG.warn("NBD block status on export {} failed: {}", export.name(), e.getMessage());
                return new ErrorChunk(cookie, true, NbdExportIo.nbdErrno(e), "can't get block status");
            }
            BlockStatusChunk chunk = new BlockStatusChunk(cookie, i == contexts.size() - 1, c.id(), extents);
            if (chunk.done()) {
                return chunk;
            }
            ctx.write(chunk);
        }
        throw new IllegalStateException("no meta context");
    }

    private NbdReply done(long cookie) {
        return structured ? new NoneChunk(cookie) : new SimpleReply(cookie, 0);
    }

    private NbdReply error(long cookie, int errno, String message) {
        return structured ? new ErrorChunk(cookie, true, errno, message) : new SimpleReply(cookie, errno);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        if (cause instanceof NbdRequestTooLargeException e) {
            LOG.info("closing NBD connection: {}", e.getMessage());
            if (!closing) {
                ctx.writeAndFlush(error(e.cookie(), EINVAL, e.getMessage()));
                // The requests before it are still answered; then the connection closes.
                waiting.add(new NbdRequest(0, CMD_DISC, e.cookie(), 0, 0));
                pump(ctx);
            }
        } else if (cause instanceof DecoderException) {
            LOG.info("closing NBD connection: {}", cause.getMessage());
            ctx.close();
        } else {
            LOG.debug("NBD connection error: {}", cause.toString());
            ctx.close();
        }
    }
}
