package io.blockjobs.platform.job;

import io.blockjobs.platform.event.EventBus;
import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry of jobs. Each job's body runs on its own virtual thread; the manager walks it
 * through QEMU's states (created, running, waiting, pending, concluded, or aborting on failure)
 * and keeps it until it is dismissed.
 */
public final class JobManager implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(JobManager.class);

    /** A job's work; throws to fail the job with the exception's message. */
    @FunctionalInterface
    public interface Body {
        void run(Job job) throws Exception;
    }

    private final EventBus events;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final ExecutorService threads = Executors.newVirtualThreadPerTaskExecutor();

    public JobManager(EventBus events) {
        this.events = events;
    }

    /**
     * Creates and starts a job that runs {@code body} to its end (a job that needs no
     * {@code job-complete}, like {@code blockdev-create}).
     */
    public Job start(String id, String type, boolean autoFinalize, boolean autoDismiss, Body body) {
        Job job;
        synchronized (this) {
            if (id == null || id.isEmpty()) {
                throw new CommandException("Invalid job ID ''");
            }
            if (jobs.containsKey(id)) {
                throw new CommandException("Job ID '" + id + "' already in use");
            }
            job = new Job(id, type, events, autoFinalize, autoDismiss);
            jobs.put(id, job);
        }
        job.transition(JobStatus.CREATED);
        job.transition(JobStatus.RUNNING);
        threads.submit(() -> runToEnd(job, body));
        return job;
    }

    private void runToEnd(Job job, Body body) {
        try {
            body.run(job);
            job.transition(JobStatus.WAITING);
            job.transition(JobStatus.PENDING);
            if (job.autoFinalize()) {
                conclude(job);
            }
        } catch (Exception | Error e) {
            LOG.info("job {} failed: {}", job.id(), e.getMessage());
            job.fail(e.getMessage() == null ? e.toString() : e.getMessage());
            job.transition(JobStatus.ABORTING);
            conclude(job);
        }
    }

    private void conclude(Job job) {
        job.transition(JobStatus.CONCLUDED);
        if (job.autoDismiss()) {
            dismiss(job);
        }
    }

    /** QMP {@code job-finalize}. */
    public void finalizeJob(String id) {
        Job job = get(id);
        job.checkVerb(JobVerb.FINALIZE);
        conclude(job);
    }

    /** QMP {@code job-dismiss}. */
    public void dismiss(String id) {
        Job job = get(id);
        job.checkVerb(JobVerb.DISMISS);
        dismiss(job);
    }

    private void dismiss(Job job) {
        job.transition(JobStatus.NULL);
        synchronized (this) {
            jobs.remove(job.id());
        }
    }

    /** The job with {@code id}, or QEMU's "Job not found". */
    public synchronized Job get(String id) {
        Job job = jobs.get(id);
        if (job == null) {
            throw new CommandException("Job not found");
        }
        return job;
    }

    /** Every job, in creation order. */
    public synchronized List<Job> all() {
        return new ArrayList<>(jobs.values());
    }

    @Override
    public void close() {
        threads.shutdownNow();
    }
}
