package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** The kit's rate limiter gives QEMU 7.2's delays ({@code ratelimit_calculate_delay}). */
class RateLimitKitTest {
    private static final long SLICE = RateLimit.SLICE_NANOS;

    @Test
    void aSliceCarriesATenthOfTheSpeedAndWorkBeyondItExtendsTheSlice() {
        RateLimit limit = new RateLimit();
        limit.setSpeed(1_000_000); // 100 000 bytes a slice
        long now = 5 * SLICE;
        assertThat(limit.calculateDelay(60_000, now)).as("within the quota").isZero();
        assertThat(limit.calculateDelay(90_000, now)).as("1.5 slices dispatched: wait until they end").isEqualTo(SLICE * 3 / 2);
        now += SLICE * 3 / 2;
        assertThat(limit.calculateDelay(50_000, now)).as("the slice goes on: 2 slices now").isEqualTo(SLICE / 2);
        now += SLICE / 2 + 1; // later than the slice's end: a new slice
        assertThat(limit.calculateDelay(99_999, now)).isZero();
        limit.setSpeed(0);
        assertThat(limit.calculateDelay(1L << 40, now)).as("unlimited").isZero();
    }

    @Test
    void theQuotaIsAtLeastOneByte() {
        RateLimit limit = new RateLimit();
        limit.setSpeed(1);
        assertThat(limit.sliceQuota()).isEqualTo(1);
        assertThat(limit.calculateDelay(3, SLICE)).isEqualTo(3 * SLICE);
    }
}
