package io.blockjobs.sdk.job;

/**
 * A drain a job may begin on a node ({@link JobSetup#drain}): QEMU's drained section, begun on
 * the job's thread and ended on whichever thread closes it.
 */
@FunctionalInterface
public interface Drain {

    /**
     * Holds off new requests of the node's other users and waits for those in flight; they go on
     * when the returned handle is closed (once, on any thread). Drains nest.
     */
    AutoCloseable begin();
}
