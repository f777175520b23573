package io.blockjobs.sdk.block;

/**
 * The state of a range of a block node, uniform over the whole range: QEMU's block status.
 *
 * <p>For a single layer ({@link BlockNode#blockStatus}) {@code depth} is 0 when the range is
 * allocated in that layer and 1 when it is not. For a chain ({@link BlockNode#chainStatus})
 * {@code depth} is the number of backing links between the queried node and the layer that
 * holds the data; a range allocated nowhere has {@code depth} equal to the chain's length and
 * {@code allocated == false}, like the {@code depth} of {@code qemu-img map}.
 *
 * @param offset    where the range starts
 * @param length    how many bytes share this state (at least 1)
 * @param allocated whether the data is defined by the layer at {@code depth} (data or zeroes)
 *                  rather than left to a backing file
 * @param zero      whether the range is known to read as zeroes
 * @param depth     the layer the data comes from, as above
 */
public record BlockStatus(long offset, long length, boolean allocated, boolean zero, int depth) {

    /** Checks the invariants. */
    public BlockStatus {
        if (offset < 0 || length <= 0 || depth < 0) {
            throw new IllegalArgumentException(
                    "bad block status: offset " + offset + ", length " + length + ", depth " + depth);
        }
    }

    /** The first byte after this range. */
    public long end() {
        return offset + length;
    }
}
