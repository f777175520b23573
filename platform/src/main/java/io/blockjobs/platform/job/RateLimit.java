package io.blockjobs.platform.job;

/**
 * QEMU's rate limiter ({@code include/qemu/ratelimit.h}): a quota of bytes per 100 ms slice;
 * work beyond the quota is delayed until the slices it uses have passed.
 */
final class RateLimit {
    static final long SLICE_NANOS = 100_000_000L;

    private long sliceQuota; // 0: unlimited
    private long sliceStart;
    private long sliceEnd;
    private long dispatched;

    /** Bytes per second; 0 means unlimited. */
    void setSpeed(long bytesPerSecond) {
        sliceQuota = bytesPerSecond == 0 ? 0 : Math.max(1, bytesPerSecond * SLICE_NANOS / 1_000_000_000L);
    }

    /** Accounts {@code bytes}; returns how long to wait before the next request, in nanoseconds. */
    long processed(long bytes, long now) {
        if (sliceQuota == 0) {
            return 0;
        }
        if (sliceEnd < now) {
            sliceStart = now;
            sliceEnd = now + SLICE_NANOS;
            dispatched = 0;
        }
        dispatched += bytes;
        if (dispatched < sliceQuota) {
            return 0; // more may go within this slice
        }
        // Quota exceeded: wait for the excess, and the slice stretches to cover it (QEMU's
        // ratelimit_calculate_delay), so nothing beyond the quota is ever forgiven.
        double delaySlices = (double) dispatched / sliceQuota;
        sliceEnd = sliceStart + (long) (delaySlices * SLICE_NANOS);
        return sliceEnd - now;
    }
}
