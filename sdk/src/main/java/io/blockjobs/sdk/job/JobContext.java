package io.blockjobs.sdk.job;

import java.io.IOException;
import org.slf4j.Logger;

/**
 * The platform's side of a running job, handed to {@link JobBody#run}. All methods are called
 * on the job's own thread, except {@link #id()}, which any thread may call.
 */
public interface JobContext {

    /** The job's id. */
    String id();

    /**
     * Where pause, cancel and the speed limit take effect: blocks while the job is paused;
     * throws {@link JobCancelledException} once it is cancelled.
     */
    void pausePoint();

    /**
     * Accounts {@code bytes} of work against the speed limit and sleeps as QEMU's rate limiter
     * does (in 100 ms slices), then reaches a pause point.
     */
    void throttle(long bytes);

    /** Reports progress: {@code done} of {@code total} (any unit; only the ratio matters). */
    void progress(long done, long total);

    /** Announces that the job has converged ({@code BLOCK_JOB_READY}); only for completable jobs. */
    void ready();

    /** True once {@code job-complete} was accepted: a converged job should finish now. */
    boolean completeRequested();

    /**
     * Applies the job's {@code on-error} policy to a failed request: returns what to do, or
     * rethrows {@code error} when the policy is to report it.
     *
     * @param read whether the failed request was a read (else a write)
     */
    ErrorAction onIoError(IOException error, boolean read) throws IOException;

    /**
     * A copier with up to {@code maxInFlight} copies at once, each of at most {@code bufferSize}
     * bytes; its buffers are allocated once. Close it before {@link JobBody#run} returns.
     */
    Copier copier(int maxInFlight, int bufferSize);

    /** A logger named after the job. */
    Logger log();

    /**
     * Waits as a converged job waits for clients' writes (QEMU's {@code job_sleep_ns}): up to
     * {@code millis} on the job's clock, and not busy meanwhile; a {@link #wake} (since the last
     * sleep began), {@code job-complete}, a cancel or a pause ends it at once. Reach a
     * {@link #pausePoint} after it.
     */
    default void sleep(long millis) {
        throw new UnsupportedOperationException("this host cannot put a job to sleep");
    }

    /**
     * Ends the job's current {@link #sleep}, or its next one if it is not sleeping (QEMU's
     * {@code job_enter}): a converged job's filter calls it when a client writes. Any thread.
     */
    default void wake() {
    }
}
