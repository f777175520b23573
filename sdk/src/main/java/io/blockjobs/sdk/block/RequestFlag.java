package io.blockjobs.sdk.block;

import java.util.Set;

/**
 * QEMU's request flags ({@code BdrvRequestFlags}) that a caller may put on a write or a
 * write-zeroes request.
 */
public enum RequestFlag {
    /** Force unit access: the data is durable when the request returns (NBD's {@code FUA}). */
    FUA,
    /** A write-zeroes may release the storage behind the range (NBD's absence of {@code NO_HOLE}). */
    MAY_UNMAP,
    /**
     * A write-zeroes must be fast or fail with {@link Errno#ENOTSUP}: the node must not fall back
     * to writing zero buffers (NBD's {@code FAST_ZERO}).
     */
    NO_FALLBACK,
    /**
     * A write may be stored compressed (qcow2's compressed clusters, QEMU's
     * {@code BDRV_REQ_WRITE_COMPRESSED}): whole clusters, or the last, partial one of the node.
     * Nodes that cannot ({@link BlockNode#supportsCompressedWrites()} false) refuse it with
     * {@link Errno#ENOTSUP}.
     */
    WRITE_COMPRESSED;

    /** No flags. */
    public static final Set<RequestFlag> NONE = Set.of();
}
