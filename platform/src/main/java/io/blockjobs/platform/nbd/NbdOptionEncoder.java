package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.IHAVEOPT;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.MessageToByteEncoder;

/**
 * Encodes {@link NbdClientFlags} and {@link NbdOption}s (the client's side of the handshake; the
 * inverse of {@link NbdOptionDecoder}, whose Javadoc has the wire format). Other messages pass.
 */
final class NbdOptionEncoder extends MessageToByteEncoder<Object> {

    @Override
    public boolean acceptOutboundMessage(Object msg) {
        return msg instanceof NbdClientFlags || msg instanceof NbdOption;
    }

    @Override
    protected void encode(ChannelHandlerContext ctx, Object msg, ByteBuf out) {
        switch (msg) {
            case NbdClientFlags f -> out.writeInt(f.flags());
            case NbdOption o -> out.writeLong(IHAVEOPT).writeInt(o.option()).writeInt(o.data().readableBytes())
                    .writeBytes(o.data(), o.data().readerIndex(), o.data().readableBytes());
            default -> throw new IllegalArgumentException(msg.getClass().getName());
        }
    }
}
