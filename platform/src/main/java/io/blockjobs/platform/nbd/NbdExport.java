package io.blockjobs.platform.nbd;

import io.blockjobs.platform.graph.Edge;

/**
 * An export: a name clients ask for, and the backend it serves (which follows snapshots).
 *
 * @param id          the QMP export id
 * @param name        the NBD export name
 * @param description shown by {@code NBD_OPT_LIST} and {@code NBD_INFO_DESCRIPTION}, or null
 * @param backend     the export's root edge: what requests go to (it follows snapshots)
 * @param writable    whether clients may write
 */
public record NbdExport(String id, String name, String description, Edge backend, boolean writable) {
}
