package io.blockjobs.platform.image;

import com.sun.jna.LastErrorException;
import com.sun.jna.Native;
import com.sun.jna.Platform;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The file calls the JDK lacks, through JNA (a maintained library) rather than hand-written
 * native code: punching holes ({@code fallocate(PUNCH_HOLE | KEEP_SIZE)}), so that freed qcow2
 * clusters stop counting in the image's allocated size, and finding them
 * ({@code lseek(SEEK_DATA / SEEK_HOLE)}), so that a sparse file's holes read as zeroes in its
 * block status, as QEMU's {@code file-posix} reports them. Best effort: where a call is not
 * available, nothing is punched, every range is data, and nothing fails.
 */
final class NativeFile {
    private static final Logger LOG = LoggerFactory.getLogger(NativeFile.class);
    private static final int O_RDONLY = 0;
    private static final int O_RDWR = 2;
    private static final int FALLOC_FL_KEEP_SIZE = 1;
    private static final int FALLOC_FL_PUNCH_HOLE = 2;
    private static final int SEEK_DATA = 3;
    private static final int SEEK_HOLE = 4;
    private static final int ENXIO = 6;
    /** {@link #nextData}: no data at or after the offset (the rest of the file is a hole). */
    static final long NO_DATA = -1;
    /** {@link #nextData} and {@link #nextHole}: the file system cannot say. */
    static final long UNKNOWN = -2;
    private static final boolean AVAILABLE = register();

    private NativeFile() {
    }

    private static boolean register() {
        if (!Platform.isLinux()) {
            return false;
        }
        try {
            Native.register(NativeFile.class, Platform.C_LIBRARY_NAME);
            return true;
        } catch (Throwable t) {
            LOG.info("hole punching and finding unavailable: {}", t.toString());
            return false;
        }
    }

    private static native int open(String path, int flags);

    private static native int fallocate(int fd, int mode, long offset, long length);

    private static native long lseek(int fd, long offset, int whence) throws LastErrorException;

    private static native int close(int fd);

    /**
     * A descriptor on {@code path} for these calls (read-write if {@code writable}), or -1. Keep
     * it as long as the file's locks: closing any descriptor of a file drops the process's locks.
     */
    static int openFor(String path, boolean writable) {
        return AVAILABLE ? open(path, writable ? O_RDWR : O_RDONLY) : -1;
    }

    /** Punches {@code [offset, offset + length)}; false if it could not. */
    static boolean punch(int fd, long offset, long length) {
        return fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0;
    }

    /** Where data starts at or after {@code offset}: {@code offset} itself inside data, {@link #NO_DATA}, or {@link #UNKNOWN}. */
    static long nextData(int fd, long offset) {
        return seek(fd, offset, SEEK_DATA);
    }

    /** Where a hole starts at or after {@code offset} (the end of the file at the latest), or {@link #UNKNOWN}. */
    static long nextHole(int fd, long offset) {
        return seek(fd, offset, SEEK_HOLE);
    }

    private static long seek(int fd, long offset, int whence) {
        if (fd < 0) {
            return UNKNOWN;
        }
        try {
            long at = lseek(fd, offset, whence);
            return at < offset ? UNKNOWN : at;
        } catch (LastErrorException e) {
            // ENXIO: past the last data (or past the end); anything else (EINVAL: no support)
            return e.getErrorCode() == ENXIO ? NO_DATA : UNKNOWN;
        }
    }

    static void closeFd(int fd) {
        if (fd >= 0) {
            close(fd);
        }
    }
}
