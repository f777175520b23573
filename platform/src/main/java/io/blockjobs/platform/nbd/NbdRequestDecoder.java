package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.CMD_WRITE;
import static io.blockjobs.platform.nbd.Nbd.REQUEST_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.util.List;

/**
 * Decodes transmission-phase requests (the server's side; {@link NbdRequestEncoder} is the inverse)
 * into {@link NbdRequest}s. Every field is big-endian:
 *
 * <pre>
 * offset size field
 *      0    4 magic   0x25609513 (NBD_REQUEST_MAGIC)
 *      4    2 flags   NBD_CMD_FLAG_*: FUA 0x1, NO_HOLE 0x2, DF 0x4, REQ_ONE 0x8, FAST_ZERO 0x10
 *      6    2 type    NBD_CMD_*: READ 0, WRITE 1, DISC 2, FLUSH 3, TRIM 4, CACHE 5,
 *                     WRITE_ZEROES 6, BLOCK_STATUS 7
 *      8    8 cookie  echoed in the reply
 *     16    8 offset
 *     24    4 length
 *     28    * data    length bytes, for NBD_CMD_WRITE only
 * </pre>
 *
 * <p>For example a read of 4 KiB at 1 MiB, cookie 7 (28 bytes, no data):
 *
 * <pre>
 * 25 60 95 13 | 00 00 | 00 00 | 00 00 00 00 00 00 00 07 | 00 00 00 00 00 10 00 00 | 00 00 10 00
 * </pre>
 *
 * <p>A write's data is received into an {@link AlignedPayload} as its bytes come (one copy, out of
 * the socket's buffers; none of the received bytes pile up here), so that a file opened with
 * {@code cache.direct=on} writes it with no bounce copy; the request owns it. A write longer than
 * {@link #ALIGNED_UPFRONT} is copied into one once it has all come. A
 * write longer than {@code maxPayload} is never buffered: the decoder fails with an
 * {@link NbdRequestTooLargeException} (which names the cookie, so the handler can answer it) as
 * soon as the header is in, and so does a bad magic with a {@link CorruptedFrameException}. Either
 * way the stream cannot be resynchronised, and the decoder discards every later byte.
 */
final class NbdRequestDecoder extends ByteToMessageDecoder {
    /** Length of the fixed part. */
    static final int HEADER = 28;
    /**
     * The longest write whose payload buffer is taken when its header arrives (a mirror's and
     * qemu-img's writes are at most this); a longer one's is taken once all its bytes are in, so
     * a client that sends headers and stalls holds at most this much per connection.
     */
    static final int ALIGNED_UPFRONT = 2 << 20;

    private final int maxPayload;
    private boolean failed;
    /** The payload being received, an {@link AlignedPayload} filling up, or null; then the write's header. */
    private ByteBuf receiving;
    private int writeFlags;
    private long writeCookie;
    private long writeOffset;

    /** @param maxPayload the longest write accepted, in bytes */
    NbdRequestDecoder(int maxPayload) {
        this.maxPayload = maxPayload;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (failed) {
            in.skipBytes(in.readableBytes());
            return;
        }
        if (receiving != null) {
            receive(in, out);
            return;
        }
        if (in.readableBytes() < HEADER) {
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
            fail(in);
            throw new CorruptedFrameException(String.format("bad request magic 0x%08x", magic));
        }
        ByteBuf data = Unpooled.EMPTY_BUFFER;
        if (type == CMD_WRITE) {
            if (length > maxPayload) {
                fail(in);
                throw new NbdRequestTooLargeException(type, cookie, length, maxPayload);
            }
            if (length > ALIGNED_UPFRONT && in.readableBytes() < HEADER + length) {
                return; // a long write's buffer is taken once its bytes are in, not on the word of its header
            }
            in.skipBytes(HEADER);
            receiving = length == 0 ? Unpooled.EMPTY_BUFFER : AlignedPayload.of((int) length);
            writeFlags = flags;
            writeCookie = cookie;
            writeOffset = offset;
            receive(in, out);
            return;
        }
        in.skipBytes(HEADER);
        out.add(new NbdRequest(flags, type, cookie, offset, length, data));
    }

    /** Copies what has come of the payload being received; passes the write on once it is whole. */
    private void receive(ByteBuf in, List<Object> out) {
        ByteBuf data = receiving;
        data.writeBytes(in, Math.min(in.readableBytes(), data.writableBytes()));
        if (!data.isWritable()) {
            receiving = null;
            out.add(new NbdRequest(writeFlags, CMD_WRITE, writeCookie, writeOffset, data.readableBytes(), data));
        }
    }

    @Override
    protected void handlerRemoved0(ChannelHandlerContext ctx) {
        if (receiving != null) { // the connection ended in the middle of a write
            receiving.release();
            receiving = null;
        }
    }

    private void fail(ByteBuf in) {
        failed = true;
        in.skipBytes(in.readableBytes());
    }

    /** Bytes held for an incomplete request (for tests: never more than one request's worth). */
    int buffered() {
        return actualReadableBytes() + (receiving != null ? receiving.readableBytes() : 0);
    }
}
