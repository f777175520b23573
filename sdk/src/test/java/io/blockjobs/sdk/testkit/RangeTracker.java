package io.blockjobs.sdk.testkit;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The requests in flight on one test node, by range, as the platform tracks them (QEMU's tracked
 * requests): a request waits, before it starts, for overlapping serialising requests; a
 * serialising request waits for every overlapping request that started before it and holds
 * later overlapping ones off until it ends.
 */
final class RangeTracker {

    /** One request in flight. */
    static final class Tracked {
        final long offset;
        final long end;
        final boolean serialising;

        Tracked(long offset, long end, boolean serialising) {
            this.offset = offset;
            this.end = end;
            this.serialising = serialising;
        }

        boolean overlaps(long o, long e) {
            return offset < e && o < end;
        }
    }

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition ended = lock.newCondition();
    private final List<Tracked> inFlight = new ArrayList<>();
    private int serialisingCount;

    /** Starts a request over {@code [offset, offset + length)}, after the waits above. */
    Tracked begin(long offset, long length, boolean serialising) {
        Tracked t = new Tracked(offset, offset + Math.max(length, 1), serialising);
        lock.lock();
        try {
            if (serialising) {
                serialisingCount++;
                inFlight.add(t); // visible at once: later overlapping requests wait for it
                while (overlapsOlder(t)) {
                    ended.awaitUninterruptibly();
                }
            } else {
                while (serialisingCount > 0 && overlapsSerialising(t)) {
                    ended.awaitUninterruptibly();
                }
                inFlight.add(t);
            }
            return t;
        } finally {
            lock.unlock();
        }
    }

    /** Ends a request: waiting requests check again. */
    void end(Tracked t) {
        lock.lock();
        try {
            inFlight.remove(t);
            if (t.serialising) {
                serialisingCount--;
            }
            ended.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Requests in flight now. */
    int inFlight() {
        lock.lock();
        try {
            return inFlight.size();
        } finally {
            lock.unlock();
        }
    }

    private boolean overlapsSerialising(Tracked t) {
        for (Tracked other : inFlight) {
            if (other.serialising && other.overlaps(t.offset, t.end)) {
                return true;
            }
        }
        return false;
    }

    /** Whether a request that started before {@code t} overlaps it (the list is in start order). */
    private boolean overlapsOlder(Tracked t) {
        for (Tracked other : inFlight) {
            if (other == t) {
                return false;
            }
            if (other.overlaps(t.offset, t.end)) {
                return true;
            }
        }
        return false;
    }
}
