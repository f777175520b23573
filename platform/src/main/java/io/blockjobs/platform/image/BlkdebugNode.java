package io.blockjobs.platform.image;

import io.blockjobs.platform.image.BlkdebugRules.IoType;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;

/**
 * QEMU's {@code blkdebug} filter ({@code block/blkdebug.c}): requests pass to the image beneath
 * unless an active {@code inject-error} rule fails them ({@link BlkdebugRules}), and the node
 * imposes the request limits it was given ({@code align}, {@code max-transfer},
 * {@code opt-write-zero}, ...). The graph pads and splits requests to {@link #limits()}; this
 * node splits write-zeroes and discards as QEMU's generic layer does for the limits the graph
 * does not know, so that rules see the pieces QEMU's blkdebug sees.
 *
 * <p>Which events reach the node is said in {@link DebugEvents}; {@code none} fires once, at
 * open. A failed request never reaches the image, and fails with a {@link BlockIoException}
 * carrying the rule's errno and {@code strerror}'s words for it.
 */
public final class BlkdebugNode implements DriverNode, DebugEvents {
    private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(1 << 20).asReadOnlyBuffer();

    /**
     * The node's settings as {@code blkdebug_open} validated them; 0 is "not set" for the
     * sizes.
     *
     * @param config           the config file, or null
     * @param align            request alignment, or 0 for the image's
     * @param maxTransfer      the largest read or write
     * @param optWriteZero     the alignment write-zeroes must have to reach the image; smaller
     *                         pieces become writes of zero buffers
     * @param maxWriteZero     the largest write-zeroes
     * @param optDiscard       the alignment discards are split at
     * @param maxDiscard       the largest discard
     * @param takeChildPerms   permissions taken on the image beyond what the node's users need
     * @param unshareChildPerms permissions not shared on the image beyond what they need
     */
    public record Settings(String config, int align, int maxTransfer, int optWriteZero, int maxWriteZero,
                           int optDiscard, int maxDiscard, Set<BlockPermission> takeChildPerms,
                           Set<BlockPermission> unshareChildPerms) {
        /** Copies the sets. */
        public Settings {
            takeChildPerms = Set.copyOf(takeChildPerms);
            unshareChildPerms = Set.copyOf(unshareChildPerms);
        }
    }

    private final BlockNode image;
    private final BlkdebugRules rules;
    private final Settings settings;
    private final Limits limits;

    /**
     * A node over {@code image}; fires {@code none}.
     *
     * @param imageAlignment the image's request alignment, which this node has unless
     *                       {@code align} says otherwise
     */
    public BlkdebugNode(BlockNode image, BlkdebugRules rules, Settings settings, int imageAlignment) {
        this.image = image;
        this.rules = rules;
        this.settings = settings;
        int align = settings.align() != 0 ? settings.align() : imageAlignment;
        this.limits = new Limits(align, settings.maxTransfer(), image.clusterSize());
        rules.event(BlkdebugEvent.NONE);
    }

    /** The rules and the state they are in. */
    public BlkdebugRules rules() {
        return rules;
    }

    public Settings settings() {
        return settings;
    }

    @Override
    public void debugEvent(BlkdebugEvent event) {
        rules.event(event);
    }

    private void check(IoType type, long offset, long bytes) throws BlockIoException {
        int errno = rules.check(offset, bytes, type);
        if (errno > 0) {
            throw new BlockIoException(Errno.ofCode(errno), Strerror.of(errno));
        }
    }

    @Override
    public Limits limits() {
        return limits;
    }

    @Override
    public String driver() {
        return "blkdebug";
    }

    @Override
    public Optional<String> filteredChild() {
        return Optional.of("image");
    }

    @Override
    public String filename() {
        return image.filename();
    }

    @Override
    public long size() throws IOException {
        return image.size();
    }

    @Override
    public boolean isReadOnly() {
        return image.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return image.clusterSize();
    }

