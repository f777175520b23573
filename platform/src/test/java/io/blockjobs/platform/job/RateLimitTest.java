package io.blockjobs.platform.job;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/** The job speed limiter against QEMU's {@code ratelimit_calculate_delay}, on a simulated clock. */
class RateLimitTest {
    private static final long MS = 1_000_000L;

    @Test
    void waitsForTheExcessAndStretchesTheSlice() {
        RateLimit r = new RateLimit();
        r.setSpeed(10L << 20); // a quota of 1 MiB per 100 ms slice
        long start = 1_000 * MS;
        assertThat(r.processed(512 << 10, start)).isZero(); // within the slice's quota
        assertThat(r.processed(512 << 10, start)).isEqualTo(100 * MS); // the quota is used up
        assertThat(r.processed(512 << 10, start + 100 * MS)).isEqualTo(50 * MS); // 1.5 slices' worth
        assertThat(r.processed(512 << 10, start + 150 * MS)).isEqualTo(50 * MS);
    }

    /** A job that copies chunks and sleeps as told gets the speed asked, whatever the chunk size. */
    @ParameterizedTest(name = "{0} B/s in {1}-byte chunks")
    @CsvSource({"3145728, 524288", "1048576, 524288", "104857600, 65536", "8388608, 1048576", "1000, 65536"})
    void aCopyLoopKeepsTheSpeed(long speed, int chunk) {
        RateLimit r = new RateLimit();
        r.setSpeed(speed);
        long now = 0;
        long copied = 0;
        long seconds = 20;
        while (now < seconds * 1_000 * MS) {
            copied += chunk;
            now += r.processed(chunk, now);
        }
        double rate = copied / (now / 1e9);
        assertThat(rate).isBetween(speed * 0.97, speed * 1.03 + chunk / (double) seconds);
    }
}
