package io.blockjobs.sdk.job;

import java.util.List;

/**
 * Records the writes clients make to a node while a job runs (QEMU's mirror_top/commit_top
 * filter with its dirty bitmap), for jobs that converge: mirror and active commit.
 */
public interface WriteTracker {

    /** A written range, aligned to the tracker's granularity. */
    record Range(long offset, long length) {
    }

    /** The node name of the filter that clients now write through. */
    String filterNodeName();

    /** The ranges written since the last call, merged; they are forgotten. */
    List<Range> takeDirty();

    /** Waits up to {@code millis} for a write to be recorded; true if one is pending. */
    boolean awaitDirty(long millis) throws InterruptedException;

    /**
     * Holds off new client requests and waits for those in flight, until closed (a drain, for
     * the switch-over). The job's own requests still pass. Any thread may close it, once: the
     * job's thread begins it for the last copy, the main loop ends it after the switch-over.
     */
    AutoCloseable blockWrites();
}
