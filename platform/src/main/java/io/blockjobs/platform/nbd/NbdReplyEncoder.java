package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.REPLY_FLAG_DONE;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_BLOCK_STATUS;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_ERROR;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_NONE;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_OFFSET_DATA;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_OFFSET_HOLE;
import static io.blockjobs.platform.nbd.Nbd.SIMPLE_REPLY_MAGIC;
import static io.blockjobs.platform.nbd.Nbd.STRUCTURED_REPLY_MAGIC;

import io.blockjobs.platform.nbd.NbdReply.BlockStatusChunk;
import io.blockjobs.platform.nbd.NbdReply.Chunk;
import io.blockjobs.platform.nbd.NbdReply.ErrorChunk;
import io.blockjobs.platform.nbd.NbdReply.Extent;
import io.blockjobs.platform.nbd.NbdReply.NoneChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetDataChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetHoleChunk;
import io.blockjobs.platform.nbd.NbdReply.SimpleReply;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.MessageToMessageEncoder;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Encodes {@link NbdReply}s (the server's side; {@link NbdReplyDecoder} is the inverse). Every field
 * is big-endian. A simple reply:
 *
 * <pre>
 * offset size field
 *      0    4 magic   0x67446698 (NBD_SIMPLE_REPLY_MAGIC)
 *      4    4 error   0, or an NBD errno: EPERM 1, EIO 5, ENOMEM 12, EINVAL 22, ENOSPC 28,
 *                     EOVERFLOW 75, ENOTSUP 95, ESHUTDOWN 108
 *      8    8 cookie  the request's
 *     16    * data    for a successful read only: the request's length in bytes
 * </pre>
 *
 * <p>A structured reply chunk:
 *
 * <pre>
 * offset size field
 *      0    4 magic   0x668e33ef (NBD_STRUCTURED_REPLY_MAGIC)
 *      4    2 flags   NBD_REPLY_FLAG_DONE 0x1 on the cookie's last chunk
 *      6    2 type    NBD_REPLY_TYPE_*, below
 *      8    8 cookie  the request's
 *     16    4 length  of the payload
 *     20    * payload, by type:
 *                     NONE 0          nothing (length 0)
 *                     OFFSET_DATA 1   u64 offset, then length - 8 bytes of data
 *                     OFFSET_HOLE 2   u64 offset, u32 hole length (length 12)
 *                     BLOCK_STATUS 5  u32 meta context id, then per extent u32 length, u32 flags
 *                                     (length 4 + 8 * extents)
 *                     ERROR 0x8001    u32 errno, u16 message length m, m bytes of UTF-8 (length 6 + m)
 * </pre>
 *
 * <p>For example the last (and only) chunk answering a 4-byte read at 512, cookie 7:
 *
 * <pre>
 * 66 8e 33 ef | 00 01 | 00 01 | 00 00 00 00 00 00 00 07 | 00 00 00 0c | 00 00 00 00 00 00 02 00 | de ad be ef
 * </pre>
 *
 * <p>Read data is passed on as it is (retained, not copied) after a header of its own. An error
 * message is cut to its first 4096 UTF-8 bytes (at a character boundary), as QEMU's.
 */
final class NbdReplyEncoder extends MessageToMessageEncoder<NbdReply> {
    /** Longest error message sent, in bytes (QEMU's NBD_MAX_STRING_SIZE). */
    static final int MAX_MESSAGE = 4096;

    NbdReplyEncoder() {
        super(NbdReply.class);
    }

    @Override
    protected void encode(ChannelHandlerContext ctx, NbdReply reply, List<Object> out) {
        ByteBufAllocator alloc = ctx.alloc();
        switch (reply) {
            case SimpleReply r -> {
                out.add(alloc.buffer(16).writeInt(SIMPLE_REPLY_MAGIC).writeInt(r.error()).writeLong(r.cookie()));
                if (r.data().isReadable()) {
                    out.add(r.data().retain());
                }
            }
            case OffsetDataChunk c -> {
                out.add(header(alloc, c, REPLY_TYPE_OFFSET_DATA, 8 + c.data().readableBytes(), 8).writeLong(c.offset()));
                if (c.data().isReadable()) {
                    out.add(c.data().retain());
                }
            }
            case OffsetHoleChunk c -> out.add(header(alloc, c, REPLY_TYPE_OFFSET_HOLE, 12, 12)
                    .writeLong(c.offset()).writeInt((int) c.length()));
            case BlockStatusChunk c -> {
                int length = 4 + 8 * c.extents().size();
                ByteBuf b = header(alloc, c, REPLY_TYPE_BLOCK_STATUS, length, length).writeInt(c.contextId());
                if (c.extents() instanceof ExtentArray a) { // no Extent per extent
                    for (int i = 0; i < a.size(); i++) {
                        b.writeInt((int) a.length(i)).writeInt(a.flags(i));
                    }
                } else {
                    for (Extent e : c.extents()) {
                        b.writeInt((int) e.length()).writeInt(e.flags());
                    }
                }
                out.add(b);
            }
            case ErrorChunk c -> {
                byte[] m = c.message().getBytes(StandardCharsets.UTF_8);
                int ml = Math.min(m.length, MAX_MESSAGE);
                while (ml < m.length && (m[ml] & 0xc0) == 0x80) {
                    ml--; // not inside a character
                }
                out.add(header(alloc, c, REPLY_TYPE_ERROR, 6 + ml, 6 + ml)
                        .writeInt(c.errno()).writeShort(ml).writeBytes(m, 0, ml));
            }
            case NoneChunk c -> out.add(header(alloc, c, REPLY_TYPE_NONE, 0, 0));
        }
    }

    /** A chunk's 20-byte header, in a buffer with room for {@code room} more bytes. */
    private static ByteBuf header(ByteBufAllocator alloc, Chunk c, int type, int length, int room) {
        return alloc.buffer(20 + room).writeInt(STRUCTURED_REPLY_MAGIC).writeShort(c.done() ? REPLY_FLAG_DONE : 0)
                .writeShort(type).writeLong(c.cookie()).writeInt(length);
    }
}
