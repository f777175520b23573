package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.EINVAL;
import static io.blockjobs.platform.nbd.Nbd.EIO;
import static io.blockjobs.platform.nbd.Nbd.ENOSPC;
import static io.blockjobs.platform.nbd.Nbd.ENOTSUP;
import static io.blockjobs.platform.nbd.Nbd.EPERM;
import static io.blockjobs.platform.nbd.Nbd.STATE_HOLE;
import static io.blockjobs.platform.nbd.Nbd.STATE_ZERO;

import io.blockjobs.platform.graph.BlockBackend;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The NBD server's only way into the block layer: every call it makes on an export's backend and
 * nodes is here, and so is the translation of block-layer errors into NBD errnos
 * ({@link #nbdErrno}). Nothing else in this package touches a {@code BlockNode}.
 *
 * <p>Each request runs inside {@link BlockBackend#io}, so the node it goes to is chosen inside the
 * backend and a graph change (a snapshot, a job's switch-over) waits for it; a request with
 * {@code fua} flushes within the same call, on the same node. Ranges are checked by the caller.
 *
 * <p>Threads: {@link #size()} is called on the event loop (and must not block); every other
 * method on an I/O thread, several at once.
 */
final class NbdExportIo {
    private final BlockBackend backend;

    NbdExportIo(NbdExport export) {
        this.backend = export.backend();
    }

    /** The export's size in bytes. */
    long size() throws IOException {
        return backend.node().size();
    }

    /** Fills {@code dst}'s remaining bytes from {@code offset}. */
    void read(long offset, ByteBuffer dst) throws IOException {
        backend.io(node -> {
            node.read(offset, dst);
            return null;
        });
    }

    /** Writes {@code src}'s remaining bytes at {@code offset}; with {@code fua}, durably. */
    void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        backend.io(node -> {
            node.write(offset, src);
            if (fua) {
                node.flush();
            }
            return null;
        });
    }

    /**
     * Makes a range read as zeroes. {@code mayUnmap} allows releasing its storage (no
     * {@code NBD_CMD_FLAG_NO_HOLE}); with {@code fastZero} the caller wants it only if it is fast,
     * which is never promised here: it fails with {@link NotSupportedException} and nothing is done.
     */
    void writeZeroes(long offset, long length, boolean mayUnmap, boolean fua, boolean fastZero) throws IOException {
        if (fastZero) {
            throw new NotSupportedException("fast zero is not supported");
        }
        backend.io(node -> {
            node.writeZeroes(offset, length, mayUnmap);
            if (fua) {
                node.flush();
            }
            return null;
        });
    }

    /** Discards a range (the node may release its storage); with {@code fua}, durably. */
    void trim(long offset, long length, boolean fua) throws IOException {
        backend.io(node -> {
            node.discard(offset, length);
            if (fua) {
                node.flush();
            }
            return null;
        });
    }

    /** Makes every completed write durable. */
    void flush() throws IOException {
        backend.io(node -> {
            node.flush();
            return null;
        });
    }

    /**
     * The {@code base:allocation} state of the whole chain from {@code offset}, over at most
     * {@code maxLength} bytes: one extent, uniform over its length. As QEMU's, a range that reads
     * as zeroes is a hole ({@code NBD_STATE_HOLE | NBD_STATE_ZERO}); anything else is data (0).
     */
    NbdReply.Extent blockStatus(long offset, long maxLength) throws IOException {
        BlockStatus s = backend.io(node -> node.chainStatus(offset, maxLength));
        return new NbdReply.Extent(s.length(), s.zero() ? STATE_HOLE | STATE_ZERO : 0);
    }

    /** The NBD errno a failed request reports for {@code e}. */
    static int nbdErrno(IOException e) {
        if (e instanceof NotSupportedException) {
            return ENOTSUP;
        }
        String m = String.valueOf(e.getMessage());
        if (m.contains("No space left")) {
            return ENOSPC;
        }
        if (m.contains("read-only")) {
            return EPERM;
        }
        if (m.contains("past the end")) {
            return EINVAL;
        }
        return EIO;
    }

    /** The export cannot do what was asked the way it was asked (NBD's {@code ENOTSUP}). */
    static final class NotSupportedException extends IOException {
        private static final long serialVersionUID = 1L;

        NotSupportedException(String message) {
            super(message);
        }
    }
}
