package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.REPLY_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.MessageToByteEncoder;

/**
 * Encodes {@link NbdOptionReply}s (the server's side of the handshake; {@link NbdOptionReplyDecoder}
 * is the inverse). Every field is big-endian:
 *
 * <pre>
 * offset size field
 *      0    8 magic   0x0003e889045565a9
 *      8    4 option  the option answered
 *     12    4 type    NBD_REP_*: ACK 1, SERVER 2, INFO 3, META_CONTEXT 4; errors have bit 31 set:
 *                     ERR_UNSUP 0x80000001, ERR_POLICY 0x80000002, ERR_INVALID 0x80000003,
 *                     ERR_UNKNOWN 0x80000006
 *     16    4 length
 *     20    * data    by type: SERVER u32 name length n, n bytes of name, then a description to
 *                     the end; INFO u16 NBD_INFO_*, then its fields; META_CONTEXT u32 id, then the
 *                     name to the end; an error a message for people
 * </pre>
 *
 * <p>For example {@code NBD_REP_ACK} to {@code NBD_OPT_STRUCTURED_REPLY}:
 *
 * <pre>
 * 00 03 e8 89 04 55 65 a9 | 00 00 00 08 | 00 00 00 01 | 00 00 00 00
 * </pre>
 *
 * <p>Other messages (the greeting and the reply to {@code NBD_OPT_EXPORT_NAME}, written as
 * {@link ByteBuf}s by {@link NbdHandshakeHandler}) pass as they are.
 */
final class NbdOptionReplyEncoder extends MessageToByteEncoder<NbdOptionReply> {

    NbdOptionReplyEncoder() {
        super(NbdOptionReply.class);
    }

    @Override
    protected void encode(ChannelHandlerContext ctx, NbdOptionReply r, ByteBuf out) {
        ByteBuf data = r.data();
        out.writeLong(REPLY_MAGIC).writeInt(r.option()).writeInt(r.type()).writeInt(data.readableBytes())
                .writeBytes(data, data.readerIndex(), data.readableBytes());
    }
}
