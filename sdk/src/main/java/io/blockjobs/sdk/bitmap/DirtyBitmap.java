package io.blockjobs.sdk.bitmap;

import java.util.Optional;

/**
 * A dirty bitmap of one node (QEMU's {@code BdrvDirtyBitmap}): one bit per granule of the
 * node's bytes, set by every write, write-zeroes and discard through the node while the bitmap
 * is enabled. Offsets and lengths are in bytes; a range marks or clears every granule it touches
 * ({@link #set}) or covers whole ({@link #reset}), as QEMU's {@code hbitmap}. Methods may be
 * called from any thread.
 *
 * <p>A job that copies what is dirty takes a <em>successor</em> first: the bitmap is frozen (its
 * bits no longer change) and the writes from then on go to the successor. When the job ends it
 * either {@linkplain #abdicate() abdicates} (the successor takes the bitmap's place: what was
 * copied is forgotten) or {@linkplain #reclaim() reclaims} (the successor's bits are merged back:
 * nothing is forgotten), the operations behind backup's {@code bitmap-mode}.
 */
public interface DirtyBitmap {

    /** Its name, or empty for an anonymous bitmap (a job's own). */
    Optional<String> name();

    /** Bytes per bit: a power of two, at least 512. */
    long granularity();

    /** The bytes the bitmap covers: the node's size when the bitmap was made. */
    long size();

    /** Dirty bytes: the dirty granules times the granularity, as QEMU's {@code count}. */
    long count();

    /** Whether writes to the node are recorded, in this bitmap or in its successor. */
    boolean recording();

    /** Whether the granule holding {@code offset} is dirty. */
    boolean isDirty(long offset);

    /**
     * The first dirty range that starts at or after {@code offset} and before {@code end}, as
     * long as its granules stay dirty, clipped to {@code [offset, end)} and to the bitmap's size.
     */
    Optional<DirtyRange> nextDirty(long offset, long end);

    /** The first clean byte at or after {@code offset} and before {@code end}; -1 if none. */
    long nextClean(long offset, long end);

    /** Marks every granule that {@code [offset, offset + length)} touches. */
    void set(long offset, long length);

    /** Clears every granule that {@code [offset, offset + length)} covers whole, and the last, partial granule of the disk. */
    void reset(long offset, long length);

    /**
     * Freezes this bitmap: from now on writes are recorded in a new, anonymous successor
     * (enabled if this bitmap was), and this bitmap is busy.
     *
     * @throws io.blockjobs.sdk.error.CommandException with QEMU's message if it is busy or has a successor
     */
    void createSuccessor();

    /**
     * The successor takes this bitmap's place, name and persistence: the frozen bits are dropped.
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no successor
     */
    void abdicate();

    /**
     * The successor's bits are merged back into this bitmap, which records writes again if the
     * successor did and is no longer busy.
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no successor
     */
    void reclaim();
}
