package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.REQUEST_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.MessageToMessageEncoder;
import java.util.List;

/**
 * Encodes {@link NbdRequest}s (the client's side; the inverse of {@link NbdRequestDecoder}, whose
 * Javadoc has the wire format): a 28-byte header, then for a write its data, passed on as it is
 * (retained, not copied).
 */
final class NbdRequestEncoder extends MessageToMessageEncoder<NbdRequest> {

    NbdRequestEncoder() {
        super(NbdRequest.class);
    }

    @Override
    protected void encode(ChannelHandlerContext ctx, NbdRequest r, List<Object> out) {
        ByteBuf header = ctx.alloc().buffer(NbdRequestDecoder.HEADER);
        header.writeInt(REQUEST_MAGIC).writeShort(r.flags()).writeShort(r.type()).writeLong(r.cookie())
                .writeLong(r.offset()).writeInt((int) r.length());
        out.add(header);
        if (r.data().isReadable()) {
            out.add(r.data().retain());
        }
    }
}
