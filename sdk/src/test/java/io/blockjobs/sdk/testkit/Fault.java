package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A failure injected into a {@link MemoryNode}: requests of one kind that cover an offset fail
 * with an {@link Errno}, once or every time, as a failing disk (or QEMU's {@code blkdebug})
 * would make them. Write faults hit every request that changes data: write, write-zeroes,
 * discard, copy-on-read writes and unallocate.
 */
public final class Fault {

    /** Which requests fail. */
    public enum Kind {
        /** Reads of the node (also those made through an overlay above it). */
        READ,
        /** Requests that change the node's data. */
        WRITE
    }

    private final String node;
    private final Kind kind;
    private final long offset;
    private final Errno errno;
    private final boolean once;
    private final AtomicInteger hits = new AtomicInteger();
    private volatile boolean removed;

    Fault(String node, Kind kind, long offset, Errno errno, boolean once) {
        this.node = node;
        this.kind = kind;
        this.offset = offset;
        this.errno = errno;
        this.once = once;
    }

    /** Which requests fail. */
    public Kind kind() {
        return kind;
    }

    /** The offset a failing request covers. */
    public long offset() {
        return offset;
    }

    /** The error number the requests fail with. */
    public Errno errno() {
        return errno;
    }

    /** Whether only the first matching request fails. */
    public boolean once() {
        return once;
    }

    /** How many requests failed because of this fault so far. */
    public int hits() {
        return hits.get();
    }

    /** Stops failing requests. */
    public void remove() {
        removed = true;
    }

    /** Whether the fault can still fail a request. */
    public boolean active() {
        return !removed && !(once && hits.get() > 0);
    }

    /** Throws if a request of {@code k} over {@code [from, from + length)} is to fail. */
    void check(Kind k, long from, long length) throws BlockIoException {
        if (k != kind || removed || offset < from || offset >= from + Math.max(length, 1)) {
            return;
        }
        if (once) {
            if (!hits.compareAndSet(0, 1)) {
                return;
            }
        } else {
            hits.incrementAndGet();
        }
        throw new BlockIoException(errno, node + ": " + errno.message() + " (injected "
                + kind.name().toLowerCase(java.util.Locale.ROOT) + " fault at offset " + offset + ")");
    }

    @Override
    public String toString() {
        return kind + " fault on " + node + " at " + offset + " (" + errno + (once ? ", once" : "") + ")";
    }
}
