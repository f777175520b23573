package io.blockjobs.platform.nbd;

import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.graph.Edge;
import java.util.List;

/**
 * An export: a name clients ask for, and the backend it serves (which follows snapshots).
 *
 * @param id              the QMP export id
 * @param name            the NBD export name
 * @param description     shown by {@code NBD_OPT_LIST} and {@code NBD_INFO_DESCRIPTION}, or null
 * @param backend         the export's root edge: what requests go to (it follows snapshots)
 * @param writable        whether clients may write
 * @param bitmaps         the dirty bitmaps it offers as {@code qemu:dirty-bitmap:NAME}, in the
 *                        order {@code block-export-add} named them; busy while exported
 * @param allocationDepth whether it offers {@code qemu:allocation-depth}
 */
public record NbdExport(String id, String name, String description, Edge backend, boolean writable,
                        List<Bitmap> bitmaps, boolean allocationDepth) {

    public NbdExport {
        bitmaps = List.copyOf(bitmaps);
    }

    /** An export without bitmaps or allocation depth. */
    public NbdExport(String id, String name, String description, Edge backend, boolean writable) {
        this(id, name, description, backend, writable, List.of(), false);
    }

    /** The name of the {@code i}th bitmap (a named bitmap: an exported one cannot lose it while busy). */
    String bitmapName(int i) {
        return bitmaps.get(i).name().orElseThrow();
    }
}
