package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.CMD_BLOCK_STATUS;
import static io.blockjobs.platform.nbd.Nbd.CMD_READ;
import static io.blockjobs.platform.nbd.Nbd.EINVAL;

import io.blockjobs.platform.nbd.NbdReply.BlockStatusChunk;
import io.blockjobs.platform.nbd.NbdReply.ErrorChunk;
import io.blockjobs.platform.nbd.NbdReply.NoneChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetDataChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetHoleChunk;
import io.blockjobs.platform.nbd.NbdReply.SimpleReply;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.DecoderException;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The transmission phase, the client's side: matches each reply ({@link NbdReplyDecoder}) to its
 * request by cookie, so that any number of requests are in flight on one connection, and
 * completes the request when its last chunk is in. Read data goes straight into the caller's
 * buffer; holes are zero-filled there. A reply the client cannot place (an unknown cookie, a
 * chunk outside its request, a chunk that does not fit the request's type) is a protocol error:
 * the connection is closed, as QEMU's client does, and every request in flight fails with
 * {@link ConnectionLostException}. Runs on the event loop.
 */
final class NbdClientTransmissionHandler extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = LoggerFactory.getLogger(NbdClientTransmissionHandler.class);

    private static final ByteBuffer ZEROES = ByteBuffer.allocate(64 * 1024).asReadOnlyBuffer();

    private final Map<Long, Pending> pending = new ConcurrentHashMap<>();
    private final int contextId;
    private final Runnable onClose;
    private volatile boolean closed;

    /**
     * @param contextId the meta context block status replies must report, or -1
     * @param onClose   run once when the connection is gone (after every pending request failed)
     */
    NbdClientTransmissionHandler(int contextId, Runnable onClose) {
        this.contextId = contextId;
        this.onClose = onClose;
    }

    /**
     * A request awaiting its reply.
     *
     * @param type   {@code NBD_CMD_*}
     * @param offset where it starts
     * @param length its length
     * @param dst    for a read, where the data goes ({@code length} bytes from its position,
     *               which does not move); null otherwise
     */
    record Pending(int type, long offset, long length, ByteBuffer dst, CompletableFuture<Result> done,
                   Result.Builder result) {
        Pending(int type, long offset, long length, ByteBuffer dst) {
            this(type, offset, length, dst, new CompletableFuture<>(), new Result.Builder());
        }
    }

    /**
     * How a request ended.
     *
     * @param errno   0, or the server's NBD errno
     * @param message the server's message for an error chunk, or ""
     * @param extent  for block status, the first extent (null if none came)
     */
    record Result(int errno, String message, NbdReply.Extent extent) {
        static final class Builder {
            int errno;
            String message = "";
            NbdReply.Extent extent;

            Result build() {
                return new Result(errno, message, extent);
            }
        }
    }

    /** The request ended: the connection is gone before its reply came. */
    static final class ConnectionLostException extends IOException {
        private static final long serialVersionUID = 1L;

        ConnectionLostException(String message) {
            super(message);
        }
    }

    /**
     * Registers a request before it is sent; fails it at once if the connection is already gone.
     */
    void register(long cookie, Pending p) {
        pending.put(cookie, p);
        if (closed && pending.remove(cookie) != null) {
            p.done().completeExceptionally(new ConnectionLostException("Connection closed"));
        }
    }

    /** Forgets a request that could not be sent. */
    Pending unregister(long cookie) {
        return pending.remove(cookie);
    }

    /** Bytes a successful simple reply to {@code cookie} carries (for {@link NbdReplyDecoder}). */
    int readLength(long cookie) {
        Pending p = pending.get(cookie);
        return p != null && p.type() == CMD_READ ? (int) p.length() : 0;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        try {
            NbdReply reply = (NbdReply) msg;
            Pending p = pending.get(reply.cookie());
            if (p == null) {
                throw new ProtocolException("reply to cookie " + reply.cookie() + ", which is not in flight");
            }
            boolean done = switch (reply) {
                case SimpleReply r -> {
                    if (r.error() != 0) {
                        p.result().errno = r.error();
                    } else if (p.type() == CMD_READ) {
                        copy(p, 0, r.data());
                    }
                    yield true;
                }
                case OffsetDataChunk c -> {
                    if (p.type() != CMD_READ) {
                        throw new ProtocolException("Unexpected NBD_REPLY_TYPE_OFFSET_DATA chunk");
                    }
                    copy(p, c.offset() - p.offset(), c.data());
                    yield c.done();
                }
                case OffsetHoleChunk c -> {
                    if (p.type() != CMD_READ) {
                        throw new ProtocolException("Unexpected NBD_REPLY_TYPE_OFFSET_HOLE chunk");
                    }
                    long at = c.offset() - p.offset();
                    check(p, at, c.length());
                    ByteBuffer hole = p.dst().slice(p.dst().position() + (int) at, (int) c.length());
                    while (hole.hasRemaining()) {
                        hole.put(ZEROES.duplicate().limit(Math.min(ZEROES.capacity(), hole.remaining())));
                    }
                    yield c.done();
                }
                case BlockStatusChunk c -> {
                    if (p.type() != CMD_BLOCK_STATUS) {
                        throw new ProtocolException("Unexpected NBD_REPLY_TYPE_BLOCK_STATUS chunk");
                    }
                    if (c.contextId() != contextId) {
                        throw new ProtocolException("Protocol error: unexpected context id " + c.contextId()
                                + " for NBD_REPLY_TYPE_BLOCK_STATUS, negotiated context id is " + contextId);
                    }
                    if (p.result().extent == null) {
                        p.result().extent = c.extents().get(0);
                    }
                    yield c.done();
                }
                case ErrorChunk c -> {
                    if (p.result().errno == 0) {
                        p.result().errno = c.errno();
                        p.result().message = c.message();
                    }
                    yield c.done();
                }
                case NoneChunk c -> true;
            };
            if (done && pending.remove(reply.cookie()) != null) {
                p.done().complete(p.result().build());
            }
        } catch (ProtocolException e) {
            LOG.warn("NBD server {}: {}; closing the connection", ctx.channel().remoteAddress(), e.getMessage());
            ctx.close();
        } finally {
            ReferenceCountUtil.release(msg);
        }
    }

    private static void check(Pending p, long at, long length) throws ProtocolException {
        if (at < 0 || length < 0 || at + length > p.length()) {
            throw new ProtocolException("Protocol error: server sent chunk exceeding requested region");
        }
    }

    private static void copy(Pending p, long at, ByteBuf data) throws ProtocolException {
        check(p, at, data.readableBytes());
        ByteBuffer d = p.dst();
        data.getBytes(data.readerIndex(), d.slice(d.position() + (int) at, data.readableBytes()));
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        Throwable c = cause instanceof DecoderException && cause.getCause() != null ? cause.getCause() : cause;
        LOG.warn("NBD server {}: {}; closing the connection", ctx.channel().remoteAddress(), c.toString());
        ctx.close();
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        closed = true;
        for (Long cookie : pending.keySet()) {
            Pending p = pending.remove(cookie);
            if (p != null) {
                p.done().completeExceptionally(new ConnectionLostException("Connection closed"));
            }
        }
        onClose.run();
        ctx.fireChannelInactive();
    }

    /** A reply the client cannot place. */
    private static final class ProtocolException extends Exception {
        private static final long serialVersionUID = 1L;

        ProtocolException(String message) {
            super(message, null, false, false);
        }
    }

    /** QEMU's {@code nbd_errno_to_system_errno}: an NBD errno this client does not know is EINVAL. */
    static io.blockjobs.sdk.block.Errno errno(int nbdErrno) {
        return switch (nbdErrno) {
            case Nbd.EPERM -> io.blockjobs.sdk.block.Errno.EPERM;
            case Nbd.EIO -> io.blockjobs.sdk.block.Errno.EIO;
            case Nbd.ENOMEM -> io.blockjobs.sdk.block.Errno.ENOMEM;
            case Nbd.ENOSPC -> io.blockjobs.sdk.block.Errno.ENOSPC;
            case Nbd.ENOTSUP -> io.blockjobs.sdk.block.Errno.ENOTSUP;
            case Nbd.ESHUTDOWN -> io.blockjobs.sdk.block.Errno.ESHUTDOWN;
            case EINVAL -> io.blockjobs.sdk.block.Errno.EINVAL;
            default -> io.blockjobs.sdk.block.Errno.EINVAL;
        };
    }
}
