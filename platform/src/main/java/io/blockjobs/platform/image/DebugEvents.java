package io.blockjobs.platform.image;

/**
 * A driver that hears QEMU's block-layer debug events ({@code bdrv_debug_event}): blkdebug's
 * state machine moves on them. The graph fires them on the node whose driver implements this:
 *
 * <ul>
 *   <li>where QEMU's generic layer ({@code block/io.c}) fires them on the node it sends a
 *       request to: {@code pwritev} before a write goes to the driver and {@code pwritev_done}
 *       after it, {@code pwritev_zero} before a write-zeroes, {@code pwritev_rmw_head},
 *       {@code pwritev_rmw_after_head}, {@code pwritev_rmw_tail} and
 *       {@code pwritev_rmw_after_tail} around the reads of an unaligned write's
 *       read-modify-write, {@code cor_write} before a copy-on-read write-back;</li>
 *   <li>when a request enters the node, the events QEMU's {@code raw} format driver fires on
 *       its file for it: {@code read_aio} for a read, {@code write_aio} for a write, and
 *       {@code flush_to_os} then {@code flush_to_disk} for a flush (QEMU's
 *       {@code bdrv_co_flush} fires them on the node's primary child).</li>
 * </ul>
 *
 * <p>A blkdebug node therefore sees what QEMU's blkdebug sees with {@code raw} above it, which
 * is how {@code qemu-io blkdebug:CONFIG:IMAGE} opens it; qcow2's metadata events
 * ({@code l2_update}, {@code refblock_alloc}, ...) never fire.
 *
 * <p>Called on the thread of the request, concurrently with other requests.
 */
public interface DebugEvents {

    /** One event happened. */
    void debugEvent(BlkdebugEvent event);
}
