package io.blockjobs.platform.nbd;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The meta contexts a client chose for an export, QEMU's {@code NBDExportMetaContexts}, and the
 * way QEMU's {@code nbd_negotiate_meta_queries} picks them from a list of queries. An export
 * offers {@code base:allocation}, {@code qemu:allocation-depth} if it was added with
 * {@code allocation-depth}, and {@code qemu:dirty-bitmap:NAME} for each of its bitmaps, with
 * QEMU's context ids: 0, 1, and 2 + the bitmap's place in the export's list. Replies list the
 * selected contexts in that order, whatever the order of the queries.
 *
 * <p>A query selects:
 * <ul>
 * <li>{@code base:allocation} itself; {@code base:} (in a LIST only) what the namespace has;</li>
 * <li>{@code qemu:allocation-depth} itself, if offered; {@code qemu:} (LIST only) every qemu
 *     context; {@code qemu:dirty-bitmap:} (LIST only) every bitmap; {@code qemu:dirty-bitmap:NAME}
 *     the first exported bitmap of that name;</li>
 * <li>nothing otherwise: unknown namespaces and names are ignored.</li>
 * </ul>
 * An empty list of queries selects everything in a LIST and nothing in a SET. Immutable.
 */
final class NbdMetaContexts {
    static final String BASE_ALLOCATION = "base:allocation";
    static final String ALLOCATION_DEPTH = "qemu:allocation-depth";
    static final String DIRTY_BITMAP = "qemu:dirty-bitmap:";
    /** QEMU's {@code NBD_META_ID_BASE_ALLOCATION}. */
    static final int BASE_ALLOCATION_ID = 0;
    /** QEMU's {@code NBD_META_ID_ALLOCATION_DEPTH}. */
    static final int ALLOCATION_DEPTH_ID = 1;
    /** QEMU's {@code NBD_META_ID_DIRTY_BITMAP}: the first bitmap's id; the others follow. */
    static final int DIRTY_BITMAP_ID = 2;

    /** One selected context: the id block status chunks carry, and the name. */
    record Context(int id, String name) {
    }

    private final NbdExport export;
    private final boolean baseAllocation;
    private final boolean allocationDepth;
    private final boolean[] bitmaps;

    private NbdMetaContexts(NbdExport export, boolean baseAllocation, boolean allocationDepth, boolean[] bitmaps) {
        this.export = export;
        this.baseAllocation = baseAllocation;
        this.allocationDepth = allocationDepth;
        this.bitmaps = bitmaps;
    }

    /** Nothing selected (no SET, or a SET for another export). */
    static NbdMetaContexts none(NbdExport export) {
        return new NbdMetaContexts(export, false, false, new boolean[export == null ? 0 : export.bitmaps().size()]);
    }

    /**
     * What {@code queries} select on {@code export}.
     *
     * @param list whether this answers {@code NBD_OPT_LIST_META_CONTEXT} (else SET)
     */
    static NbdMetaContexts select(NbdExport export, boolean list, List<String> queries) {
        int n = export.bitmaps().size();
        boolean[] bitmaps = new boolean[n];
        if (list && queries.isEmpty()) {
            Arrays.fill(bitmaps, true);
            return new NbdMetaContexts(export, true, export.allocationDepth(), bitmaps);
        }
        boolean base = false;
        boolean depth = false;
        for (String q : queries) {
            if (q.startsWith("base:")) {
                String rest = q.substring("base:".length());
                if (rest.isEmpty() ? list : rest.equals("allocation")) {
                    base = true;
                }
            } else if (q.startsWith("qemu:")) {
                String rest = q.substring("qemu:".length());
                if (rest.isEmpty()) {
                    if (list) {
                        depth = export.allocationDepth();
                        Arrays.fill(bitmaps, true);
                    }
                } else if (rest.equals("allocation-depth")) {
                    depth = export.allocationDepth();
                } else if (rest.startsWith("dirty-bitmap:")) {
                    String name = rest.substring("dirty-bitmap:".length());
                    if (name.isEmpty()) {
                        if (list) {
                            Arrays.fill(bitmaps, true);
                        }
                    } else {
                        for (int i = 0; i < n; i++) {
                            if (export.bitmapName(i).equals(name)) {
                                bitmaps[i] = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
        return new NbdMetaContexts(export, base, depth, bitmaps);
    }

    /** The export these contexts were chosen on. */
    NbdExport export() {
        return export;
    }

    boolean baseAllocation() {
        return baseAllocation;
    }

    boolean allocationDepth() {
        return allocationDepth;
    }

    /** Whether the export's {@code i}th bitmap is selected. */
    boolean bitmap(int i) {
        return bitmaps[i];
    }

    /** The selected contexts, in QEMU's order: base, allocation depth, bitmaps in export order. */
    List<Context> contexts() {
        List<Context> out = new ArrayList<>();
        if (baseAllocation) {
            out.add(new Context(BASE_ALLOCATION_ID, BASE_ALLOCATION));
        }
        if (allocationDepth) {
            out.add(new Context(ALLOCATION_DEPTH_ID, ALLOCATION_DEPTH));
        }
        for (int i = 0; i < bitmaps.length; i++) {
            if (bitmaps[i]) {
                out.add(new Context(DIRTY_BITMAP_ID + i, DIRTY_BITMAP + export.bitmapName(i)));
            }
        }
        return out;
    }

    /** How many contexts are selected (0: block status was not negotiated). */
    int count() {
        int c = (baseAllocation ? 1 : 0) + (allocationDepth ? 1 : 0);
        for (boolean b : bitmaps) {
            c += b ? 1 : 0;
        }
        return c;
    }
}
