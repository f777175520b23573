package io.blockjobs.sdk.job;

/** What a job's body does after {@link JobContext#onIoError}: the platform decided by policy. */
public enum ErrorAction {
    /** Try the same request again (the job was stopped and resumed). */
    RETRY,
    /** Skip the failed request and go on. */
    IGNORE
}
