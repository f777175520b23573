package io.blockjobs.platform.qmp;

import io.blockjobs.platform.job.Job;
import io.blockjobs.platform.job.JobManager;
import java.util.List;

/** Job commands that every job type shares: query-jobs, job-finalize, job-dismiss. */
public final class JobCommands {
    private JobCommands() {
    }

    /** Arguments naming a job. */
    public record JobIdArgs(String id) {
    }

    public static void register(QmpDispatcher d, JobManager jobs) {
        CoreCommands.declareEvent("JOB_STATUS_CHANGE", StatusChange.class);
        d.register(QmpCommand.of("query-jobs", Void.class, QmpTypes.listOf(Job.JobInfo.class),
                a -> jobs.all().stream().map(Job::info).toList()));
        d.register(QmpCommand.of("job-dismiss", JobIdArgs.class, null, a -> {
            jobs.dismiss(a.id());
            return null;
        }));
        d.register(QmpCommand.of("job-finalize", JobIdArgs.class, null, a -> {
            jobs.finalizeJob(a.id());
            return null;
        }));
    }

    /** {@code JOB_STATUS_CHANGE}'s payload. */
    public record StatusChange(String id, String status) {
    }
}
