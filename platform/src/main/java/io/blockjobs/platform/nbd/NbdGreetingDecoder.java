package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.IHAVEOPT;
import static io.blockjobs.platform.nbd.Nbd.NBDMAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.util.List;

/**
 * Decodes the server's greeting (the client's side; {@link NbdHandshakeHandler} writes it, and its
 * Javadoc has the wire format: "NBDMAGIC", "IHAVEOPT", 16 bits of {@code NBD_FLAG_*}) into an
 * {@link NbdGreeting}, once, then leaves the pipeline; the bytes after it pass on to the
 * {@link NbdOptionReplyDecoder} behind it. An oldstyle server (no "IHAVEOPT") or another magic
 * fails with a {@link CorruptedFrameException}.
 */
final class NbdGreetingDecoder extends ByteToMessageDecoder {
    /** Length of the greeting. */
    static final int LENGTH = 18;

    NbdGreetingDecoder() {
        setSingleDecode(true);
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (in.readableBytes() < LENGTH) {
            return;
        }
        long magic = in.readLong();
        long option = in.readLong();
        int flags = in.readUnsignedShort();
        if (magic != NBDMAGIC) {
            throw new CorruptedFrameException("Bad initial magic received: 0x" + Long.toHexString(magic));
        }
        if (option != IHAVEOPT) {
            throw new CorruptedFrameException("Server is not a newstyle NBD server");
        }
        out.add(new NbdGreeting(flags));
        ctx.pipeline().remove(this);
    }

    /**
     * The server's handshake flags.
     *
     * @param flags {@code NBD_FLAG_FIXED_NEWSTYLE}, {@code NBD_FLAG_NO_ZEROES}
     */
    record NbdGreeting(int flags) {
        boolean has(int flag) {
            return (flags & flag) != 0;
        }
    }
}
