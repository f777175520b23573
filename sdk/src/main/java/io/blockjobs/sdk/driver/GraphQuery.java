package io.blockjobs.sdk.driver;

/**
 * Questions about the daemon's block graph, by node name, for a driver whose checks reach past
 * its own children (replication checks its {@code top-id} and the secondary disk's users when
 * replication starts). The answers are those of the moment of asking. Each takes the graph's
 * lock: do not ask while holding a lock that the node's {@code close} takes, since the graph
 * closes nodes under its lock.
 */
public interface GraphQuery {

    /**
     * QEMU's {@code bdrv_lookup_bs(name, name)}: the node-name of the node {@code name} names,
     * or null when none does.
     */
    String lookup(String name);

    /**
     * QEMU's {@code bdrv_is_root_node}: every user of this node is a block backend (an export, or a
     * job's own reader or writer); no node has it as a child, and no job holds it as a node it
     * works on (a job's {@code main node}, {@code target} or {@code intermediate node}).
     */
    boolean isRoot(String nodeName);

    /** QEMU's {@code check_top_bs}: whether {@code nodeName} is {@code top} or one of its children, at any depth. */
    boolean reaches(String top, String nodeName);

    /**
     * QEMU's {@code bdrv_has_blk}: whether a block backend uses this node (an export, or a job's
     * own reader or writer, as a mirror's of its target); a job's edge to a node it works on
     * alone (a backup's target) is none.
     */
    boolean hasUser(String nodeName);
}
