/**
 * The {@code mirror} job: QMP {@code blockdev-mirror} and {@code drive-mirror}, and the same loop
 * for an active {@code block-commit} ({@link io.blockjobs.plugins.mirror.ActiveCommit}, the one
 * class other plugins use).
 */
package io.blockjobs.plugins.mirror;
