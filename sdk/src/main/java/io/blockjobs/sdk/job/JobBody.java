package io.blockjobs.sdk.job;

/**
 * The work of one job. {@link #run} is called once, on the job's own virtual thread; it should
 * call {@link JobContext#pausePoint()} between chunks of work so that pause, cancel and speed
 * take effect, and return when the work is done.
 */
public interface JobBody {

    /**
     * Does the job's work. Returning normally completes the job; throwing fails it with the
     * exception's message; {@link JobCancelledException} (from a pause point) ends a cancelled job.
     */
    void run(JobContext ctx) throws Exception;

    /**
     * Whether the job accepts {@code job-complete} once it has called {@link JobContext#ready()}.
     * Jobs that converge (mirror, active commit) say true.
     */
    default boolean completable() {
        return false;
    }

    /**
     * Called once the job's work is done and it is being finalized (QEMU's {@code .prepare}),
     * on the daemon's main loop: change the chain here. Throwing fails the job.
     */
    default void commit(GraphEdit edit) throws Exception {
    }

    /**
     * Called instead of {@link #commit} when the job failed or was cancelled (also by a soft
     * cancel after {@code ready}), on the main loop: undo graph changes such as filters.
     */
    default void abort(GraphEdit edit) {
    }
}
