package io.blockjobs.sdk.job;

/**
 * Changes to the backing chain a job makes when it finalizes ({@link JobBody#commit}), on the
 * daemon's main loop: the header is rewritten durably first, then the graph follows.
 */
public interface GraphEdit {

    /**
     * Makes {@code backingNode} (or nothing, if null) the backing of {@code overlayNode}, and
     * records {@code backingFile} in the overlay's header (null: the new backing's file name,
     * as QEMU writes it). Layers left without users are closed.
     */
    void setBacking(String overlayNode, String backingNode, String backingFile);
}
