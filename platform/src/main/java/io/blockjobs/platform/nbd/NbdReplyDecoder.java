package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.REPLY_FLAG_DONE;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_BLOCK_STATUS;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_NONE;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_OFFSET_DATA;
import static io.blockjobs.platform.nbd.Nbd.REPLY_TYPE_OFFSET_HOLE;
import static io.blockjobs.platform.nbd.Nbd.SIMPLE_REPLY_MAGIC;
import static io.blockjobs.platform.nbd.Nbd.STRUCTURED_REPLY_MAGIC;

import io.blockjobs.platform.nbd.NbdReply.BlockStatusChunk;
import io.blockjobs.platform.nbd.NbdReply.ErrorChunk;
import io.blockjobs.platform.nbd.NbdReply.Extent;
import io.blockjobs.platform.nbd.NbdReply.NoneChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetDataChunk;
import io.blockjobs.platform.nbd.NbdReply.OffsetHoleChunk;
import io.blockjobs.platform.nbd.NbdReply.SimpleReply;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.util.ReferenceCountUtil;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongToIntFunction;

/**
 * Decodes transmission-phase replies (the client's side; the inverse of {@link NbdReplyEncoder},
 * whose Javadoc has the wire format) into {@link NbdReply}s.
 *
 * <p>A simple reply does not say how much data follows it: {@code readLength} answers, for a
 * cookie, how many bytes a successful reply to it carries (the length of a read, 0 for any other
 * request). It may be asked more than once for the same reply while its data arrives.
 *
 * <p>Data is a retained slice of the received bytes (no copy). A chunk longer than
 * {@code maxPayload + 8}, or a simple reply said to carry more than {@code maxPayload}, fails with
 * a {@link TooLongFrameException} before anything is buffered; a bad magic, or a chunk whose
 * payload does not fit its type, with a {@link CorruptedFrameException}. After either the decoder
 * discards every later byte. Chunks of an unknown type with the error bit (0x8000) set decode as
 * {@link ErrorChunk}s, as the protocol asks; other unknown types are corrupt.
 */
final class NbdReplyDecoder extends ByteToMessageDecoder {
    private final int maxPayload;
    private final LongToIntFunction readLength;
    private boolean failed;

    NbdReplyDecoder(int maxPayload, LongToIntFunction readLength) {
        this.maxPayload = maxPayload;
        this.readLength = readLength;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (failed) {
            in.skipBytes(in.readableBytes());
            return;
        }
        if (in.readableBytes() < 4) {
            return;
        }
        int base = in.readerIndex();
        int magic = in.getInt(base);
        if (magic == SIMPLE_REPLY_MAGIC) {
            if (in.readableBytes() < 16) {
                return;
            }
            int error = in.getInt(base + 4);
            long cookie = in.getLong(base + 8);
            int length = error == 0 ? readLength.applyAsInt(cookie) : 0;
            if (length < 0 || length > maxPayload) {
                fail(in);
                throw new TooLongFrameException("simple reply to cookie " + cookie + " with " + length + " bytes");
            }
            if (in.readableBytes() < 16 + length) {
                return;
            }
            in.skipBytes(16);
            out.add(new SimpleReply(cookie, error, length == 0 ? Unpooled.EMPTY_BUFFER : in.readRetainedSlice(length)));
        } else if (magic == STRUCTURED_REPLY_MAGIC) {
            if (in.readableBytes() < 20) {
                return;
            }
            int flags = in.getUnsignedShort(base + 4);
            int type = in.getUnsignedShort(base + 6);
            long cookie = in.getLong(base + 8);
            long length = in.getUnsignedInt(base + 16);
            if (length > maxPayload + 8L) {
                fail(in);
                throw new TooLongFrameException("reply chunk of " + length + " bytes");
            }
            if (in.readableBytes() < 20 + length) {
                return;
            }
            in.skipBytes(20);
            ByteBuf payload = in.readSlice((int) length);
            try {
                out.add(chunk((flags & REPLY_FLAG_DONE) != 0, type, cookie, payload));
            } catch (IndexOutOfBoundsException | IllegalArgumentException e) {
                fail(in);
                throw new CorruptedFrameException("malformed reply chunk of type " + type + ": " + e.getMessage());
            }
        } else {
            fail(in);
            throw new CorruptedFrameException(String.format("bad reply magic 0x%08x", magic));
        }
    }

    private static NbdReply chunk(boolean done, int type, long cookie, ByteBuf p) {
        NbdReply chunk = switch (type) {
            case REPLY_TYPE_NONE -> {
                if (!done) {
                    throw new IllegalArgumentException("NONE without DONE");
                }
                yield new NoneChunk(cookie);
            }
            case REPLY_TYPE_OFFSET_DATA -> {
                long offset = p.readLong();
                if (!p.isReadable()) {
                    throw new IllegalArgumentException("no data");
                }
                yield new OffsetDataChunk(cookie, done, offset, p.readRetainedSlice(p.readableBytes()));
            }
            case REPLY_TYPE_OFFSET_HOLE -> new OffsetHoleChunk(cookie, done, p.readLong(), p.readUnsignedInt());
            case REPLY_TYPE_BLOCK_STATUS -> {
                int id = p.readInt();
                if (p.readableBytes() % 8 != 0) {
                    throw new IllegalArgumentException("extents of " + p.readableBytes() + " bytes");
                }
                List<Extent> extents = new ArrayList<>(p.readableBytes() / 8);
                while (p.isReadable()) {
                    extents.add(new Extent(p.readUnsignedInt(), p.readInt()));
                }
                yield new BlockStatusChunk(cookie, done, id, extents);
            }
            default -> {
                if ((type & 0x8000) == 0) {
                    throw new IllegalArgumentException("unknown type");
                }
                int errno = p.readInt();
                int ml = p.readUnsignedShort();
                String message = p.readCharSequence(ml, StandardCharsets.UTF_8).toString();
                p.skipBytes(p.readableBytes()); // NBD_REPLY_TYPE_ERROR_OFFSET's offset, or a later type's fields
                yield new ErrorChunk(cookie, done, errno, message);
            }
        };
        if (p.isReadable()) {
            ReferenceCountUtil.release(chunk);
            throw new IllegalArgumentException(p.readableBytes() + " bytes too many");
        }
        return chunk;
    }

    private void fail(ByteBuf in) {
        failed = true;
        in.skipBytes(in.readableBytes());
    }

    /** Bytes held for an incomplete reply (for tests). */
    int buffered() {
        return actualReadableBytes();
    }
}
