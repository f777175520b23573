package io.blockjobs.platform.nbd;

import io.blockjobs.platform.nbd.NbdReply.Extent;
import java.util.AbstractList;
import java.util.Arrays;
import java.util.RandomAccess;

/**
 * The extents of one block status chunk as they are gathered, QEMU's {@code NBDExtentArray}: at
 * most {@code capacity} of them ({@value #MAX} for a whole reply, 1 for
 * {@code NBD_CMD_FLAG_REQ_ONE}); an extent with the flags of the one before lengthens it (while
 * the sum fits in 32 bits) instead of taking a place, so a full array still takes runs of the
 * last state. Extents are packed two ints to a {@code long}, and room grows as they come: memory
 * follows the number of extents, not the length of the range.
 *
 * <p>Read as a {@code List<Extent>} once gathered; not thread-safe (one request's thread).
 */
final class ExtentArray extends AbstractList<Extent> implements RandomAccess {
    /** QEMU's {@code NBD_MAX_BLOCK_STATUS_EXTENTS}: 1 MiB of extents. */
    static final int MAX = (1 << 20) / 8;
    private static final long U32 = 0xffffffffL;

    private final int capacity;
    private long[] packed = new long[4];
    private int count;
    private long totalLength;
    private boolean full;

    /** @param capacity how many extents the chunk may hold, at least 1 */
    ExtentArray(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity " + capacity);
        }
        this.capacity = capacity;
    }

    /** An array for a request: one extent with {@code NBD_CMD_FLAG_REQ_ONE}, else {@link #MAX}. */
    static ExtentArray forRequest(boolean reqOne) {
        return new ExtentArray(reqOne ? 1 : MAX);
    }

    /**
     * Adds {@code length} bytes of state {@code flags} after those already added (QEMU's
     * {@code nbd_extent_array_add}). A zero length adds nothing.
     *
     * @return false, adding nothing, if the run needs a new extent and the array is full; it then
     *         takes no more
     */
    boolean add(long length, int flags) {
        if (full) {
            throw new IllegalStateException("the extent array is full");
        }
        if (length < 0 || length > U32) {
            throw new IllegalArgumentException("extent length " + length);
        }
        if (length == 0) {
            return true;
        }
        if (count > 0 && flags(count - 1) == flags) {
            long sum = length(count - 1) + length;
            if (sum <= U32) {
                packed[count - 1] = sum << 32 | (flags & U32);
                totalLength += length;
                return true;
            }
        }
        if (count >= capacity) {
            full = true;
            return false;
        }
        if (count == packed.length) {
            packed = Arrays.copyOf(packed, (int) Math.min(capacity, 2L * packed.length));
        }
        packed[count++] = length << 32 | (flags & U32);
        totalLength += length;
        return true;
    }

    /** Whether an {@link #add} was refused. */
    boolean isFull() {
        return full;
    }

    /** The bytes the extents cover. */
    long totalLength() {
        return totalLength;
    }

    long length(int i) {
        return packed[i] >>> 32;
    }

    int flags(int i) {
        return (int) packed[i];
    }

    @Override
    public Extent get(int index) {
        if (index < 0 || index >= count) {
            throw new IndexOutOfBoundsException(index);
        }
        return new Extent(length(index), flags(index));
    }

    @Override
    public int size() {
        return count;
    }
}
