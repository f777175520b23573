package io.blockjobs.platform.nbd;

import io.blockjobs.platform.graph.BlockBackend;

/**
 * An export: a name clients ask for, and the backend it serves (which follows snapshots).
 *
 * @param id          the QMP export id
 * @param name        the NBD export name
 * @param description shown by {@code NBD_OPT_LIST} and {@code NBD_INFO_DESCRIPTION}, or null
 * @param backend     what requests go to
 * @param writable    whether clients may write
 */
public record NbdExport(String id, String name, String description, BlockBackend backend, boolean writable) {
}
