package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.REPLY_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import java.util.List;

/**
 * Decodes option replies into {@link NbdOptionReply}s (the client's side of the handshake; the
 * inverse of {@link NbdOptionReplyEncoder}, whose Javadoc has the wire format). The server's
 * greeting comes before them and is not decoded here. A reply longer than {@code maxLength}
 * fails with a {@link TooLongFrameException}, a bad magic with a {@link CorruptedFrameException};
 * after either the decoder discards every later byte.
 */
final class NbdOptionReplyDecoder extends ByteToMessageDecoder {
    private final int maxLength;
    private boolean failed;

    NbdOptionReplyDecoder(int maxLength) {
        this.maxLength = maxLength;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (failed) {
            in.skipBytes(in.readableBytes());
            return;
        }
        if (in.readableBytes() < 20) {
            return;
        }
        int base = in.readerIndex();
        long magic = in.getLong(base);
        int option = in.getInt(base + 8);
        int type = in.getInt(base + 12);
        long length = in.getUnsignedInt(base + 16);
        if (magic != REPLY_MAGIC) {
            failed = true;
            in.skipBytes(in.readableBytes());
            throw new CorruptedFrameException(String.format("bad option reply magic 0x%016x", magic));
        }
        if (length > maxLength) {
            failed = true;
            in.skipBytes(in.readableBytes());
            throw new TooLongFrameException("option reply of " + length + " bytes is too long");
        }
        if (in.readableBytes() < 20 + length) {
            return;
        }
        in.skipBytes(20);
        out.add(new NbdOptionReply(option, type,
                length == 0 ? Unpooled.EMPTY_BUFFER : in.readRetainedSlice((int) length)));
    }
}
