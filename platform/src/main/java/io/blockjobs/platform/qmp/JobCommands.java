package io.blockjobs.platform.qmp;

import io.blockjobs.platform.job.Job;
import io.blockjobs.platform.job.JobManager;
import java.util.Optional;

/**
 * The job verbs every job type shares: {@code job-*} by id (GenericError "Job not found"),
 * {@code block-job-*} by device (DeviceNotActive), and the queries.
 */
public final class JobCommands {
    private JobCommands() {
    }

    /** Arguments naming a job. */
    public record JobIdArgs(String id) {
    }

    /** Arguments naming a block job by its device (its id). */
    public record DeviceArgs(String device) {
    }

    /** {@code block-job-cancel}'s arguments. */
    public record CancelArgs(String device, Optional<Boolean> force) {
    }

    /** {@code block-job-set-speed}'s arguments. */
    public record SetSpeedArgs(String device, long speed) {
    }

    /**
     * {@code block-job-change}'s arguments, QEMU 8.2's {@code BlockJobChangeOptions}: a union on
     * {@code type} whose only branch, {@code mirror}, has {@code copy-mode}.
     */
    public record ChangeArgs(String id, String type, Optional<String> copyMode) {
    }

    public static void register(QmpDispatcher d, JobManager jobs) {
        d.register(QmpCommand.of("query-jobs", Void.class, QmpTypes.listOf(Job.JobInfo.class),
                a -> jobs.all().stream().map(Job::info).toList()));
        d.register(QmpCommand.of("query-block-jobs", Void.class, QmpTypes.listOf(Job.BlockJobInfo.class),
                a -> jobs.all().stream().filter(Job::blockJob).map(Job::blockInfo).toList()));

        d.register(QmpCommand.of("job-pause", JobIdArgs.class, null, a -> done(() -> jobs.pause(jobs.get(a.id())))));
        d.register(QmpCommand.of("job-resume", JobIdArgs.class, null, a -> done(() -> jobs.resume(jobs.get(a.id())))));
        d.register(QmpCommand.of("job-cancel", JobIdArgs.class, null, a -> done(() -> jobs.cancel(jobs.get(a.id()), true))));
        d.register(QmpCommand.of("job-complete", JobIdArgs.class, null, a -> done(() -> jobs.complete(jobs.get(a.id())))));
        d.register(QmpCommand.of("job-finalize", JobIdArgs.class, null, a -> done(() -> jobs.finalizeJob(a.id()))));
        d.register(QmpCommand.of("job-dismiss", JobIdArgs.class, null, a -> done(() -> jobs.dismiss(a.id()))));

        d.register(QmpCommand.of("block-job-pause", DeviceArgs.class, null,
                a -> done(() -> jobs.pause(jobs.getBlockJob(a.device())))));
        d.register(QmpCommand.of("block-job-resume", DeviceArgs.class, null,
                a -> done(() -> jobs.resume(jobs.getBlockJob(a.device())))));
        d.register(QmpCommand.of("block-job-complete", DeviceArgs.class, null,
                a -> done(() -> jobs.complete(jobs.getBlockJob(a.device())))));
        d.register(QmpCommand.of("block-job-cancel", CancelArgs.class, null,
                a -> done(() -> jobs.blockJobCancel(jobs.getBlockJob(a.device()), a.force().orElse(false)))));
        d.register(QmpCommand.of("block-job-set-speed", SetSpeedArgs.class, null,
                a -> done(() -> jobs.setSpeed(jobs.getBlockJob(a.device()), a.speed()))));
        d.register(QmpCommand.of("block-job-change", ChangeArgs.class, null, a -> done(() -> change(jobs, a))));
        d.register(QmpCommand.of("block-job-finalize", JobIdArgs.class, null,
                a -> done(() -> jobs.finalizeJob(jobs.getBlockJob(a.id())))));
        d.register(QmpCommand.of("block-job-dismiss", JobIdArgs.class, null,
                a -> done(() -> jobs.dismiss(jobs.getBlockJob(a.id())))));
    }

    private static void change(JobManager jobs, ChangeArgs a) {
        if (!a.type().equals("mirror")) {
            // QAPI refuses a discriminator value without a branch... JobType has more values, with no members
            if (a.copyMode().isPresent()) {
                throw new io.blockjobs.sdk.error.CommandException("Parameter 'copy-mode' is unexpected");
            }
        } else if (a.copyMode().isEmpty()) {
            throw new io.blockjobs.sdk.error.CommandException("Parameter 'copy-mode' is missing");
        } else if (!a.copyMode().get().equals("background") && !a.copyMode().get().equals("write-blocking")) {
            throw new io.blockjobs.sdk.error.CommandException("Parameter 'copy-mode' does not accept value '"
                    + a.copyMode().get() + "'");
        }
        Job job = jobs.getBlockJob(a.id());
        if (!job.type().equals(a.type())) {
            throw new io.blockjobs.sdk.error.CommandException("Job '" + a.id() + "' is of type '" + job.type()
                    + "', not '" + a.type() + "'");
        }
        java.util.Map<String, Object> options = new java.util.LinkedHashMap<>();
        a.copyMode().ifPresent(m -> options.put("copy-mode", m));
        jobs.change(job, options);
    }

    private static Object done(Runnable r) {
        r.run();
        return null;
    }
}
