package io.blockjobs.sdk.job;

import io.blockjobs.sdk.block.BlockNode;

/**
 * What a {@link JobFactory} may do while it prepares a job, on the daemon's main loop: find
 * nodes and claim them so that no other job or command changes them while the job runs.
 */
public interface JobSetup {
    /**
     * The node named {@code nodeName}, used by this job as QEMU's jobs use nodes: the job takes
     * {@code perm} on it and lets others take only {@code shared}, and no other job may use the
     * node until this one ends (QEMU's op blocker). I/O through the returned node is the job's
     * own: a drain never holds it.
     *
     * @param role how messages name the use: QEMU's {@code main node}, {@code intermediate node},
     *             {@code base}, {@code source}, {@code target}; {@code root} for an anonymous
     *             block device, as QEMU's commit uses for its base and top
     * @throws io.blockjobs.sdk.error.CommandException if there is no such node, another job uses
     *         it, or the permissions conflict with another user's (QEMU's message)
     */
    BlockNode use(String nodeName, String role, java.util.Set<io.blockjobs.sdk.block.BlockPermission> perm,
                  java.util.Set<io.blockjobs.sdk.block.BlockPermission> shared);

    /**
     * The node named {@code nodeName}, claimed for this job: read by it, and not written by
     * anyone else ({@link #use} as an {@code intermediate node} taking nothing and sharing
     * consistent read and unchanged writes).
     *
     * @throws io.blockjobs.sdk.error.CommandException if no such node exists, or another job
     *         already holds it (QEMU's op blocker)
     */
    BlockNode claim(String nodeName);

    /**
     * Claims {@code nodeName} for writing: a backing layer opened read-only is reopened
     * read-write for the job (and stays so), as QEMU's commit reopens its base. The job takes
     * consistent read and write and shares consistent read and unchanged writes.
     */
    BlockNode claimWritable(String nodeName);

    /** Reopens a node read-write for the job (QEMU's reopen), as {@link #claimWritable} does. */
    void reopenReadWrite(String nodeName);

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

    /**
     * Puts a filter node above {@code nodeName}: every parent of the node (exports, overlays)
     * except this job now goes through the filter, which shows in {@code query-named-block-nodes}.
     * Returns the filter as the job sees it; I/O through it runs its hooks. Removed by
     * {@link GraphEdit#removeFilter} (the platform also removes it if the job ends without).
     *
     * @throws io.blockjobs.sdk.error.CommandException if the name is taken or a user of the node
     *         cannot accept the filter
     */
    io.blockjobs.sdk.block.BlockNode insertFilter(String nodeName, FilterSpec filter);

    /**
     * Freezes the backing links from {@code topNode} down to {@code baseNode} (exclusive; null:
     * to the end of the chain), walking through filters, until the job ends: nothing may change
     * them meanwhile, as QEMU's {@code bdrv_freeze_backing_chain}.
     *
     * @throws io.blockjobs.sdk.error.CommandException with QEMU's message if a link is frozen
     *         already by another job, or leads to a node that may never be frozen
     */
    void freezeBackingChain(String topNode, String baseNode);

    /**
     * The dirty bitmap {@code bitmapName} of node {@code nodeName}, for this job to read, freeze
     * ({@link io.blockjobs.sdk.bitmap.DirtyBitmap#createSuccessor}) and hand back (QEMU's backup
     * {@code bitmap}): it is busy until the job ends, so no command changes or removes it
     * meanwhile. A successor the job leaves behind is reclaimed when it ends: nothing is forgotten.
     *
     * @throws io.blockjobs.sdk.error.CommandException with QEMU's message if there is no such node
     *         or bitmap, or the bitmap is busy or inconsistent
     */
    io.blockjobs.sdk.bitmap.DirtyBitmap useBitmap(String nodeName, String bitmapName);

    /**
     * A new anonymous dirty bitmap of {@code nodeName}, recording every write to the node from now
     * on, dropped when the job ends (QEMU's jobs' own bitmaps: mirror's dirty bitmap).
     *
     * @param granularity bytes per bit: a power of two, at least 512; 0 for the node's default
     *                    (its cluster size within 4 KiB to 64 KiB, else 64 KiB)
     */
    io.blockjobs.sdk.bitmap.DirtyBitmap createBitmap(String nodeName, long granularity);

