package io.blockjobs.platform.throttle;

import java.util.PriorityQueue;
import java.util.function.BooleanSupplier;

/**
 * A clock that moves only when a test fires the next timer: throttling runs exactly on QEMU's
 * arithmetic, and a test of seconds takes microseconds.
 */
final class FakeTimebase implements Timebase {
    private record Task(long deadline, long seq, Runnable run) {
    }

    private final PriorityQueue<Task> tasks = new PriorityQueue<>((a, b) -> a.deadline != b.deadline
            ? Long.compare(a.deadline, b.deadline) : Long.compare(a.seq, b.seq));
    private long now;
    private long seq;

    @Override
    public synchronized long nanoTime() {
        return now;
    }

    @Override
    public synchronized Timer schedule(long deadline, Runnable task) {
        Task t = new Task(deadline, seq++, task);
        tasks.add(t);
        notifyAll();
        return () -> {
            synchronized (FakeTimebase.this) {
                tasks.remove(t);
            }
        };
    }

    /** Moves the clock on without firing anything (time passing between requests). */
    synchronized void advance(long nanos) {
        now += nanos;
    }

    synchronized int timers() {
        return tasks.size();
    }

    /**
     * Waits until a timer is armed or {@code done} holds (re-checked on {@link #wakeUp}); fires
     * the earliest timer, with the clock moved to its deadline, on this thread.
     *
     * @return false if {@code done} held and no timer was armed
     */
    boolean fireNext(BooleanSupplier done) throws InterruptedException {
        Task t;
        synchronized (this) {
            while (tasks.isEmpty() && !done.getAsBoolean()) {
                wait();
            }
            if (tasks.isEmpty()) {
                return false;
            }
            t = tasks.poll();
            now = Math.max(now, t.deadline);
        }
        t.run.run();
        return true;
    }

    /** Makes {@link #fireNext} look at its condition again. */
    synchronized void wakeUp() {
        notifyAll();
    }
}
