package io.blockjobs.platform.nbd;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;

/**
 * One option request of the handshake, as {@link NbdOptionDecoder} reads it and
 * {@link NbdOptionEncoder} writes it. Reference-counted through its data; whoever receives it
 * releases it once.
 *
 * @param option {@code NBD_OPT_*}
 * @param data   the option's data ({@link Unpooled#EMPTY_BUFFER} for none; {@code null} is taken for it)
 */
record NbdOption(int option, ByteBuf data) implements NbdByteBufHolder {

    NbdOption {
        if (data == null) {
            data = Unpooled.EMPTY_BUFFER;
        }
    }

    @Override
    public NbdOption replace(ByteBuf content) {
        return new NbdOption(option, content);
    }
}
