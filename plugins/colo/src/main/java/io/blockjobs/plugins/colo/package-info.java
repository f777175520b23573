/**
 * COLO block replication's drivers, written against the SDK alone: {@code quorum} (QEMU's
 * {@code block/quorum.c}), whose children can be added and removed at run time with
 * {@code x-blockdev-change}, and the {@code replication} filter ({@code block/replication.c}),
 * so far its options, permissions, the primary's stages and the xen-* commands that drive them.
 */
package io.blockjobs.plugins.colo;
