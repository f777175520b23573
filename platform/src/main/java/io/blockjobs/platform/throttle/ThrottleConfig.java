package io.blockjobs.platform.throttle;

import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * QEMU's {@code ThrottleConfig} ({@code include/qemu/throttle.h}): six leaky buckets, each an
 * average rate, a burst rate and a burst length in seconds, plus the size of one operation for
 * the iops buckets. Values are kept as QEMU keeps them, as unsigned 64-bit numbers, so that a
 * negative value given through {@code limits} is refused with QEMU's message for a value out of
 * range. Not thread-safe: a group copies it.
 */
public final class ThrottleConfig {
    /** QEMU's {@code THROTTLE_VALUE_MAX}. */
    public static final long VALUE_MAX = 1_000_000_000_000_000L;
    private static final long UINT_MAX = 0xFFFF_FFFFL;

    /** QEMU's {@code BucketType}, in QEMU's order (validation reports the first bad bucket). */
    public enum Bucket {
        BPS_TOTAL("bps-total"), BPS_READ("bps-read"), BPS_WRITE("bps-write"),
        OPS_TOTAL("iops-total"), OPS_READ("iops-read"), OPS_WRITE("iops-write");

        /** The {@code ThrottleLimits} member of its average rate. */
        public final String key;

        Bucket(String key) {
            this.key = key;
        }
    }

    /** The {@code ThrottleLimits} members in the schema's order, which is the order QAPI checks them in. */
    public static final List<String> LIMITS_KEYS = List.of(
            "iops-total", "iops-total-max", "iops-total-max-length",
            "iops-read", "iops-read-max", "iops-read-max-length",
            "iops-write", "iops-write-max", "iops-write-max-length",
            "bps-total", "bps-total-max", "bps-total-max-length",
            "bps-read", "bps-read-max", "bps-read-max-length",
            "bps-write", "bps-write-max", "bps-write-max-length",
            "iops-size");

    private final long[] avg = new long[Bucket.values().length];
    private final long[] max = new long[Bucket.values().length];
    private final long[] burstLength = new long[Bucket.values().length];
    private long opSize;

    /** No limits; every burst length 1 (QEMU's {@code throttle_config_init}). */
    public ThrottleConfig() {
        java.util.Arrays.fill(burstLength, 1);
    }

    public ThrottleConfig copy() {
        ThrottleConfig c = new ThrottleConfig();
        System.arraycopy(avg, 0, c.avg, 0, avg.length);
        System.arraycopy(max, 0, c.max, 0, max.length);
        System.arraycopy(burstLength, 0, c.burstLength, 0, burstLength.length);
        c.opSize = opSize;
        return c;
    }

    public long avg(Bucket b) {
        return avg[b.ordinal()];
    }

    public long max(Bucket b) {
        return max[b.ordinal()];
    }

    public long burstLength(Bucket b) {
        return burstLength[b.ordinal()];
    }

    /** {@code iops-size}: requests larger than this count as several operations (0: every request is one). */
    public long opSize() {
        return opSize;
    }

    public ThrottleConfig avg(Bucket b, long value) {
        avg[b.ordinal()] = value;
        return this;
    }

    public ThrottleConfig max(Bucket b, long value) {
        max[b.ordinal()] = value;
        return this;
    }

    public ThrottleConfig burstLength(Bucket b, long value) {
        burstLength[b.ordinal()] = value;
        return this;
    }

    public ThrottleConfig opSize(long value) {
        opSize = value;
        return this;
    }

    /** Whether any bucket limits anything (QEMU's {@code throttle_enabled}). */
    public boolean enabled() {
        for (long a : avg) {
            if (a != 0) {
                return true;
            }
        }
        return false;
    }

    /**
     * Merges the given {@code ThrottleLimits} members into this configuration and validates the
     * result, as QEMU's {@code throttle_limits_to_config} does (a burst length above 2^32-1 is
     * refused before anything else is checked).
     *
     * @param limits member name to value, only the members given
     */
    public void applyLimits(Map<String, Long> limits) {
        for (Bucket b : Bucket.values()) {
            Long v = limits.get(b.key);
            if (v != null) {
                avg[b.ordinal()] = v;
            }
        }
        for (Bucket b : Bucket.values()) {
            Long v = limits.get(b.key + "-max");
            if (v != null) {
                max[b.ordinal()] = v;
            }
        }
        for (Bucket b : Bucket.values()) {
            Long v = limits.get(b.key + "-max-length");
            if (v != null) {
                // QEMU compares the signed value with UINT_MAX: -1 passes and becomes 2^64-1.
                if (v > UINT_MAX) {
                    throw new CommandException(b.key + "-max-length value must be in the range [0, " + UINT_MAX + "]");
                }
                burstLength[b.ordinal()] = v;
            }
        }
        Long size = limits.get("iops-size");
        if (size != null) {
            opSize = size;
        }
        validate();
    }

