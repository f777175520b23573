package io.blockjobs.platform.nbd;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.charset.StandardCharsets;

/**
 * One reply to an option request, as {@link NbdOptionReplyEncoder} writes it and
 * {@link NbdOptionReplyDecoder} reads it. Reference-counted through its data; whoever receives it
 * releases it once.
 *
 * @param option the option answered
 * @param type   {@code NBD_REP_*}; an error when bit 31 is set
 * @param data   the reply's data ({@link Unpooled#EMPTY_BUFFER} for none; {@code null} is taken for it)
 */
record NbdOptionReply(int option, int type, ByteBuf data) implements NbdByteBufHolder {

    NbdOptionReply {
        if (data == null) {
            data = Unpooled.EMPTY_BUFFER;
        }
    }

    /** {@code NBD_REP_ACK} to {@code option}. */
    static NbdOptionReply ack(int option) {
        return new NbdOptionReply(option, Nbd.REP_ACK, Unpooled.EMPTY_BUFFER);
    }

    /** An error reply ({@code NBD_REP_ERR_*}) whose data is a message for people. */
    static NbdOptionReply error(int option, int type, String message) {
        return new NbdOptionReply(option, type, Unpooled.copiedBuffer(message, StandardCharsets.UTF_8));
    }

    /** Whether this is an error reply. */
    boolean isError() {
        return type < 0;
    }

    @Override
    public NbdOptionReply replace(ByteBuf content) {
        return new NbdOptionReply(option, type, content);
    }
}
