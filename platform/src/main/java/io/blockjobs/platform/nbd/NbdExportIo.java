package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.EINVAL;
import static io.blockjobs.platform.nbd.Nbd.EIO;
import static io.blockjobs.platform.nbd.Nbd.ENOMEM;
import static io.blockjobs.platform.nbd.Nbd.ENOSPC;
import static io.blockjobs.platform.nbd.Nbd.ENOTSUP;
import static io.blockjobs.platform.nbd.Nbd.EPERM;
import static io.blockjobs.platform.nbd.Nbd.ESHUTDOWN;
import static io.blockjobs.platform.nbd.Nbd.STATE_DIRTY;
import static io.blockjobs.platform.nbd.Nbd.STATE_HOLE;
import static io.blockjobs.platform.nbd.Nbd.STATE_ZERO;

import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.Optional;
import java.util.Set;

/**
 * The NBD server's only way into the block layer: every call it makes on an export is here, and
 * so is the translation of block-layer errors into NBD errnos ({@link #nbdErrno}). Nothing else
 * in this package touches a {@code BlockNode} or reads a dirty bitmap.
 *
 * <p>Requests go through the export's root edge: it follows snapshots and job switch-overs, holds
 * requests while a drain covers the node, and checks them against the node's size. Flags travel
 * with the request ({@code FUA}, {@code MAY_UNMAP}, {@code NO_FALLBACK}).
 *
 * <p>Threads: {@link #size()} is called on the event loop (and must not block); every other
 * method on an I/O thread, several at once.
 */
final class NbdExportIo {
    private static final Set<RequestFlag> FUA = Set.of(RequestFlag.FUA);

    private final Edge backend;

    NbdExportIo(NbdExport export) {
        this.backend = export.backend();
    }

    /** The export's size in bytes. */
    long size() throws IOException {
        return backend.size();
    }

    /** Fills {@code dst}'s remaining bytes from {@code offset}. */
    void read(long offset, ByteBuffer dst) throws IOException {
        backend.read(offset, dst);
    }

    /** Writes {@code src}'s remaining bytes at {@code offset}; with {@code fua}, durably. */
    void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        backend.write(offset, src, fua ? FUA : RequestFlag.NONE);
    }

    /**
     * Makes a range read as zeroes. {@code mayUnmap} allows releasing its storage (no
     * {@code NBD_CMD_FLAG_NO_HOLE}); with {@code fastZero} the node must do it without writing zero
     * buffers, or fail with {@code ENOTSUP} having done nothing.
     */
    void writeZeroes(long offset, long length, boolean mayUnmap, boolean fua, boolean fastZero) throws IOException {
        Set<RequestFlag> flags = EnumSet.noneOf(RequestFlag.class);
        if (mayUnmap) {
            flags.add(RequestFlag.MAY_UNMAP);
        }
        if (fua) {
            flags.add(RequestFlag.FUA);
        }
        if (fastZero) {
            flags.add(RequestFlag.NO_FALLBACK);
        }
        backend.writeZeroes(offset, length, flags);
    }

    /** Discards a range (the node may release its storage); with {@code fua}, durably. */
    void trim(long offset, long length, boolean fua) throws IOException {
        backend.discard(offset, length);
        if (fua) {
            backend.flush();
        }
    }

    /** Makes every completed write durable. */
    void flush() throws IOException {
        backend.flush();
    }

    /**
     * The {@code base:allocation} state of the whole chain from {@code offset}, over at most
     * {@code maxLength} bytes: one extent, uniform over its length. As QEMU's, a range that no
     * layer holds data for is a hole ({@code NBD_STATE_HOLE}: QEMU's block status without
     * {@code DATA}), and a zero hole if it is known to read as zeroes ({@code NBD_STATE_ZERO}); a
     * range with data is 0. A hole that is not zero is what {@code null-co} reports.
     */
    NbdReply.Extent blockStatus(long offset, long maxLength) throws IOException {
        BlockStatus s = backend.chainStatus(offset, maxLength);
        boolean data = s.allocated() && !s.zero();
        return new NbdReply.Extent(s.length(), (data ? 0 : STATE_HOLE) | (s.zero() ? STATE_ZERO : 0));
    }

    /**
     * Gathers {@code base:allocation} extents over {@code [offset, offset + length)} into
     * {@code into} until the range is covered or the array is full (QEMU's
     * {@code blockstatus_to_extents}).
     */
    void baseAllocation(long offset, long length, ExtentArray into) throws IOException {
        while (length > 0) {
            NbdReply.Extent e = blockStatus(offset, length);
            if (!into.add(e.length(), e.flags())) {
                return;
            }
            offset += e.length();
            length -= e.length();
        }
    }

    /**
     * Gathers {@code qemu:allocation-depth} extents (QEMU's {@code blockalloc_to_extents}): each
     * extent's flags are the depth of the layer that allocates it, 0 where none does, 1 for the
     * exported node, 2 for the next layer down, ... (see {@link io.blockjobs.platform.graph.GraphNode#allocationDepth}).
     */
    void allocationDepth(long offset, long length, ExtentArray into) throws IOException {
        while (length > 0) {
            GraphNode.Allocation a = backend.allocationDepth(offset, length);
            if (!into.add(a.length(), a.depth())) {
                return;
            }
            offset += a.length();
            length -= a.length();
        }
    }

    /**
     * Gathers {@code qemu:dirty-bitmap:NAME} extents (QEMU's {@code bitmap_to_extents}): dirty
     * runs ({@code NBD_STATE_DIRTY}) and clean ones (0), at the bitmap's granularity, clipped to
     * the range; past the bitmap's end (a bitmap of a shorter backing node) the range is clean.
     * Walks runs, never granules.
     */
    static void dirtyBitmap(Bitmap bitmap, long offset, long length, ExtentArray into) {
        long end = offset + length;
        long start = offset;
        while (true) {
            Optional<DirtyRange> dirty = bitmap.nextDirty(start, end);
            if (dirty.isEmpty()) {
                break;
            }
            DirtyRange d = dirty.get();
            if (!into.add(d.offset() - start, 0) || !into.add(d.length(), STATE_DIRTY)) {
                return;
            }
            start = d.offset() + d.length();
        }
        into.add(end - start, 0);
    }

    /**
     * The NBD errno a failed request reports, by the failure's errno (QEMU's
     * {@code system_errno_to_nbd_errno}: what NBD has no code for is {@code EINVAL}).
     */
    static int nbdErrno(IOException e) {
        return switch (Errno.of(e)) {
            case EPERM, EACCES, EROFS -> EPERM;
            case EIO -> EIO;
            case ENOMEM -> ENOMEM;
            case ENOSPC, EFBIG -> ENOSPC;
            case ENOTSUP -> ENOTSUP;
            case ESHUTDOWN -> ESHUTDOWN;
            default -> EINVAL;
        };
    }
}
