package io.blockjobs.sdk.testkit;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The time a harnessed job sees: its speed limit sleeps on this clock, and a job waiting for
 * writes ({@link io.blockjobs.sdk.job.WriteTracker#awaitDirty}) times out on it. Nothing sleeps for
 * real. An auto-advancing clock (the default) moves forward by each sleep at once, so a
 * throttled run takes no real time and the time it would have taken can be read off; a manual
 * clock moves only when the test calls {@link #advance}, and a sleeping job waits for that (or
 * for a verb that wakes it: pause, cancel, a new speed).
 */
public final class FakeClock {
    private final AtomicLong now = new AtomicLong(1_000_000_000L); // not zero: slices start somewhere
    private final boolean autoAdvance;
    private final List<Runnable> listeners = new CopyOnWriteArrayList<>();

    private FakeClock(boolean autoAdvance) {
        this.autoAdvance = autoAdvance;
    }

    /** A clock that moves forward by each sleep at once. */
    public static FakeClock autoAdvancing() {
        return new FakeClock(true);
    }

    /** A clock that moves only when the test advances it. */
    public static FakeClock manual() {
        return new FakeClock(false);
    }

    /** Whether sleeps move the clock by themselves. */
    public boolean autoAdvances() {
        return autoAdvance;
    }

    /** The time now, in nanoseconds (arbitrary origin). */
    public long nanoTime() {
        return now.get();
    }

    /** Moves the clock forward; jobs sleeping on it check their deadlines. */
    public void advance(Duration by) {
        advance(by.toNanos());
    }

    /** Moves the clock forward by {@code nanos}. */
    public void advance(long nanos) {
        if (nanos < 0) {
            throw new IllegalArgumentException("time does not go back: " + nanos);
        }
        now.addAndGet(nanos);
        listeners.forEach(Runnable::run);
    }

    /** Calls {@code r} whenever the clock moves (the harness wakes sleepers with it). */
    void onAdvance(Runnable r) {
        listeners.add(r);
    }

    void removeListener(Runnable r) {
        listeners.remove(r);
    }
}
