package io.blockjobs.platform.image;

import java.nio.ByteBuffer;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Aligned direct buffers for {@code O_DIRECT} requests whose buffer is not aligned (an NBD
 * write's payload follows its 28-byte header), kept for reuse. A heap bounce buffer costs two
 * copies (the JDK copies it again into an aligned buffer of its own) and a GC's work per request;
 * this costs one copy. Buffers come in powers of two from 4 KiB to {@link #LARGEST}; each size
 * keeps at most {@link #KEPT_COUNT} of them and {@link #KEPT_BYTES} idle (one at least), and
 * larger requests get a buffer of their own. The NBD server also receives a write's payload
 * straight into one (as QEMU's {@code nbd_co_receive_request} does into {@code qemu_blockalign}ed
 * memory), so that its file write needs no bounce at all.
 */
public final class BounceBuffers {
    /** Alignment of every buffer: the largest file-system block size {@code O_DIRECT} asks for here. */
    public static final int ALIGNMENT = 4096;

    private static final int SMALLEST_SHIFT = 12;
    private static final int LARGEST_SHIFT = 25;
    static final int LARGEST = 1 << LARGEST_SHIFT;
    private static final int KEPT_BYTES = 8 << 20;
    private static final int KEPT_COUNT = 16;

    private static final ConcurrentLinkedQueue<ByteBuffer>[] IDLE = queues();
    private static final AtomicInteger[] IDLE_COUNT = counts();

    private BounceBuffers() {
    }

    /**
     * A buffer of {@code size} bytes (position 0, limit {@code size}), aligned to
     * {@code alignment} (a power of two; kept buffers serve alignments up to {@link #ALIGNMENT}).
     */
    public static ByteBuffer take(int size, int alignment) {
        int bucket = alignment <= ALIGNMENT ? bucket(size) : -1;
        ByteBuffer b = bucket < 0 ? null : IDLE[bucket].poll();
        if (b != null) {
            IDLE_COUNT[bucket].decrementAndGet();
            return b.clear().limit(size);
        }
        int capacity = bucket < 0 ? size : 1 << (bucket + SMALLEST_SHIFT);
        int align = Math.max(alignment, ALIGNMENT);
        return ByteBuffer.allocateDirect(capacity + align).alignedSlice(align).limit(capacity).slice().limit(size);
    }

    /** Gives back a buffer from {@link #take}; kept for the next request if its size has room. */
    public static void give(ByteBuffer b) {
        int bucket = bucket(b.capacity());
        if (bucket < 0 || 1 << (bucket + SMALLEST_SHIFT) != b.capacity()) {
            return; // not a kept size: the GC frees it
        }
        if (IDLE_COUNT[bucket].incrementAndGet() <= Math.clamp(KEPT_BYTES >> (bucket + SMALLEST_SHIFT), 1, KEPT_COUNT)) {
            IDLE[bucket].offer(b);
        } else {
            IDLE_COUNT[bucket].decrementAndGet(); // enough idle ones already: the GC frees this
        }
    }

    /** The bucket of buffers of at least {@code size} bytes, -1 past the largest. */
    private static int bucket(int size) {
        if (size > LARGEST) {
            return -1;
        }
        int shift = Math.max(SMALLEST_SHIFT, 32 - Integer.numberOfLeadingZeros(Math.max(1, size) - 1));
        return shift - SMALLEST_SHIFT;
    }

    @SuppressWarnings("unchecked")
    private static ConcurrentLinkedQueue<ByteBuffer>[] queues() {
        ConcurrentLinkedQueue<ByteBuffer>[] q = new ConcurrentLinkedQueue[LARGEST_SHIFT - SMALLEST_SHIFT + 1];
        for (int i = 0; i < q.length; i++) {
            q[i] = new ConcurrentLinkedQueue<>();
        }
        return q;
    }

    private static AtomicInteger[] counts() {
        AtomicInteger[] c = new AtomicInteger[LARGEST_SHIFT - SMALLEST_SHIFT + 1];
        for (int i = 0; i < c.length; i++) {
            c[i] = new AtomicInteger();
        }
        return c;
    }
}
