package io.blockjobs.platform.job;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.sdk.error.CommandException;
import tools.jackson.databind.node.ObjectNode;

/**
 * One job and its place in QEMU's state machine. The runtime drives it; every change of status
 * is checked against {@link JobStatus#canBecome} and announced as {@code JOB_STATUS_CHANGE}.
 */
public final class Job {
    private final String id;
    private final String type;
    private final EventBus events;
    private final boolean autoFinalize;
    private final boolean autoDismiss;
    private JobStatus status = JobStatus.UNDEFINED;
    private long progressCurrent;
    private long progressTotal;
    private String error;

    Job(String id, String type, EventBus events, boolean autoFinalize, boolean autoDismiss) {
        this.id = id;
        this.type = type;
        this.events = events;
        this.autoFinalize = autoFinalize;
        this.autoDismiss = autoDismiss;
    }

    public String id() {
        return id;
    }

    public String type() {
        return type;
    }

    public synchronized JobStatus status() {
        return status;
    }

    public synchronized String error() {
        return error;
    }

    public boolean autoFinalize() {
        return autoFinalize;
    }

    public boolean autoDismiss() {
        return autoDismiss;
    }

    synchronized void transition(JobStatus next) {
        if (!status.canBecome(next)) {
            throw new IllegalStateException("job " + id + ": " + status + " cannot become " + next);
        }
        status = next;
        ObjectNode data = Json.object().put("status", next.qmpName()).put("id", id);
        events.publish("JOB_STATUS_CHANGE", data);
    }

    /** Throws QEMU's error if this job does not accept {@code verb} now. */
    synchronized void checkVerb(JobVerb verb) {
        if (!verb.allowedIn(status)) {
            throw new CommandException("Job '" + id + "' in state '" + status.qmpName()
                    + "' cannot accept command verb '" + verb.qmpName() + "'");
        }
    }

    synchronized void progress(long current, long total) {
        progressCurrent = current;
        progressTotal = total;
    }

    synchronized void fail(String message) {
        error = message;
    }

    /** QMP's {@code JobInfo}. */
    public synchronized JobInfo info() {
        return new JobInfo(id, type, status, progressCurrent, progressTotal, error);
    }

    /** QMP's {@code JobInfo} record. */
    public record JobInfo(String id, String type, JobStatus status, long currentProgress, long totalProgress,
                          String error) {
    }
}
