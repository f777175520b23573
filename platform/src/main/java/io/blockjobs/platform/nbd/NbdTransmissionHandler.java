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
 * Up to {@value #MAX_IN_FLIGHT} are in flight; at that many the channel stops reading until one
 * completes. Each reply is written as soon as its request completes, so replies leave in
 * completion order (the cookie pairs them with requests). With structured replies negotiated a
 * reply is one chunk with {@code NBD_REPLY_FLAG_DONE}: {@code OFFSET_DATA} for a read,
 * {@code ERROR}, or {@code NONE}; a block status request gets one {@code BLOCK_STATUS} chunk per
 * meta context the client chose, the last with {@code DONE}; without structured replies, simple
 * replies.
 *
 * <p>{@code NBD_CMD_DISC} stops reading and closes the connection once the requests in flight
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
    static final int MAX_IN_FLIGHT = 64;

    private final NbdExport export;
    private final NbdExportIo exportIo;
    private final long size;
    private final boolean structured;
    private final NbdMetaContexts meta;
    private final Executor executor;
    private int inFlight; // event loop only
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
        if (r.type() == CMD_DISC) {
            r.release();
            disconnect(ctx);
            return;
        }
        if (++inFlight >= MAX_IN_FLIGHT) {
            ctx.channel().config().setAutoRead(false);
        }
        try {
            executor.execute(() -> run(ctx, r));
        } catch (RejectedExecutionException e) { // the server is shutting down
            r.release();
            inFlight--;
            ctx.close();
        }
    }

    /** On an I/O thread. */
    private void run(ChannelHandlerContext ctx, NbdRequest r) {
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
                completed(ctx);
            } else {
                try {
                    loop.execute(() -> completed(ctx));
                } catch (RejectedExecutionException e) {
                    // the event loop is gone, and the channel with it
                }
            }
        }
    }

    /** On the event loop, after a reply was written. */
    private void completed(ChannelHandlerContext ctx) {
        inFlight--;
        if (closing) {
            closeWhenIdle(ctx);
        } else if (inFlight < MAX_IN_FLIGHT) {
            ctx.channel().config().setAutoRead(true);
        }
    }

    private void disconnect(ChannelHandlerContext ctx) {
        closing = true;
        ctx.channel().config().setAutoRead(false);
        closeWhenIdle(ctx);
    }

    private void closeWhenIdle(ChannelHandlerContext ctx) {
        if (inFlight == 0) {
            ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE); // after the replies
        }
    }

    private NbdReply serve(ChannelHandlerContext ctx, NbdRequest r) {
        long cookie = r.cookie();
        long offset = r.offset();
        long length = r.length();
        boolean inRange = offset >= 0 && length <= size && offset <= size - length;
        try {
            switch (r.type()) {
                case CMD_READ -> {
                    if (!inRange || length > MAX_REQUEST) {
                        return error(cookie, EINVAL, "read past the end of the export or too large");
                    }
                    return read(ctx, cookie, offset, (int) length);
                }
                case CMD_WRITE -> {
                    if (!export.writable()) {
                        return error(cookie, EPERM, "export is read-only");
                    }
                    if (!inRange) {
                        return error(cookie, ENOSPC, "write past the end of the export");
                    }
                    exportIo.write(offset, r.data().nioBuffer(), r.has(CMD_FLAG_FUA));
                    return done(cookie);
                }
                case CMD_WRITE_ZEROES, CMD_TRIM -> {
                    if (!export.writable()) {
                        return error(cookie, EPERM, "export is read-only");
                    }
                    if (!inRange) {
                        return error(cookie, ENOSPC, "request past the end of the export");
                    }
                    if (r.type() == CMD_TRIM) {
                        exportIo.trim(offset, length, r.has(CMD_FLAG_FUA));
                    } else {
                        exportIo.writeZeroes(offset, length, !r.has(CMD_FLAG_NO_HOLE), r.has(CMD_FLAG_FUA),
                                r.has(CMD_FLAG_FAST_ZERO));
                    }
                    return done(cookie);
                }
                case CMD_FLUSH -> {
                    exportIo.flush();
                    return done(cookie);
                }
                case CMD_CACHE -> {
                    return done(cookie);
                }
                case CMD_BLOCK_STATUS -> {
                    // QEMU's checks, in its order (nbd_co_receive_request, then nbd_handle_request).
                    if (!inRange) {
                        return error(cookie, EINVAL, "operation past EOF; From: " + Long.toUnsignedString(offset)
                                + ", Len: " + length + ", Size: " + size);
                    }
                    if ((r.flags() & ~(CMD_FLAG_FUA | CMD_FLAG_REQ_ONE)) != 0) {
                        return error(cookie, EINVAL, String.format("unsupported flags for command block status (got 0x%x)",
                                r.flags()));
                    }
                    if (length == 0) {
                        return error(cookie, EINVAL, "need non-zero length");
                    }
                    if (!structured || meta.count() == 0) {
                        return error(cookie, EINVAL, "CMD_BLOCK_STATUS not negotiated");
                    }
                    return blockStatus(ctx, cookie, offset, length, r.has(CMD_FLAG_REQ_ONE));
                }
                default -> {
                    return error(cookie, EINVAL, "unknown command " + r.type());
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
                disconnect(ctx);
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
