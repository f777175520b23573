package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.EINVAL;
import static io.blockjobs.platform.nbd.Nbd.EIO;
import static io.blockjobs.platform.nbd.Nbd.ENOMEM;
import static io.blockjobs.platform.nbd.Nbd.ENOSPC;
import static io.blockjobs.platform.nbd.Nbd.ENOTSUP;
import static io.blockjobs.platform.nbd.Nbd.EPERM;
import static io.blockjobs.platform.nbd.Nbd.ESHUTDOWN;
import static io.blockjobs.platform.nbd.Nbd.STATE_HOLE;
import static io.blockjobs.platform.nbd.Nbd.STATE_ZERO;

import io.blockjobs.platform.graph.Edge;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.Set;

/**
 * The NBD server's only way into the block layer: every call it makes on an export is here, and
 * so is the translation of block-layer errors into NBD errnos ({@link #nbdErrno}). Nothing else
 * in this package touches a {@code BlockNode}.
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
