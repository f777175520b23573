package io.blockjobs.sdk.testkit;

import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A read held in flight ({@link MemoryNode#stallRead}): the next read of the node that covers an
 * offset has read its data and then waits until the test releases it, so a test can make
 * something happen exactly while the read is in flight (a client's write to the same range). A
 * stall never released lets the read go after a minute.
 */
public final class Stall {
    private static final Duration LIMIT = Duration.ofSeconds(60);

    private final long offset;
    private final CountDownLatch stalled = new CountDownLatch(1);
    private final CountDownLatch released = new CountDownLatch(1);

    Stall(long offset) {
        this.offset = offset;
    }

    /** The offset the held read covers. */
    public long offset() {
        return offset;
    }

    /** Waits until a read is held. */
    public void awaitStalled() {
        try {
            if (!stalled.await(LIMIT.toSeconds(), TimeUnit.SECONDS)) {
                throw new AssertionError("no read covering offset " + offset + " came in " + LIMIT.toSeconds() + " s");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted waiting for a stalled read");
        }
    }

    /** Whether a read is held (or was). */
    public boolean hit() {
        return stalled.getCount() == 0;
    }

    /** Lets the held read return. */
    public void release() {
        released.countDown();
    }

    /** Holds the calling read, once; called by the node. */
    void hold() {
        stalled.countDown();
        try {
            released.await(LIMIT.toSeconds(), TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
