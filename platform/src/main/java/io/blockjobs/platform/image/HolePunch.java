package io.blockjobs.platform.image;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Gives storage back to the host filesystem ({@code fallocate(PUNCH_HOLE | KEEP_SIZE)}), which
 * the JDK cannot do: freed qcow2 clusters then stop counting in the image's allocated size.
 * Through JNA (a maintained library) rather than hand-written native code. Best effort: where
 * it is not available, nothing is punched and nothing fails.
 */
final class HolePunch {
    private static final Logger LOG = LoggerFactory.getLogger(HolePunch.class);
    private static final int O_WRONLY = 1;
    private static final int FALLOC_FL_KEEP_SIZE = 1;
    private static final int FALLOC_FL_PUNCH_HOLE = 2;
    private static final boolean AVAILABLE = register();

    private HolePunch() {
    }

    private static boolean register() {
        if (!Platform.isLinux()) {
            return false;
        }
        try {
            Native.register(HolePunch.class, Platform.C_LIBRARY_NAME);
            return true;
        } catch (Throwable t) {
            LOG.info("hole punching unavailable: {}", t.toString());
            return false;
        }
    }

    private static native int open(String path, int flags);

    private static native int fallocate(int fd, int mode, long offset, long length);

    private static native int close(int fd);

    /** A descriptor for punching holes in {@code path}, or -1. Keep it as long as the file's locks. */
    static int openFor(String path) {
        return AVAILABLE ? open(path, O_WRONLY) : -1;
    }

    /** Punches {@code [offset, offset + length)}; false if it could not. */
    static boolean punch(int fd, long offset, long length) {
        return fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0;
    }

    static void closeFd(int fd) {
        if (fd >= 0) {
            close(fd);
        }
    }
}
