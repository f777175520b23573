package io.blockjobs.sdk.job;

/**
 * Changes to the graph a job makes when it finalizes ({@link JobBody#prepare}), on the daemon's
 * main loop: a header is rewritten durably first, then the graph follows. The platform records
 * each edit and undoes it if the job's transaction aborts.
 */
public interface GraphEdit {

    /**
     * Makes {@code backingNode} (or nothing, if null) the backing of {@code overlayNode}, and
     * records {@code backingFile} in the overlay's header (null: the new backing's file name,
     * as QEMU writes it). Layers left without users are closed.
     */
    void setBacking(String overlayNode, String backingNode, String backingFile);

    /**
     * As {@link #setBacking(String, String, String)}; with {@code maskProtocol} a protocol driver
     * recorded as the backing format is recorded as {@code raw} instead (QEMU's
     * {@code backing-mask-protocol}).
     */
    default void setBacking(String overlayNode, String backingNode, String backingFile, boolean maskProtocol) {
        setBacking(overlayNode, backingNode, backingFile);
    }

    /**
     * Opens the backing file that {@code overlayNode}'s header names, as a backing file is opened
     * (read-only, with its own chain), and attaches it; the header stays as it is. Nothing
     * happens if the overlay has a backing already or its header names none. QEMU's
     * {@code bdrv_open_backing_file}, as drive-mirror's {@code mode: existing} target gets its
     * backing at the switch-over.
     *
     * @throws io.blockjobs.sdk.error.CommandException with the reason if it cannot be opened
     *         (its file locked by another node, say); the overlay stays without backing
     */
    default void openBacking(String overlayNode) {
        throw new UnsupportedOperationException("this host cannot open backing files for a job");
    }

    /** Moves the users of {@code fromNode} (exports, parents) to {@code toNode}: the switch-over. */
    void replaceUsers(String fromNode, String toNode);

    /** Removes a filter put in by {@link JobSetup#trackWrites}; its users go to the node beneath it. */
    void removeFilter(String filterNodeName);

    /**
     * Gives up this job's own uses of {@code nodeName} ({@link JobSetup#use}) now, before the
     * switch-over, as QEMU's mirror drops its target's BlockBackend before it replaces the source:
     * the users moved onto the node then need not share with the job. The job does no more I/O
     * to the node through those uses.
     */
    default void dropUses(String nodeName) {
    }
}
