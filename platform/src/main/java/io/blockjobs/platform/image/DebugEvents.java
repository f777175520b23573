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
 * is how {@code qemu-io blkdebug:CONFIG:IMAGE} opens it. Under a driver that fires its own
 * ({@link #firesOwnReadEvents}: qcow2) the graph fires no {@code read_aio} for the reads of
 * its {@code file}: the driver fires what QEMU's fires there ({@code read_aio} for guest data
 * only, {@code cow_read}, {@code read_compressed}), so that metadata reads, at open too, meet
 * no {@code read_aio} rule. qcow2's metadata events ({@code l2_update}, ...) never fire.
 *
 * <p>Called on the thread of the request, concurrently with other requests.
 */
public interface DebugEvents {

    /** One event happened. */
    void debugEvent(BlkdebugEvent event);

    /**
     * Whether a node of {@code driver} fires the read events of its {@code file} child itself
     * (QEMU's qcow2, here {@link Qcow2Node}), so the graph does not fire raw's {@code read_aio}.
     */
    static boolean firesOwnReadEvents(String driver) {
        return "qcow2".equals(driver);
    }

    /** Fires {@code event} on {@code node} if it hears events (a child as the graph hands it out). */
    static void fire(io.blockjobs.sdk.block.BlockNode node, BlkdebugEvent event) {
        if (node instanceof DebugEvents d) {
            d.debugEvent(event);
        }
    }
}
