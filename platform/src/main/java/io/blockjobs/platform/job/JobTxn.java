package io.blockjobs.platform.job;

import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * A transaction of jobs (QEMU's {@code JobTxn}): the members finalize together. A lone job has
 * one of its own. Guarded by its own monitor.
 */
final class JobTxn {
    final List<Job> members;
    private final Set<Job> runsEnded = new HashSet<>();
    /** A member failed or was cancelled: every member aborts. */
    boolean aborting;
    /** The members are being finalized (prepare, then commit or abort). */
    boolean finalizing;

    JobTxn(List<Job> members) {
        this.members = List.copyOf(members);
    }

    synchronized void runEnded(Job job) {
        runsEnded.add(job);
        notifyAll();
    }

    synchronized boolean hasRunEnded(Job job) {
        return runsEnded.contains(job);
    }

    synchronized boolean allRunsEnded() {
        return runsEnded.size() == members.size();
    }

    /** Waits until every member's run has ended (cancelled members reach a pause point first). */
    synchronized void awaitAllRunsEnded() {
        while (runsEnded.size() < members.size()) {
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }
}
