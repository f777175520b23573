package io.blockjobs.sdk.job;

import io.blockjobs.sdk.block.BlockNode;

/**
 * What a {@link JobFactory} may do while it prepares a job, on the daemon's main loop: find
 * nodes and claim them so that no other job or command changes them while the job runs.
 */
public interface JobSetup {
    /**
     * The node named {@code nodeName}, claimed for this job.
     *
     * @throws io.blockjobs.sdk.error.CommandException if no such node exists, or another job
     *         already holds it (QEMU's op blocker)
     */
    BlockNode claim(String nodeName);

    /**
     * Claims {@code nodeName} for writing: a backing layer opened read-only is reopened
     * read-write for the job (and stays so), as QEMU's commit reopens its base.
     */
    BlockNode claimWritable(String nodeName);

    /**
     * The backing chain from {@code nodeName} down, the node itself first.
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no such node
     */
    java.util.List<ChainLink> chain(String nodeName);

    /**
     * Puts a filter above {@code nodeName} that records every client write; exports and other
     * users of the node now go through it. Removed by {@link GraphEdit#removeFilter}.
     *
     * @param filterNodeName the filter's node name, or null for a generated one
     */
    WriteTracker trackWrites(String nodeName, String filterNodeName);
}
