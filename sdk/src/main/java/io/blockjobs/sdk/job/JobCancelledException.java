package io.blockjobs.sdk.job;

/** Thrown from a pause point once the job is cancelled; let it propagate out of {@link JobBody#run}. */
public final class JobCancelledException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public JobCancelledException() {
        super("job cancelled", null, false, false);
    }
}