    @Override
    public Optional<BlockNode> backing() {
        return image.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        check(IoType.READ, offset, dst.remaining());
        image.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        check(IoType.WRITE, offset, src.remaining());
        image.write(offset, src, flags);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    /**
     * QEMU's {@code bdrv_co_do_pwrite_zeroes} over blkdebug: the range is cut at
     * {@code opt-write-zero} boundaries and at {@code max-write-zero}; pieces smaller than the
     * alignment are refused by blkdebug and written as zero buffers instead (a {@code write}
     * for the rules), unless the request allows no fallback.
     */
    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        long align = Math.max(limits.requestAlignment(), settings.optWriteZero());
        long maxZeroes = settings.maxWriteZero() == 0 ? Long.MAX_VALUE : settings.maxWriteZero();
        maxZeroes = Math.max(align, maxZeroes - maxZeroes % align);
        long maxTransfer = limits.maxTransfer() == 0 ? Integer.MAX_VALUE : limits.maxTransfer();
        long head = offset % align;
        long tail = (offset + length) % align;
        long pos = offset;
        long left = length;
        while (left > 0) {
            long num = left;
            if (head != 0) {
                num = Math.min(Math.min(left, maxTransfer), align - head);
                head = (head + num) % align;
            } else if (tail != 0 && num > align) {
                num -= tail;
            }
            num = Math.min(num, maxZeroes);
            if (num < align) {
                if (flags.contains(RequestFlag.NO_FALLBACK)) {
                    throw new BlockIoException(Errno.ENOTSUP, Errno.ENOTSUP.message());
                }
                writeZeroBuffer(pos, num, flags.contains(RequestFlag.FUA));
            } else {
                check(IoType.WRITE_ZEROES, pos, num);
                image.writeZeroes(pos, num, flags);
            }
            pos += num;
            left -= num;
        }
    }

    private void writeZeroBuffer(long offset, long length, boolean fua) throws IOException {
        Set<RequestFlag> f = fua ? Set.of(RequestFlag.FUA) : RequestFlag.NONE;
        long max = limits.maxTransfer() == 0 ? ZEROES.capacity() : Math.min(ZEROES.capacity(), limits.maxTransfer());
        for (long pos = offset; pos < offset + length; ) {
            int n = (int) Math.min(max, offset + length - pos);
            write(pos, ZEROES.duplicate().limit(n), f);
            pos += n;
        }
    }

    /**
     * QEMU's {@code bdrv_co_pdiscard} over blkdebug: the range is cut at {@code opt-discard}
     * boundaries and at {@code max-discard}; pieces smaller than the request alignment are
     * dropped (blkdebug refuses them, and the block layer ignores that).
     */
    @Override
    public void discard(long offset, long length) throws IOException {
        long reqAlign = limits.requestAlignment();
        long align = Math.max(reqAlign, settings.optDiscard());
        long maxDiscard = settings.maxDiscard() == 0 ? Long.MAX_VALUE : settings.maxDiscard();
        maxDiscard = Math.max(align, maxDiscard - maxDiscard % align);
        long head = offset % align;
        long tail = (offset + length) % align;
        long pos = offset;
        long left = length;
        while (left > 0) {
            long num = left;
            if (head != 0) {
                num = Math.min(left, align - head);
                if (num % reqAlign != 0) {
                    num %= reqAlign;
                }
                head = (head + num) % align;
            } else if (tail != 0) {
                if (num > align) {
                    num -= tail;
                } else if (tail % reqAlign != 0 && tail > reqAlign) {
                    tail %= reqAlign;
                    num -= tail;
                }
            }
            num = Math.min(num, maxDiscard);
            if (num >= reqAlign) {
                check(IoType.DISCARD, pos, num);
                image.discard(pos, num);
            }
            pos += num;
            left -= num;
        }
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        check(IoType.WRITE, offset, src.remaining()); // QEMU's copy-on-read write-back is a driver write
        image.writeUnallocated(offset, src);
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        check(IoType.DISCARD, offset, length); // releases the layer's clusters, as a discard would
        image.unallocate(offset, length);
    }

    @Override
    public void flush() throws IOException {
        check(IoType.FLUSH, 0, 0);
        image.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        check(IoType.BLOCK_STATUS, offset, maxLength);
        return image.blockStatus(offset, maxLength);
    }

    @Override
    public void reopenReadWrite() {
        // nothing of its own: the graph reopens the image
    }

    @Override
    public void close() {
        // the graph closes the image node
    }

    @Override
    public String toString() {
        return "blkdebug:" + (settings.config() == null ? "" : settings.config()) + ":" + image.filename();
    }
}