    /**
     * A drain of {@code nodeName} for this job's switch-over: {@link Drain#begin()} holds off new
     * requests of every other user of the node (exports, parents) and waits for theirs in flight;
     * the job's own requests still pass. Begun on the job's thread, ended by the main loop after
     * the graph edit, as QEMU's mirror does ({@link WriteTracker#blockWrites} for a filter of
     * {@link #insertFilter}).
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no such node
     */
    default Drain drain(String nodeName) {
        throw new UnsupportedOperationException("this host cannot drain nodes for a job");
    }

    /**
     * Whether {@code nodeName} is a root node: no other node has it as a child (exports and jobs
     * are not nodes), as QEMU's {@code bdrv_is_root_node}; commands that work on a device
     * refuse other nodes with QEMU's "Need a root block node".
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no such node
     */
    default boolean isRootNode(String nodeName) {
        return true;
    }

    /**
     * Whether {@code nodeName} is {@code fromNode} itself or lies below it through filters only,
     * each step a filter's filtered child: QEMU's walk of {@code bdrv_filter_bs} in
     * {@code bdrv_recurse_can_replace}, and within one layer of {@code bdrv_chain_contains}.
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is no such node
     */
    default boolean reachesThroughFilters(String fromNode, String nodeName) {
        return fromNode.equals(nodeName);
    }

    /**
     * Refuses, with QEMU's op blocker message, a node that may not be replaced by another (QEMU's
     * {@code BLOCK_OP_TYPE_REPLACE}): the backing file of another node ("Node 'base' is busy:
     * node is used as backing hd of 'top'"), or a node a job uses.
     *
     * @throws io.blockjobs.sdk.error.CommandException if it may not be, or there is no such node
     */
    default void checkReplaceable(String nodeName) {
    }

    /**
     * Creates a new image file and opens it as a node for this job, as QEMU's {@code drive-mirror}
     * and {@code drive-backup} create their target ({@code bdrv_img_create}, then
     * {@code bdrv_open}): the file gets the {@link NewImage#format() format}, the size and, for
     * qcow2, the backing file name and format given; the node opens read-write without opening
     * a backing chain (QEMU's {@code BDRV_O_NO_BACKING}: the job's copy defines the data, and
     * {@link GraphEdit#setBacking} attaches a backing later if one is wanted).
     *
     * <p>Use the returned node's {@link io.blockjobs.sdk.block.BlockNode#nodeName() name} with
     * {@link #use} like any other. The node belongs to its users, not to the monitor: it is
     * closed when nothing uses it any more (the job ended and no export or parent was switched
     * onto it), as QEMU drops its reference; the file stays.
     *
     * @throws io.blockjobs.sdk.error.CommandException with QEMU's message if the format is
     *         unknown or cannot create images ("Unknown file format 'x'", "Format driver 'x' does
     *         not support image creation"), the node name is taken, or the file cannot be made
     */
    default io.blockjobs.sdk.block.BlockNode createImage(NewImage image) {
        throw new UnsupportedOperationException("this host cannot create images for a job");
    }

    /**
     * Opens an existing image file as a node for this job (QEMU's {@code drive-mirror} with
     * {@code mode: existing}), read-write and without its backing chain, as
     * {@link #createImage} opens a new one; closed when nothing uses it any more.
     *
     * @param format      the image's format, or null to probe it
     * @param nodeName    the node name to give it, or null for a generated one
     * @param optionsFrom the node whose cache mode and discard policy it takes (see
     *                    {@link NewImage#optionsFrom()}), or null for the defaults
     * @throws io.blockjobs.sdk.error.CommandException with QEMU's message if the file cannot be
     *         opened, the format is unknown, or the node name is taken
     */
    default io.blockjobs.sdk.block.BlockNode openImage(String filename, String format, String nodeName,
                                                       String optionsFrom) {
        throw new UnsupportedOperationException("this host cannot open images for a job");
    }
}
