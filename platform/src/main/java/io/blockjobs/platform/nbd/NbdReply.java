package io.blockjobs.platform.nbd;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;

/**
 * A transmission-phase reply, as {@link NbdReplyEncoder} writes it and {@link NbdReplyDecoder}
 * reads it (the wire format is in their Javadoc): a simple reply, or one chunk of a structured
 * reply. The server sends chunks only after {@code NBD_OPT_STRUCTURED_REPLY} was acknowledged; every
 * reply it sends is a single chunk with {@link Chunk#done()} set.
 *
 * <p>The replies that carry data ({@link SimpleReply}, {@link OffsetDataChunk}) are reference-counted
 * through it; whoever receives one releases it once ({@link io.netty.util.ReferenceCountUtil#release}
 * does the right thing for every reply).
 */
sealed interface NbdReply {

    /** The cookie of the request this answers. */
    long cookie();

    /**
     * {@code NBD_SIMPLE_REPLY}: an errno, and for a successful read the data.
     *
     * @param error 0 or an NBD errno ({@code Nbd.EIO}...)
     * @param data  the data of a successful read; {@link Unpooled#EMPTY_BUFFER} otherwise
     */
    record SimpleReply(long cookie, int error, ByteBuf data) implements NbdReply, NbdByteBufHolder {
        public SimpleReply {
            if (data == null) {
                data = Unpooled.EMPTY_BUFFER;
            }
            if (error != 0 && data.isReadable()) {
                throw new IllegalArgumentException("an error reply carries no data");
            }
        }

        /** A reply without data: success ({@code error == 0}) or an error. */
        public SimpleReply(long cookie, int error) {
            this(cookie, error, Unpooled.EMPTY_BUFFER);
        }

        @Override
        public SimpleReply replace(ByteBuf content) {
            return new SimpleReply(cookie, error, content);
        }
    }

    /** One chunk of a structured reply. */
    sealed interface Chunk extends NbdReply {
        /** Whether this is the last chunk for its cookie ({@code NBD_REPLY_FLAG_DONE}). */
        boolean done();
    }

    /** {@code NBD_REPLY_TYPE_OFFSET_DATA}: {@code data} read at {@code offset}. */
    record OffsetDataChunk(long cookie, boolean done, long offset, ByteBuf data)
            implements Chunk, NbdByteBufHolder {
        public OffsetDataChunk {
            if (data == null) {
                data = Unpooled.EMPTY_BUFFER;
            }
        }

        @Override
        public OffsetDataChunk replace(ByteBuf content) {
            return new OffsetDataChunk(cookie, done, offset, content);
        }
    }

    /** {@code NBD_REPLY_TYPE_OFFSET_HOLE}: {@code length} bytes at {@code offset} read as zeroes. */
    record OffsetHoleChunk(long cookie, boolean done, long offset, long length) implements Chunk {
        public OffsetHoleChunk {
            if (length < 1 || length > 0xffffffffL) {
                throw new IllegalArgumentException("hole length " + length + " is not a positive 32-bit value");
            }
        }
    }

    /**
     * {@code NBD_REPLY_TYPE_BLOCK_STATUS}: consecutive extents from the request's offset on, for
     * one meta context. An {@link ExtentArray} is taken as it is (the server gathers into one and
     * adds nothing after); any other list is copied.
     */
    record BlockStatusChunk(long cookie, boolean done, int contextId, List<Extent> extents) implements Chunk {
        public BlockStatusChunk {
            if (!(extents instanceof ExtentArray)) {
                extents = List.copyOf(extents);
            }
            if (extents.isEmpty()) {
                throw new IllegalArgumentException("a block status chunk needs at least one extent");
            }
        }
    }

    /**
     * One block status descriptor.
     *
     * @param length an unsigned 32-bit value, at least 1
     * @param flags  the meta context's flags; for {@code base:allocation} {@code Nbd.STATE_HOLE}
     *               and {@code Nbd.STATE_ZERO}
     */
    record Extent(long length, int flags) {
        public Extent {
            if (length < 1 || length > 0xffffffffL) {
                throw new IllegalArgumentException("extent length " + length + " is not a positive 32-bit value");
            }
        }
    }

    /**
     * {@code NBD_REPLY_TYPE_ERROR}: the request failed.
     *
     * @param errno   an NBD errno, not 0
     * @param message for people; the encoder sends at most its first 4096 UTF-8 bytes
     */
    record ErrorChunk(long cookie, boolean done, int errno, String message) implements Chunk {
        public ErrorChunk {
            if (errno == 0) {
                throw new IllegalArgumentException("an error chunk needs an errno");
            }
            if (message == null) {
                message = "";
            }
        }
    }

    /** {@code NBD_REPLY_TYPE_NONE}: success and nothing more to say; always the last chunk. */
    record NoneChunk(long cookie) implements Chunk {
        @Override
        public boolean done() {
            return true;
        }
    }
}
