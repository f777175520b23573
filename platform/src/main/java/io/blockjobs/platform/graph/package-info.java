/**
 * The node graph: named nodes (QEMU's node-names), their file and backing children, the
 * backends through which exports and jobs reach a node, and the chain edits of snapshots.
 */
package io.blockjobs.platform.graph;
