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

    /** Moves the users of {@code fromNode} (exports, parents) to {@code toNode}: the switch-over. */
    void replaceUsers(String fromNode, String toNode);

    /** Removes a filter put in by {@link JobSetup#trackWrites}; its users go to the node beneath it. */
    void removeFilter(String filterNodeName);
}
