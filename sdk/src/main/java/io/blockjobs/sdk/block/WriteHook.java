package io.blockjobs.sdk.block;

import java.io.IOException;

/**
 * Code run around every write, write-zeroes and discard that reaches a node, whatever path the
 * request came by (an export, a job, a workflow, a filter above). Hooks run in the order they
 * were added, on the thread of the request, while the request is tracked as in flight.
 *
 * <p>{@link #before} may fail the write by throwing ({@code break-guest-write}), or record its
 * own failure and return normally so that the write goes on ({@code break-snapshot}).
 * {@link #after} sees every request that {@code before} let pass, with its outcome; it must not
 * throw.
 */
public interface WriteHook {

    /** Runs before the request reaches the node's driver; throwing fails the request. */
    default void before(WriteRequest request) throws IOException {
    }

    /**
     * Runs after the driver returned.
     *
     * @param succeeded whether the request succeeded
     */
    default void after(WriteRequest request, boolean succeeded) {
    }
}
