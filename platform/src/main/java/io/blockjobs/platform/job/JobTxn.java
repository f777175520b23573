package io.blockjobs.platform.job;

import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * A transaction of jobs (QEMU's {@code JobTxn}): the members finalize together. A lone job has
 * one of its own. Touched only on the main loop, as QEMU touches it only under its job lock in
 * the main loop: members' runs end on their own threads, but what follows is the main loop's.
 */
final class JobTxn {
    /**
     * The members in QEMU's order, the newest first ({@code job_txn_add_job} inserts at the
     * head): they become pending, prepare, commit or abort, and announce their end in this order.
     */
    final List<Job> members;
    /** Members whose run has ended and whose completion the main loop has taken in. */
    private final Set<Job> runsEnded = new HashSet<>();
    /** A member failed or was cancelled: every member aborts. */
    boolean aborting;
    /** The members are being finalized (prepare, then commit or abort). */
    boolean finalizing;

    /** A transaction of {@code members}, given in the order they were created. */
    JobTxn(List<Job> members) {
        this.members = List.copyOf(members).reversed();
    }

    void runEnded(Job job) {
        runsEnded.add(job);
    }

    boolean hasRunEnded(Job job) {
        return runsEnded.contains(job);
    }

    boolean allRunsEnded() {
        return runsEnded.size() == members.size();
    }
}
