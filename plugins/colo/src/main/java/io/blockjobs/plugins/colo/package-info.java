/**
 * COLO block replication's drivers, written against the SDK alone: {@code quorum} (QEMU's
 * {@code block/quorum.c}), whose children can be added and removed at run time with
 * {@code x-blockdev-change}.
 */
package io.blockjobs.plugins.colo;
