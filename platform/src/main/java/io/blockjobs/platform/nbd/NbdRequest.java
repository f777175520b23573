package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.CMD_WRITE;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;

/**
 * One transmission-phase request, as {@link NbdRequestDecoder} reads it and
 * {@link NbdRequestEncoder} writes it (the wire format is in their Javadoc).
 *
 * <p>Only {@code NBD_CMD_WRITE} carries data; the message is reference-counted through it and whoever
 * receives the request releases it once, after the data has been used.
 *
 * @param flags  {@code NBD_CMD_FLAG_*}, an unsigned 16-bit value
 * @param type   {@code NBD_CMD_*}, an unsigned 16-bit value
 * @param cookie chosen by the client and echoed in the reply (the protocol's "handle")
 * @param offset the byte offset in the export (an unsigned 64-bit value on the wire; one above
 *               {@link Long#MAX_VALUE} is negative here, and out of range for every export)
 * @param length an unsigned 32-bit value: the bytes to read, write, zero, trim or report on
 * @param data   for a write, exactly {@code length} bytes; for every other command
 *               {@link Unpooled#EMPTY_BUFFER} ({@code null} is taken for it)
 */
record NbdRequest(int flags, int type, long cookie, long offset, long length, ByteBuf data)
        implements NbdByteBufHolder {

    /** Checks the ranges and that data comes with writes and only with them. */
    NbdRequest {
        if (data == null) {
            data = Unpooled.EMPTY_BUFFER;
        }
        if ((flags & ~0xffff) != 0 || (type & ~0xffff) != 0) {
            throw new IllegalArgumentException("flags " + flags + " or type " + type + " do not fit 16 bits");
        }
        if (length < 0 || length > 0xffffffffL) {
            throw new IllegalArgumentException("length " + length + " does not fit 32 bits");
        }
        if (type == CMD_WRITE ? data.readableBytes() != length : data.isReadable()) {
            throw new IllegalArgumentException("a request of type " + type + " and length " + length
                    + " cannot carry " + data.readableBytes() + " bytes of data");
        }
    }

    /** A request without data (any command but a write). */
    NbdRequest(int flags, int type, long cookie, long offset, long length) {
        this(flags, type, cookie, offset, length, Unpooled.EMPTY_BUFFER);
    }

    /** A write of {@code data}'s readable bytes, which the request then owns. */
    static NbdRequest write(int flags, long cookie, long offset, ByteBuf data) {
        return new NbdRequest(flags, CMD_WRITE, cookie, offset, data.readableBytes(), data);
    }

    /** Whether {@code flag} (an {@code NBD_CMD_FLAG_*}) is set. */
    boolean has(int flag) {
        return (flags & flag) != 0;
    }

    @Override
    public NbdRequest replace(ByteBuf content) {
        return new NbdRequest(flags, type, cookie, offset, length, content);
    }
}
