package io.blockjobs.sdk.job;

/**
 * Thrown by {@link JobBody#prepare} when the job fails yet the graph edits it made stand: the
 * platform fails the job with this message and aborts the transaction without undoing them. As
 * QEMU's mirror, whose prepare switches the users over even when the target's backing file
 * cannot be opened, and whose abort after a prepare changes nothing.
 */
public final class EditsKeptException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** @param message the job's error, as {@code BLOCK_JOB_COMPLETED} reports it */
    public EditsKeptException(String message) {
        super(message);
    }
}
