/**
 * The backup plugin: QMP {@code blockdev-backup} and {@code drive-backup} (point-in-time copies
 * of live disks, full or from a dirty bitmap), and the block drivers {@code copy-before-write}
 * and {@code snapshot-access} behind them and behind pull-mode backups over NBD (fleecing), as
 * QEMU's {@code block/backup.c}, {@code block/block-copy.c}, {@code block/copy-before-write.c}
 * and {@code block/snapshot-access.c}.
 */
package io.blockjobs.plugins.backup;
