package io.blockjobs.sdk.driver;

/**
 * What a child is to its parent, which decides the permissions the parent takes on it and shares
 * (QEMU's {@code BdrvChildRole} with {@code bdrv_default_perms}).
 */
public enum ChildRole {
    /** The one child a filter forwards to: the parent's users' permissions pass through. */
    FILTERED,
    /**
     * A format node's file: metadata and data. Written whenever the parent is writable; nobody
     * else may write or resize it.
     */
    STORAGE,
    /** A backing file: read for data the overlay lacks; shared with other readers. */
    COW,
    /** A data child of a node with several (quorum's {@code children.N}). */
    DATA
}
