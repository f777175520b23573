package io.blockjobs.sdk.job;

/** QEMU's {@code BlockdevOnError}: what a job does when an I/O request fails. */
public enum OnError {
    /** The job fails with the error. */
    REPORT,
    /** The error is announced ({@code BLOCK_JOB_ERROR}) and the job goes on. */
    IGNORE,
    /** The job pauses (io-status failed or nospace) until {@code job-resume}, then retries. */
    STOP,
    /** Stop on "no space left", report anything else. */
    ENOSPC,
    /** As {@link #ENOSPC} for jobs. */
    AUTO
}