    /**
     * Sets one legacy {@code x-} property, as QEMU's {@code throttle_group_set} does before the
     * object is complete (no validation of the whole yet).
     *
     * @param key the member without its {@code x-} prefix
     */
    public void applyLegacy(String key, long value) {
        if (value < 0) {
            throw new CommandException("Property values cannot be negative");
        }
        if (key.equals("iops-size")) {
            opSize = value;
            return;
        }
        for (Bucket b : Bucket.values()) {
            if (key.equals(b.key)) {
                avg[b.ordinal()] = value;
                return;
            }
            if (key.equals(b.key + "-max")) {
                max[b.ordinal()] = value;
                return;
            }
            if (key.equals(b.key + "-max-length")) {
                if (value > UINT_MAX) {
                    // sic: QEMU's message lacks the space ("in the" "range" in throttle-groups.c)
                    throw new CommandException("x-" + key + " value must be in therange [0, " + UINT_MAX + "]");
                }
                burstLength[b.ordinal()] = value;
                return;
            }
        }
        throw new IllegalArgumentException("not a throttle limit: " + key);
    }

    /** QEMU's {@code throttle_is_valid}, with its messages, in its order. */
    public void validate() {
        boolean bps = avg(Bucket.BPS_TOTAL) != 0 && (avg(Bucket.BPS_READ) != 0 || avg(Bucket.BPS_WRITE) != 0);
        boolean ops = avg(Bucket.OPS_TOTAL) != 0 && (avg(Bucket.OPS_READ) != 0 || avg(Bucket.OPS_WRITE) != 0);
        boolean bpsMax = max(Bucket.BPS_TOTAL) != 0 && (max(Bucket.BPS_READ) != 0 || max(Bucket.BPS_WRITE) != 0);
        boolean opsMax = max(Bucket.OPS_TOTAL) != 0 && (max(Bucket.OPS_READ) != 0 || max(Bucket.OPS_WRITE) != 0);
        if (bps || ops || bpsMax || opsMax) {
            throw new CommandException("bps/iops/max total values and read/write values cannot be used at the same time");
        }
        if (opSize != 0 && avg(Bucket.OPS_TOTAL) == 0 && avg(Bucket.OPS_READ) == 0 && avg(Bucket.OPS_WRITE) == 0) {
            throw new CommandException("iops size requires an iops value to be set");
        }
        for (Bucket b : Bucket.values()) {
            long a = avg(b);
            long m = max(b);
            long len = burstLength(b);
            if (Long.compareUnsigned(a, VALUE_MAX) > 0 || Long.compareUnsigned(m, VALUE_MAX) > 0) {
                throw new CommandException("bps/iops/max values must be within [0, " + VALUE_MAX + "]");
            }
            if (len == 0) {
                throw new CommandException("the burst length cannot be 0");
            }
            if (Long.compareUnsigned(len, 1) > 0 && m == 0) {
                throw new CommandException("burst length set without burst rate");
            }
            if (m != 0 && Long.compareUnsigned(len, VALUE_MAX / m) > 0) {
                throw new CommandException("burst length too high for this burst rate");
            }
            if (m != 0 && a == 0) {
                throw new CommandException("bps_max/iops_max require corresponding bps/iops values");
            }
            if (m != 0 && m < a) {
                throw new CommandException("bps_max/iops_max cannot be lower than bps/iops");
            }
        }
    }

    /** Every {@code ThrottleLimits} member with its value, as {@code qom-get limits} shows them. */
    public Map<String, Long> toLimits() {
        Map<String, Long> out = new LinkedHashMap<>();
        for (String key : LIMITS_KEYS) {
            out.put(key, get(key));
        }
        return out;
    }

    private long get(String key) {
        if (key.equals("iops-size")) {
            return opSize;
        }
        for (Bucket b : Bucket.values()) {
            if (key.equals(b.key)) {
                return avg(b);
            }
            if (key.equals(b.key + "-max")) {
                return max(b);
            }
            if (key.equals(b.key + "-max-length")) {
                return burstLength(b);
            }
        }
        throw new IllegalArgumentException(key);
    }
}
