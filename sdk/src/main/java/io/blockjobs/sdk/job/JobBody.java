package io.blockjobs.sdk.job;

import io.blockjobs.sdk.error.CommandException;
import java.util.Map;

/**
 * The work of one job, with QEMU's job driver hooks ({@code job.c}, {@code blockjob.c}).
 *
 * <p>{@link #run} is called once, on the job's own virtual thread; it should call
 * {@link JobContext#pausePoint()} between chunks of work so that pause, cancel and speed take
 * effect, and return when the work is done. Then the job's transaction finalizes: every member's
 * {@link #prepare} runs; if all succeed every member's {@link #commit} runs, otherwise (or when
 * the job failed or was cancelled) every member's {@link #abort}; {@link #clean} runs last in
 * both cases. These four run on the daemon's main loop, one job at a time.
 *
 * <p>Every hook but {@link #run} has a default, so a job overrides only what it needs.
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
     * QEMU's {@code .prepare}: make the job's graph changes (drop layers, switch users over).
     * Edits made through {@code edit} are undone if another member of the transaction fails to
     * prepare. Throwing fails the job and aborts the transaction.
     */
    default void prepare(GraphEdit edit) throws Exception {
    }

    /**
     * QEMU's {@code .commit}: every member prepared; make the result final. Should not fail (a
     * failure is logged; the graph changes stand).
     */
    default void commit(GraphEdit edit) throws Exception {
    }

    /**
     * QEMU's {@code .abort}: the job failed, was cancelled, or another member of its transaction
     * failed: undo graph changes such as filters. Also called after a soft cancel of a ready job.
     */
    default void abort(GraphEdit edit) {
    }

    /** QEMU's {@code .clean}: release what the job holds, after commit or abort. */
    default void clean() {
    }

    /**
     * {@code job-complete}, on the main loop, once the job is ready: the default accepts it if
     * the job is {@link #completable()} and refuses it with QEMU's message otherwise.
     *
     * @throws CommandException to refuse
     */
    default void complete(JobContext ctx) {
        if (!completable()) {
            throw new CommandException("The active block job '" + ctx.id() + "' cannot be completed");
        }
    }

    /**
     * A cancel request, on the main loop (QEMU's {@code .cancel}). Returns whether the cancel is
     * forced; a ready job that returns false finishes as completed without switching over (a
     * mirror's soft cancel). The default keeps the caller's choice.
     */
    default boolean cancel(boolean force) {
        return force;
    }

    /** Called on the job's thread when it is about to pause, after its work in flight settled. */
    default void pause() {
    }

    /** Called on the job's thread when it resumes from a pause. */
    default void resume() {
    }

    /**
     * How far a converging job is from its target, for {@code query-block-jobs}; empty for jobs
     * that do not converge (the default). May be called on any thread, while the job runs.
     */
    default java.util.Optional<Convergence> convergence() {
        return java.util.Optional.empty();
    }

    /**
     * {@code block-job-change}: new values for the job's options, on the main loop.
     *
     * @throws CommandException if the job does not support the change (the default)
     */
    default void change(Map<String, Object> options) {
        throw new CommandException("This job type does not support changing its options");
    }
}
