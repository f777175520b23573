package io.blockjobs.sdk.bitmap;

/**
 * A run of dirty bytes: whole granules, clipped to the bitmap's size and to the range asked for.
 *
 * @param offset the first dirty byte
 * @param length how many bytes, at least one
 */
public record DirtyRange(long offset, long length) {

    /** Checks the range. */
    public DirtyRange {
        if (offset < 0 || length <= 0) {
            throw new IllegalArgumentException("bad dirty range " + offset + "+" + length);
        }
    }

    /** The first byte after the range. */
    public long end() {
        return offset + length;
    }
}
