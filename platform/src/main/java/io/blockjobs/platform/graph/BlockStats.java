package io.blockjobs.platform.graph;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * Request statistics of one node, as QEMU's {@code BlockDeviceStats} reports them: bytes and
 * operations by kind, total times, failed requests and invalid ones (refused before they ran).
 */
public final class BlockStats {

    /** The kinds QEMU accounts separately. */
    public enum Kind { READ, WRITE, FLUSH, UNMAP }

    private final LongAdder[] bytes = adders();
    private final LongAdder[] operations = adders();
    private final LongAdder[] totalNanos = adders();
    private final LongAdder[] failed = adders();
    private final LongAdder[] invalid = adders();
    private final AtomicLong highestWrite = new AtomicLong();
    private final AtomicLong lastRequestNanos = new AtomicLong(-1);

    private static LongAdder[] adders() {
        LongAdder[] a = new LongAdder[Kind.values().length];
        for (int i = 0; i < a.length; i++) {
            a[i] = new LongAdder();
        }
        return a;
    }

    /** Accounts a request that ran, from {@code startNanos} ({@link System#nanoTime()}) to now. */
    void done(Kind kind, long length, long startNanos, boolean ok) {
        long now = System.nanoTime();
        int k = kind.ordinal();
        if (ok) {
            bytes[k].add(length);
            operations[k].increment();
        } else {
            failed[k].increment();
        }
        totalNanos[k].add(now - startNanos);
        lastRequestNanos.set(now);
    }

    /** Accounts a request refused before it ran (past the end, not permitted). */
    void invalid(Kind kind) {
        invalid[kind.ordinal()].increment();
    }

    /** Notes the end of a write, for {@code wr_highest_offset}. */
    void wrote(long end) {
        highestWrite.accumulateAndGet(end, Math::max);
    }

    /** A snapshot, as QMP's {@code BlockDeviceStats} names the members. */
    public Snapshot snapshot() {
        long last = lastRequestNanos.get();
        long idle = last < 0 ? -1 : System.nanoTime() - last;
        return new Snapshot(get(bytes, Kind.READ), get(bytes, Kind.WRITE), get(bytes, Kind.UNMAP),
                get(operations, Kind.READ), get(operations, Kind.WRITE), get(operations, Kind.FLUSH),
                get(operations, Kind.UNMAP), get(totalNanos, Kind.READ), get(totalNanos, Kind.WRITE),
                get(totalNanos, Kind.FLUSH), get(totalNanos, Kind.UNMAP), get(failed, Kind.READ),
                get(failed, Kind.WRITE), get(failed, Kind.FLUSH), get(failed, Kind.UNMAP), get(invalid, Kind.READ),
                get(invalid, Kind.WRITE), get(invalid, Kind.FLUSH), get(invalid, Kind.UNMAP), highestWrite.get(), idle);
    }

    private static long get(LongAdder[] a, Kind k) {
        return a[k.ordinal()].sum();
    }

    /** The figures at one moment; {@code idleNanos} is -1 before the first request. */
    public record Snapshot(long rdBytes, long wrBytes, long unmapBytes, long rdOperations, long wrOperations,
                           long flushOperations, long unmapOperations, long rdTotalNanos, long wrTotalNanos,
                           long flushTotalNanos, long unmapTotalNanos, long failedRd, long failedWr, long failedFlush,
                           long failedUnmap, long invalidRd, long invalidWr, long invalidFlush, long invalidUnmap,
                           long wrHighestOffset, long idleNanos) {
    }
}
