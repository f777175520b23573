package io.blockjobs.platform.throttle;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.blockjobs.platform.throttle.ThrottleConfig.Bucket;
import org.junit.jupiter.api.Test;

/**
 * The leaky buckets against QEMU's formulas ({@code util/throttle.c}), with the workloads the
 * research measured on QEMU 7.2 (qemu-io over NBD to a throttle node): each expected time is
 * worked out by hand from the bucket sizes, not from this code.
 */
class ThrottleStateTest {
    private static final long KIB = 1024;
    private static final long MIB = 1024 * KIB;
    private static final double NS = 1e9;

    /**
     * One client, one request at a time, as QEMU serves it: a request that must wait starts when
     * its timer fires, without asking again. Returns when the last request started, in seconds.
     */
    private static double lastStart(ThrottleConfig config, boolean write, long size, int count) {
        config.validate();
        ThrottleState s = new ThrottleState(config, 0);
        long now = 0;
        for (int i = 0; i < count; i++) {
            now += s.computeTimer(write, now);
            s.account(write, size);
        }
        return now / NS;
    }

    private static ThrottleConfig bpsWrite(long avg) {
        return new ThrottleConfig().avg(Bucket.BPS_WRITE, avg);
    }

    @Test
    void oneLargeRequestGoesAtOnceAndTheNextWaitsForIt() {
        // Measured: one 8 MiB write 0.110 s; two 8.019 s. The second starts when 8 MiB - avg/10 has leaked.
        assertThat(lastStart(bpsWrite(MIB), true, 8 * MIB, 1)).isZero();
        assertThat(lastStart(bpsWrite(MIB), true, 8 * MIB, 2)).isCloseTo(7.9, within(1e-6));
    }

    @Test
    void sequentialWritesRunAtTheAverageAfterTheAllowance() {
        // 8 MiB at 1 MiB/s: (8 - last request - 0.1) s. Measured 7.865 s (64 KiB), 7.677 s (256 KiB), 6.943 s (1 MiB).
        assertThat(lastStart(bpsWrite(MIB), true, 64 * KIB, 128)).isCloseTo(8 - 0.0625 - 0.1, within(1e-6));
        assertThat(lastStart(bpsWrite(MIB), true, 256 * KIB, 32)).isCloseTo(8 - 0.25 - 0.1, within(1e-6));
        assertThat(lastStart(bpsWrite(MIB), true, MIB, 8)).isCloseTo(8 - 1 - 0.1, within(1e-6));
    }

    @Test
    void readsAreNotLimitedByAWriteLimitButTotalsCountBoth() {
        assertThat(lastStart(bpsWrite(MIB), false, MIB, 16)).isZero();
        ThrottleState s = new ThrottleState(new ThrottleConfig().avg(Bucket.BPS_TOTAL, MIB), 0);
        s.account(true, 2 * MIB);
        // (2 MiB - 0.1 MiB) / 1 MiB/s, for a read as for a write
        assertThat(s.computeTimer(false, 0) / NS).isCloseTo(1.9, within(1e-9));
        assertThat(s.computeTimer(true, 0) / NS).isCloseTo(1.9, within(1e-9));
        // half a second later, half a MiB has leaked
        assertThat(s.computeTimer(false, 500_000_000L) / NS).isCloseTo(1.4, within(1e-9));
        assertThat(s.level(Bucket.BPS_TOTAL)).isCloseTo(1.5 * MIB, within(1e-3));
    }

    @Test
    void aBurstRateWithALengthRunsAtMaxUntilTheMainBucketIsFull() {
        ThrottleConfig c = bpsWrite(MIB).max(Bucket.BPS_WRITE, 4 * MIB).burstLength(Bucket.BPS_WRITE, 2);
        // The burst level (size max/10 = 0.4 MiB, leaking at 4 MiB/s) holds 7 x 64 KiB at once; the 8th waits
        // (7 x 64 KiB - 0.4 MiB) / 4 MiB/s, every later one 64 KiB / 4 MiB/s. The main bucket (8 MiB) never fills.
        // Measured: 1.930 s.
        double burst = (7 * 64 * KIB - 0.4 * MIB) / (4.0 * MIB) + 120 * (64.0 * KIB / (4 * MIB));
        assertThat(lastStart(c.copy(), true, 64 * KIB, 128)).isCloseTo(burst, within(1e-6));
        // 16 MiB: the main bucket (max x length = 8 MiB) fills, then 1 MiB/s: the last starts when
        // 16 MiB - 64 KiB - 8 MiB has leaked. Measured: 7.977 s.
        assertThat(lastStart(c.copy(), true, 64 * KIB, 256)).isCloseTo(16 - 0.0625 - 8, within(1e-6));
    }

    @Test
    void aBurstRateOfLengthOneOnlyEnlargesTheBucket() {
        ThrottleConfig c = bpsWrite(MIB).max(Bucket.BPS_WRITE, 2 * MIB);
        // No burst level; bucket = 2 MiB. Measured: 5.964 s.
        assertThat(lastStart(c, true, 64 * KIB, 128)).isCloseTo(8 - 0.0625 - 2, within(1e-6));
    }

    @Test
    void iopsLimitsCountRequestsOrIopsSizeUnits() {
        // iops-write 10: bucket 1 op, so two go at once, then one every 0.1 s. Measured: 2.029 s.
        assertThat(lastStart(new ThrottleConfig().avg(Bucket.OPS_WRITE, 10), true, 4 * KIB, 22))
                .isCloseTo(2.0, within(1e-6));
        // iops-size 16 KiB: a 64 KiB write is 4 operations: 0.3 s for the second, 0.4 s each after. Measured 4.345 s.
        ThrottleConfig sized = new ThrottleConfig().avg(Bucket.OPS_WRITE, 10).opSize(16 * KIB);
        assertThat(lastStart(sized, true, 64 * KIB, 12)).isCloseTo(0.3 + 10 * 0.4, within(1e-6));
        // A request no larger than iops-size is one operation; fractions count.
        ThrottleState s = new ThrottleState(sized, 0);
        s.account(true, 4 * KIB);
        assertThat(s.level(Bucket.OPS_WRITE)).isEqualTo(1.0);
        s.account(true, 24 * KIB);
        assertThat(s.level(Bucket.OPS_WRITE)).isEqualTo(2.5);
        assertThat(s.level(Bucket.OPS_TOTAL)).isEqualTo(2.5);
        assertThat(s.level(Bucket.BPS_WRITE)).isEqualTo(28.0 * KIB);
    }

    @Test
    void waitsAreTruncatedToWholeNanosecondsAsCDoes() {
        ThrottleState s = new ThrottleState(new ThrottleConfig().avg(Bucket.BPS_WRITE, 3), 0);
        s.account(true, 1);
        // bucket 0.3, extra 0.7 B at 3 B/s: 233333333.33 ns
        assertThat(s.computeTimer(true, 0)).isEqualTo(233_333_333L);
    }

    @Test
    void levelsNeverLeakBelowZeroAndTimeGoingBackIsIgnored() {
        ThrottleState s = new ThrottleState(bpsWrite(MIB), 1_000_000_000L);
        s.account(true, MIB);
        s.leak(500_000_000L); // earlier than the last leak: nothing
        assertThat(s.level(Bucket.BPS_WRITE)).isEqualTo(MIB);
        s.leak(10_000_000_000L);
        assertThat(s.level(Bucket.BPS_WRITE)).isZero();
    }
}
