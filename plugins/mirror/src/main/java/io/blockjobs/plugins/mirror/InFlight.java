package io.blockjobs.plugins.mirror;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The ranges a mirror is working on, by whole granules: QEMU's {@code ops_in_flight} with its
 * {@code in_flight_bitmap}. A copy of the job and a client write through the job's filter each
 * hold their granules while they run; one that overlaps waits until the other is done, so a
 * copy that read old data never lands on the target after a newer write, and a client's write
 * waits for a copy over its range, as QEMU's {@code mirror_wait_on_conflicts}.
 */
final class InFlight {

    /** Granules {@code [first, end)} held by one operation; close once. */
    final class Held implements AutoCloseable {
        private final long first;
        private final long end;
        private final long bytes;

        private Held(long first, long end, long bytes) {
            this.first = first;
            this.end = end;
            this.bytes = bytes;
        }

        @Override
        public void close() {
            lock.lock();
            try {
                held.remove(this);
                heldBytes -= bytes;
                freed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    private final long granularity;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition freed = lock.newCondition();
    private final List<Held> held = new ArrayList<>();
    private long heldBytes;

    InFlight(long granularity) {
        this.granularity = granularity;
    }

    /**
     * Waits until no operation holds a granule of {@code [offset, offset + length)}, then holds
     * them all; {@code bytes} counts as in flight meanwhile (0 for a client write).
     */
    Held acquire(long offset, long length, long bytes) {
        long first = offset / granularity;
        long end = (offset + Math.max(1, length) + granularity - 1) / granularity;
        lock.lock();
        try {
            while (overlaps(first, end)) {
                freed.awaitUninterruptibly();
            }
            Held h = new Held(first, end, bytes);
            held.add(h);
            heldBytes += bytes;
            return h;
        } finally {
            lock.unlock();
        }
    }

    private boolean overlaps(long first, long end) {
        for (Held h : held) {
            if (h.first < end && first < h.end) {
                return true;
            }
        }
        return false;
    }

    /** The bytes the job's copies hold now. */
    long bytes() {
        lock.lock();
        try {
            return heldBytes;
        } finally {
            lock.unlock();
        }
    }
}
