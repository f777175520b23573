package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.ErrorAction;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The copier a harnessed job gets, built as the platform's: a fixed set of buffers allocated once,
 * each lent to one copy running on a virtual thread of its own. The job's thread hands copies over
 * and meets their failures, to which it applies the job's error policy; copies that failed
 * together share one decision. A pause waits for the copies in flight.
 */
final class HarnessCopier implements Copier {

    /** One copy handed over. */
    private record Op(long offset, int length, Read read, Write write) {
    }

    /** A copy that failed, and in which half. */
    private record Failure(Op op, IOException error, boolean reading) {
    }

    private final HarnessJob job;
    private final int bufferSize;
    private final int capacity;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final ArrayDeque<ByteBuffer> free = new ArrayDeque<>();
    private final List<Failure> failures = new ArrayList<>();
    private int inFlight;
    private int mostInFlight;
    private long copies;
    private IOException ignored;
    private boolean closed;

    HarnessCopier(HarnessJob job, int maxInFlight, int bufferSize) {
        if (maxInFlight < 1 || bufferSize < 1) {
            throw new IllegalArgumentException("a copier needs at least one buffer of at least one byte");
        }
        this.job = job;
        this.bufferSize = bufferSize;
        this.capacity = maxInFlight;
        for (int i = 0; i < maxInFlight; i++) {
            free.add(ByteBuffer.allocate(bufferSize));
        }
    }

    @Override
    public void copy(long offset, int length, Read read, Write write) throws IOException {
        job.checkJobThread("Copier.copy");
        if (length > bufferSize && read != null) {
            throw new IllegalArgumentException("copy of " + length + " bytes exceeds the copier's " + bufferSize);
        }
        Op op = new Op(offset, length, read, write);
        ByteBuffer buffer;
        while (true) {
            handleFailures();
            lock.lock();
            try {
                if (closed) {
                    throw new IllegalStateException("the copier is closed");
                }
                if (failures.isEmpty() && !free.isEmpty()) {
                    buffer = free.removeFirst();
                    inFlight++;
                    break;
                }
                if (failures.isEmpty()) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                lock.unlock();
            }
        }
        submit(op, buffer);
    }

    private void submit(Op op, ByteBuffer buffer) {
        lock.lock();
        try {
            mostInFlight = Math.max(mostInFlight, inFlight);
            copies++;
        } finally {
            lock.unlock();
        }
        Thread.ofVirtual().name("copier-" + job.id()).start(() -> {
            Failure failure = run(op, buffer);
            lock.lock();
            try {
                free.addLast(buffer);
                inFlight--;
                if (failure != null) {
                    failures.add(failure);
                }
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        });
    }

    private static Failure run(Op op, ByteBuffer buffer) {
        buffer.clear().limit(Math.min(op.length(), buffer.capacity()));
        boolean reading = op.read() != null;
        try {
            if (reading) {
                op.read().read(op.offset(), buffer);
                buffer.flip();
            }
            reading = false;
            op.write().write(op.offset(), buffer);
            return null;
        } catch (IOException e) {
            return new Failure(op, e, reading);
        } catch (RuntimeException e) {
            return new Failure(op, new IOException(e.toString(), e), reading);
        }
    }

    /**
     * Applies the error policy to failed copies on the job's thread, once the rest settled: one
     * decision (and one {@code BLOCK_JOB_ERROR}) for the copies that failed together; a stop
     * pauses the job once and its resume retries them all.
     */
    private void handleFailures() throws IOException {
        while (true) {
            lock.lock();
            try {
                if (failures.isEmpty()) {
                    return;
                }
            } finally {
                lock.unlock();
            }
            awaitIdle(); // a stop pauses the job, and nothing may be in flight then
            List<Failure> batch;
            lock.lock();
            try {
                batch = new ArrayList<>(failures);
                failures.clear();
            } finally {
                lock.unlock();
            }
            Failure first = batch.get(0);
            ErrorAction action = job.applyErrorPolicy(first.error(), first.reading());
            for (Failure f : batch) {
                if (action == ErrorAction.RETRY) {
                    ByteBuffer buffer;
                    lock.lock();
                    try {
                        while (free.isEmpty()) {
                            changed.awaitUninterruptibly();
                        }
                        buffer = free.removeFirst();
                        inFlight++;
                    } finally {
                        lock.unlock();
                    }
                    submit(f.op(), buffer);
                } else if (ignored == null) {
                    ignored = f.error();
                }
            }
        }
    }

    @Override
    public void drain() throws IOException {
        job.checkJobThread("Copier.drain");
        while (true) {
            awaitIdle();
            handleFailures();
            lock.lock();
            try {
                if (inFlight == 0 && failures.isEmpty()) {
                    return;
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /** Waits until no copy is in flight (failures stay for the job's thread). */
    void awaitIdle() {
        lock.lock();
        try {
            while (inFlight > 0) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public IOException ignoredError() {
        return ignored;
    }

    /** Copies handed over and not finished. */
    int inFlight() {
        lock.lock();
        try {
            return inFlight;
        } finally {
            lock.unlock();
        }
    }

    /** The most copies that were in flight at once. */
    int mostInFlight() {
        lock.lock();
        try {
            return mostInFlight;
        } finally {
            lock.unlock();
        }
    }

    int capacity() {
        return capacity;
    }

    boolean closed() {
        lock.lock();
        try {
            return closed;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void close() {
        awaitIdle();
        lock.lock();
        try {
            closed = true;
            free.clear();
            failures.clear();
        } finally {
            lock.unlock();
        }
        job.forget(this);
    }
}
