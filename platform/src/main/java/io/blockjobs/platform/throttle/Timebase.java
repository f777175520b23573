package io.blockjobs.platform.throttle;

import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * The clock and timers throttling runs on (QEMU's {@code QEMU_CLOCK_REALTIME} and its timers).
 * Tests give a fake one, whose time moves only when they say.
 */
public interface Timebase {

    /** Now, in nanoseconds, on a monotonic clock. */
    long nanoTime();

    /**
     * Runs {@code task} once at {@code deadline} (on {@link #nanoTime()}'s scale), on a thread of
     * the timebase's own; a deadline already past runs it soon, never inside this call.
     */
    Timer schedule(long deadline, Runnable task);

    /** A scheduled task. */
    interface Timer {
        /** Stops the task if it has not started. */
        void cancel();
    }

    /** {@link System#nanoTime()}, with one daemon thread that fires every group's timers. */
    Timebase SYSTEM = new Timebase() {
        private final ScheduledThreadPoolExecutor timers = create();

        private static ScheduledThreadPoolExecutor create() {
            ScheduledThreadPoolExecutor e = new ScheduledThreadPoolExecutor(1,
                    Thread.ofPlatform().daemon().name("throttle-timers").factory());
            e.setRemoveOnCancelPolicy(true);
            return e;
        }

        @Override
        public long nanoTime() {
            return System.nanoTime();
        }

        @Override
        public Timer schedule(long deadline, Runnable task) {
            ScheduledFuture<?> f = timers.schedule(task, deadline - System.nanoTime(), TimeUnit.NANOSECONDS);
            return () -> f.cancel(false);
        }
    };
}
