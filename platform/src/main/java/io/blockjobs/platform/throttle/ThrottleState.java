package io.blockjobs.platform.throttle;

import io.blockjobs.platform.throttle.ThrottleConfig.Bucket;

/**
 * QEMU's leaky buckets ({@code util/throttle.c}), arithmetic only: every bucket's level leaks
 * at its average rate; a request may start while no bucket it counts against is over its size,
 * and then its whole size is added. The size is {@code avg/10} without a burst rate, otherwise
 * {@code max * burst-length}; with a burst length above 1, a second level leaks at {@code max}
 * and may hold {@code max/10}. The same doubles, in the same order, as QEMU, so the waits are
 * QEMU's to the nanosecond. Not thread-safe: the group's lock guards it.
 */
final class ThrottleState {
    private static final double NANOS_PER_SECOND = 1_000_000_000.0;
    private static final Bucket[][] WAIT_BUCKETS = {
            {Bucket.BPS_TOTAL, Bucket.OPS_TOTAL, Bucket.BPS_READ, Bucket.OPS_READ},
            {Bucket.BPS_TOTAL, Bucket.OPS_TOTAL, Bucket.BPS_WRITE, Bucket.OPS_WRITE}};
    private static final Bucket[][] SIZE_BUCKETS = {
            {Bucket.BPS_TOTAL, Bucket.BPS_READ}, {Bucket.BPS_TOTAL, Bucket.BPS_WRITE}};
    private static final Bucket[][] UNIT_BUCKETS = {
            {Bucket.OPS_TOTAL, Bucket.OPS_READ}, {Bucket.OPS_TOTAL, Bucket.OPS_WRITE}};

    private final ThrottleConfig config;
    private final double[] level = new double[Bucket.values().length];
    private final double[] burstLevel = new double[Bucket.values().length];
    private long previousLeak;

    /** QEMU's {@code throttle_config}: a validated configuration, every level empty, leaking from {@code now}. */
    ThrottleState(ThrottleConfig config, long now) {
        this.config = config.copy();
        this.previousLeak = now;
    }

    ThrottleConfig config() {
        return config.copy();
    }

    double level(Bucket b) {
        return level[b.ordinal()];
    }

    double burstLevel(Bucket b) {
        return burstLevel[b.ordinal()];
    }

    /** {@code throttle_do_leak}: every bucket leaks for the time since the last leak. */
    void leak(long now) {
        long delta = now - previousLeak;
        previousLeak = now;
        if (delta <= 0) {
            return;
        }
        for (Bucket b : Bucket.values()) {
            int i = b.ordinal();
            double leak = (config.avg(b) * (double) delta) / NANOS_PER_SECOND;
            level[i] = Math.max(level[i] - leak, 0);
            if (config.burstLength(b) > 1) {
                leak = (config.max(b) * (double) delta) / NANOS_PER_SECOND;
                burstLevel[i] = Math.max(burstLevel[i] - leak, 0);
            }
        }
    }

    /** {@code throttle_compute_wait}: nanoseconds until the bucket is back to its size; 0 if it is not over it. */
    long computeWait(Bucket b) {
        long avg = config.avg(b);
        long max = config.max(b);
        if (avg == 0) {
            return 0;
        }
        double bucketSize;
        double burstBucketSize;
        if (max == 0) {
            // No burst rate: still let short bursts through, or every other request would wait.
            bucketSize = (double) avg / 10;
            burstBucketSize = 0;
        } else {
            bucketSize = (double) (max * config.burstLength(b));
            burstBucketSize = (double) max / 10;
        }
        double extra = level[b.ordinal()] - bucketSize;
        if (extra > 0) {
            return waitFor(avg, extra);
        }
        if (config.burstLength(b) > 1) {
            extra = burstLevel[b.ordinal()] - burstBucketSize;
            if (extra > 0) {
                return waitFor(max, extra);
            }
        }
        return 0;
    }

    /** {@code throttle_do_compute_wait}: the double truncated to whole nanoseconds, as C converts it. */
    private static long waitFor(long limit, double extra) {
        double wait = extra * NANOS_PER_SECOND;
        wait /= limit;
        return (long) wait;
    }

    /** {@code throttle_compute_wait_for}: the longest wait of the buckets a read or a write counts against. */
    long waitFor(boolean write) {
        long maxWait = 0;
        for (Bucket b : WAIT_BUCKETS[write ? 1 : 0]) {
            maxWait = Math.max(maxWait, computeWait(b));
        }
        return maxWait;
    }

    /** {@code throttle_compute_timer}: leaks up to {@code now}, then the wait (0: the request may go now). */
    long computeTimer(boolean write, long now) {
        leak(now);
        return waitFor(write);
    }

    /**
     * {@code throttle_account}: adds a request that is about to run. With {@code iops-size}, a
     * request larger than it counts as {@code bytes / iops-size} operations (a fraction too).
     */
    void account(boolean write, long bytes) {
        double units = 1.0;
        long opSize = config.opSize();
        if (opSize != 0 && Long.compareUnsigned(bytes, opSize) > 0) {
            units = (double) bytes / opSize;
        }
        int d = write ? 1 : 0;
        for (int i = 0; i < 2; i++) {
            Bucket size = SIZE_BUCKETS[d][i];
            level[size.ordinal()] += bytes;
            if (config.burstLength(size) > 1) {
                burstLevel[size.ordinal()] += bytes;
            }
            Bucket unit = UNIT_BUCKETS[d][i];
            level[unit.ordinal()] += units;
            if (config.burstLength(unit) > 1) {
                burstLevel[unit.ordinal()] += units;
            }
        }
    }
}
