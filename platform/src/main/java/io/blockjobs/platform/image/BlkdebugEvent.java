package io.blockjobs.platform.image;

import java.util.Locale;

/**
 * QEMU's {@code BlkdebugEvent} (qapi/block-core.json), in QEMU's order: the points of a
 * request's way through the block layer that {@code blkdebug} rules name. Where each one fires in
 * blockjobs is said in {@link DebugEvents}; the others are accepted in rules, as QEMU accepts
 * them, and never fire.
 */
public enum BlkdebugEvent {
    L1_UPDATE,
    L1_GROW_ALLOC_TABLE,
    L1_GROW_WRITE_TABLE,
    L1_GROW_ACTIVATE_TABLE,
    L2_LOAD,
    L2_UPDATE,
    L2_UPDATE_COMPRESSED,
    L2_ALLOC_COW_READ,
    L2_ALLOC_WRITE,
    READ_AIO,
    READ_BACKING_AIO,
    READ_COMPRESSED,
    WRITE_AIO,
    WRITE_COMPRESSED,
    VMSTATE_LOAD,
    VMSTATE_SAVE,
    COW_READ,
    COW_WRITE,
    REFTABLE_LOAD,
    REFTABLE_GROW,
    REFTABLE_UPDATE,
    REFBLOCK_LOAD,
    REFBLOCK_UPDATE,
    REFBLOCK_UPDATE_PART,
    REFBLOCK_ALLOC,
    REFBLOCK_ALLOC_HOOKUP,
    REFBLOCK_ALLOC_WRITE,
    REFBLOCK_ALLOC_WRITE_BLOCKS,
    REFBLOCK_ALLOC_WRITE_TABLE,
    REFBLOCK_ALLOC_SWITCH_TABLE,
    CLUSTER_ALLOC,
    CLUSTER_ALLOC_BYTES,
    CLUSTER_FREE,
    FLUSH_TO_OS,
    FLUSH_TO_DISK,
    PWRITEV_RMW_HEAD,
    PWRITEV_RMW_AFTER_HEAD,
    PWRITEV_RMW_TAIL,
    PWRITEV_RMW_AFTER_TAIL,
    PWRITEV,
    PWRITEV_ZERO,
    PWRITEV_DONE,
    EMPTY_IMAGE_PREPARE,
    L1_SHRINK_WRITE_TABLE,
    L1_SHRINK_FREE_L2_CLUSTERS,
    COR_WRITE,
    CLUSTER_ALLOC_SPACE,
    NONE;

    /** The QAPI name ({@code read_aio}). */
    public String qapiName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The event of this QAPI name, or null. */
    public static BlkdebugEvent byName(String name) {
        for (BlkdebugEvent e : values()) {
            if (e.qapiName().equals(name)) {
                return e;
            }
        }
        return null;
    }
}
