package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.IHAVEOPT;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import java.util.List;

/**
 * Decodes what a client sends during the fixed newstyle handshake (the server's side;
 * {@link NbdOptionEncoder} is the inverse): first its flags, once, as {@link NbdClientFlags}, then
 * option requests as {@link NbdOption}s. Every field is big-endian:
 *
 * <pre>
 * client flags, once:
 * offset size field
 *      0    4 flags   NBD_FLAG_C_FIXED_NEWSTYLE 0x1, NBD_FLAG_C_NO_ZEROES 0x2
 *
 * each option request:
 * offset size field
 *      0    8 magic   0x49484156454f5054 ("IHAVEOPT")
 *      8    4 option  NBD_OPT_*: EXPORT_NAME 1, ABORT 2, LIST 3, STARTTLS 5, INFO 6, GO 7,
 *                     STRUCTURED_REPLY 8, LIST_META_CONTEXT 9, SET_META_CONTEXT 10
 *     12    4 length
 *     16    * data    length bytes; for INFO and GO: u32 name length n, n bytes of name,
 *                     u16 count c, c times u16 NBD_INFO_*
 * </pre>
 *
 * <p>For example {@code NBD_OPT_GO} for the export {@code top}, asking no information:
 *
 * <pre>
 * 49 48 41 56 45 4f 50 54 | 00 00 00 07 | 00 00 00 09 | 00 00 00 03 74 6f 70 00 00
 * </pre>
 *
 * <p>An option's data is a retained slice of the received bytes. An option longer than
 * {@code maxLength} fails with a {@link TooLongFrameException} before anything is buffered, a bad
 * magic with a {@link CorruptedFrameException}; after either the decoder discards every later
 * byte. When the handshake ends, the handler replaces this decoder with an
 * {@link NbdRequestDecoder}, to which the bytes still held here pass on.
 */
final class NbdOptionDecoder extends ByteToMessageDecoder {
    private final int maxLength;
    private boolean flagsRead;
    private boolean failed;

    NbdOptionDecoder(int maxLength) {
        this.maxLength = maxLength;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (failed) {
            in.skipBytes(in.readableBytes());
            return;
        }
        if (!flagsRead) {
            if (in.readableBytes() >= 4) {
                flagsRead = true;
                out.add(new NbdClientFlags(in.readInt()));
            }
            return;
        }
        if (in.readableBytes() < 16) {
            return;
        }
        int base = in.readerIndex();
        long magic = in.getLong(base);
        int option = in.getInt(base + 8);
        long length = in.getUnsignedInt(base + 12);
        if (magic != IHAVEOPT) {
            fail(in);
            throw new CorruptedFrameException(String.format("bad option magic 0x%016x", magic));
        }
        if (length > maxLength) {
            fail(in);
            throw new TooLongFrameException("option " + option + " of " + length + " bytes is too long");
        }
        if (in.readableBytes() < 16 + length) {
            return;
        }
        in.skipBytes(16);
        out.add(new NbdOption(option, length == 0 ? Unpooled.EMPTY_BUFFER : in.readRetainedSlice((int) length)));
    }

    private void fail(ByteBuf in) {
        failed = true;
        in.skipBytes(in.readableBytes());
    }

    /** Bytes held for an incomplete option (for tests). */
    int buffered() {
        return actualReadableBytes();
    }
}
