package io.blockjobs.sdk.testkit;

/**
 * QEMU 7.2's rate limiter ({@code include/qemu/ratelimit.h}) with its 100 ms slice
 * ({@code BLOCK_JOB_SLICE_TIME}): a quota of bytes per slice; work beyond it extends the slice,
 * and the caller waits until the extended slice ends.
 */
final class RateLimit {
    static final long SLICE_NANOS = 100_000_000L;

    private long sliceStart;
    private long sliceEnd;
    private long sliceQuota; // 0: unlimited
    private long dispatched;

    /** Bytes per second; 0 means unlimited. */
    void setSpeed(long bytesPerSecond) {
        sliceQuota = bytesPerSecond == 0 ? 0 : Math.max((long) ((double) bytesPerSecond * SLICE_NANOS / 1_000_000_000L), 1);
    }

    /** Bytes a slice may carry (0: unlimited). */
    long sliceQuota() {
        return sliceQuota;
    }

    /** Accounts {@code bytes} at {@code now}; returns how long to wait, in nanoseconds. */
    long calculateDelay(long bytes, long now) {
        if (sliceQuota == 0) {
            return 0;
        }
        if (sliceEnd < now) {
            // the previous, possibly extended, slice finished: start accounting again
            sliceStart = now;
            sliceEnd = now + SLICE_NANOS;
            dispatched = 0;
        }
        dispatched += bytes;
        if (dispatched < sliceQuota) {
            return 0;
        }
        double delaySlices = (double) dispatched / sliceQuota;
        sliceEnd = sliceStart + (long) (delaySlices * SLICE_NANOS);
        return sliceEnd - now;
    }
}
