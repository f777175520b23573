package io.blockjobs.sdk.driver;

import java.io.InterruptedIOException;

/**
 * A {@code throttle-group} object ({@code --object throttle-group,id=ID,limits.bps-total=...}):
 * QEMU's {@code ThrottleLimits}, shared by every {@code throttle} node that names the group.
 * Obtain it with {@link DriverContext#object}, then {@link #join} it.
 *
 * <p>As in QEMU, reads and writes queue separately, each in the order they arrive, and the
 * members of a group take turns when several have requests waiting. The {@code *-total} limits
 * count reads and writes together.
 */
public interface ThrottleGroup {

    /** The object's id. */
    String id();

    /**
     * Joins the group as one of its users (QEMU's {@code ThrottleGroupMember}), typically when a
     * {@code throttle} node opens. The group cannot be deleted ({@code object-del}) while it has
     * members. Called on the daemon's main loop.
     *
     * @param name who joins, for messages (the node's name)
     */
    Member join(String name);

    /** One user of a group: its requests are admitted through it. */
    interface Member extends AutoCloseable {

        /**
         * Waits on the calling thread until a request of {@code bytes} may go, then accounts it
         * against the group's limits. A request may start while the group's buckets are not
         * over their size; its whole size is then added, so one large request goes at once and
         * the next one waits for it. May be called from many threads at once.
         *
         * @param write whether the request writes (write, write-zeroes, discard) or reads
         * @throws InterruptedIOException if the waiting thread was interrupted before the
         *         request's turn came; it was not accounted (interrupted after it, the call
         *         returns normally with the thread's interrupt status set)
         */
        void acquire(boolean write, long bytes) throws InterruptedIOException;

        /**
         * Leaves the group (the node closes), on the daemon's main loop, once no request of the
         * member waits any more.
         */
        @Override
        void close();
    }
}
