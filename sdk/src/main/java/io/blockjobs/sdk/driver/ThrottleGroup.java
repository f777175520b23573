package io.blockjobs.sdk.driver;

import java.io.InterruptedIOException;

/**
 * A {@code throttle-group} object ({@code --object throttle-group,id=ID,limits.bps-total=...}):
 * QEMU's {@code ThrottleLimits}, shared by every {@code throttle} node that names the group.
 * Obtain it with {@link DriverContext#object}.
 */
public interface ThrottleGroup {

    /** The object's id. */
    String id();

    /**
     * Waits until a request of {@code bytes} may go, then accounts it against the group's
     * limits; requests queue in the order they arrive.
     *
     * @param write whether the request writes (write, write-zeroes, discard) or reads
     * @throws InterruptedIOException if the waiting thread was interrupted
     */
    void acquire(boolean write, long bytes) throws InterruptedIOException;
}
