package io.blockjobs.platform.nbd;

import io.blockjobs.platform.image.BounceBuffers;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.UnpooledByteBufAllocator;
import io.netty.buffer.UnpooledDirectByteBuf;
import java.nio.ByteBuffer;

/**
 * A write's payload, received into an aligned direct buffer from {@link BounceBuffers}: a file
 * opened with {@code cache.direct=on} writes it as it is, with no bounce copy. The buffer goes
 * back to {@link BounceBuffers} when the last reference is released.
 */
final class AlignedPayload extends UnpooledDirectByteBuf {
    private ByteBuffer aligned;

    private AlignedPayload(ByteBuffer aligned) {
        super(UnpooledByteBufAllocator.DEFAULT, aligned, aligned.capacity());
        this.aligned = aligned;
        writerIndex(0);
    }

    /** An empty buffer with room for exactly {@code length} bytes, aligned to {@link BounceBuffers#ALIGNMENT}. */
    static ByteBuf of(int length) {
        return new AlignedPayload(BounceBuffers.take(length, BounceBuffers.ALIGNMENT)); // its slice: capacity length
    }

    @Override
    protected void deallocate() {
        super.deallocate(); // frees nothing: the buffer was given, not allocated here
        ByteBuffer b = aligned;
        aligned = null;
        if (b != null) {
            BounceBuffers.give(b);
        }
    }
}
