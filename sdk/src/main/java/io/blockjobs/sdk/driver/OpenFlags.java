package io.blockjobs.sdk.driver;

/**
 * The generic node options a driver acts on itself (QEMU's {@code BDRV_O_*} open flags).
 *
 * @param readOnly     open read-only
 * @param autoReadOnly open read-only instead of failing when the storage cannot be written
 * @param forceShare   take no locks that keep other users out
 * @param cacheDirect  bypass the host page cache ({@code O_DIRECT})
 */
public record OpenFlags(boolean readOnly, boolean autoReadOnly, boolean forceShare, boolean cacheDirect) {
}
