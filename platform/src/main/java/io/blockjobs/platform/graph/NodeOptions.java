package io.blockjobs.platform.graph;

import io.blockjobs.sdk.error.CommandException;

/**
 * The options every node takes, whatever its driver (QEMU's {@code BlockdevOptions} base), read
 * before the driver sees the rest. Inline children inherit {@code read-only},
 * {@code auto-read-only}, {@code force-share} and {@code cache} from their parent, and default to
 * {@code discard=unmap} (the parent decides whether discards reach them), as QEMU's
 * {@code bdrv_inherited_options}.
 *
 * @param readOnly      writes are refused; no write permission can be taken
 * @param autoReadOnly  a file that cannot be opened for writing is opened read-only
 * @param forceShare    take no locks that keep others out (read-only nodes only)
 * @param discardUnmap  discards and unmapping write-zeroes reach the driver ({@code discard=unmap})
 * @param detectZeroes  what writes of zero buffers become
 * @param cacheDirect   bypass the host page cache ({@code O_DIRECT})
 * @param noFlush       flushes are dropped
 */
public record NodeOptions(boolean readOnly, boolean autoReadOnly, boolean forceShare, boolean discardUnmap,
                          DetectZeroes detectZeroes, boolean cacheDirect, boolean noFlush) {

    /** QEMU's {@code BlockdevDetectZeroesOptions}. */
    public enum DetectZeroes {
        /** Zero buffers are written as data. */
        OFF,
        /** Zero buffers become write-zeroes. */
        ON,
        /** Zero buffers become write-zeroes that may unmap (needs {@code discard=unmap}). */
        UNMAP
    }

    /** Reads the generic options of a node opened by {@code blockdev-add} or inline under {@code parent}. */
    static NodeOptions read(Options o, NodeOptions parent) {
        boolean readOnly = o.bool("read-only", parent != null && parent.readOnly);
        boolean autoReadOnly = o.bool("auto-read-only", parent != null && parent.autoReadOnly);
        boolean forceShare = o.bool("force-share", parent != null && parent.forceShare);
        String discard = o.optString("discard");
        boolean unmap;
        if (discard == null) {
            unmap = parent != null; // children get the requests their parent lets through
        } else {
            unmap = switch (discard) { // QAPI's BlockdevDiscardOptions; -drive's on/off are not QMP's
                case "ignore" -> false;
                case "unmap" -> true;
                default -> throw new CommandException("Parameter 'discard' does not accept value '" + discard + "'");
            };
        }
        String dz = o.optString("detect-zeroes");
        DetectZeroes detect = dz == null ? DetectZeroes.OFF : switch (dz) {
            case "off" -> DetectZeroes.OFF;
            case "on" -> DetectZeroes.ON;
            case "unmap" -> DetectZeroes.UNMAP;
            default -> throw new CommandException("Parameter 'detect-zeroes' does not accept value '" + dz + "'");
        };
        if (detect == DetectZeroes.UNMAP && !unmap) {
            throw new CommandException("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
        }
        boolean direct = parent != null && parent.cacheDirect;
        boolean noFlush = parent != null && parent.noFlush;
        if (o.has("cache")) {
            Options cache = o.object("cache");
            direct = cache.bool("direct", direct);
            noFlush = cache.bool("no-flush", noFlush);
            cache.checkAllUsed();
        }
        if (forceShare && !readOnly) {
            throw new CommandException("force-share=on can only be used with read-only images");
        }
        return new NodeOptions(readOnly, autoReadOnly, forceShare, unmap, detect, direct, noFlush);
    }

    /** The options of a node the graph opens itself (a backing file from a header, a job's filter). */
    static NodeOptions inherited(NodeOptions parent, boolean readOnly) {
        return new NodeOptions(readOnly, parent.autoReadOnly, parent.forceShare, true, DetectZeroes.OFF,
                parent.cacheDirect, parent.noFlush);
    }

    /**
     * The options of an image a job opens for itself in the likeness of {@code source}, as QEMU
     * opens drive-mirror's and drive-backup's target with the source's open flags: read-write,
     * the source's cache mode and discard policy (BDRV_O_UNMAP); detect-zeroes is no flag.
     */
    static NodeOptions like(NodeOptions source) {
        return new NodeOptions(false, false, false, source.discardUnmap(), DetectZeroes.OFF, source.cacheDirect,
                source.noFlush);
    }

    /** Defaults for a node with no parent to inherit from. */
    static NodeOptions defaults(boolean readOnly) {
        return new NodeOptions(readOnly, false, false, false, DetectZeroes.OFF, false, false);
    }

    /** The QAPI spelling of {@link #detectZeroes}. */
    public String detectZeroesName() {
        return detectZeroes.name().toLowerCase(java.util.Locale.ROOT);
    }
}
