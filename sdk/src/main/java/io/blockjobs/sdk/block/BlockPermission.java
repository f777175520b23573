package io.blockjobs.sdk.block;

/**
 * QEMU's block permissions ({@code BlockPermission}): what a user of a node takes, and what it
 * lets other users take. A job declares them when it uses a node ({@link
 * io.blockjobs.sdk.job.JobSetup#use}); a conflict with another user refuses the job with QEMU's
 * message.
 */
public enum BlockPermission {
    /** What is read is what the guest would read: nobody changes the data behind the reader. */
    CONSISTENT_READ,
    /** Writes that change the data. */
    WRITE,
    /** Writes that leave the data as it reads (copy-on-read). */
    WRITE_UNCHANGED,
    /** Changing the node's size. */
    RESIZE
}
