package io.blockjobs.platform.nbd;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufHolder;

/**
 * A wire message that carries a payload. Its reference count is its payload's, so Netty's codecs,
 * {@link io.netty.util.ReferenceCountUtil} and {@code EmbeddedChannel.finishAndReleaseAll} release
 * it as they release a {@link ByteBuf}. A message without payload holds
 * {@link io.netty.buffer.Unpooled#EMPTY_BUFFER}, whose release does nothing.
 *
 * <p>Whoever receives such a message owns one reference and must release it once.
 */
interface NbdByteBufHolder extends ByteBufHolder {

    /** The payload; the same as {@link #content()}. */
    ByteBuf data();

    @Override
    default ByteBuf content() {
        return data();
    }

    /** The same message with another payload (which the new message then owns). */
    @Override
    NbdByteBufHolder replace(ByteBuf content);

    @Override
    default NbdByteBufHolder copy() {
        return replace(data().copy());
    }

    @Override
    default NbdByteBufHolder duplicate() {
        return replace(data().duplicate());
    }

    @Override
    default NbdByteBufHolder retainedDuplicate() {
        return replace(data().retainedDuplicate());
    }

    @Override
    default int refCnt() {
        return data().refCnt();
    }

    @Override
    default NbdByteBufHolder retain() {
        data().retain();
        return this;
    }

    @Override
    default NbdByteBufHolder retain(int increment) {
        data().retain(increment);
        return this;
    }

    @Override
    default NbdByteBufHolder touch() {
        data().touch();
        return this;
    }

    @Override
    default NbdByteBufHolder touch(Object hint) {
        data().touch(hint);
        return this;
    }

    @Override
    default boolean release() {
        return data().release();
    }

    @Override
    default boolean release(int decrement) {
        return data().release(decrement);
    }
}
