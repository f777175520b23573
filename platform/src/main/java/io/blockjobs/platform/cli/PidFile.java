package io.blockjobs.platform.cli;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileAttribute;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Objects;
import java.util.Set;

/**
 * {@code --pidfile}, as QEMU's qemu_write_pidfile: the file is created mode 0600 and locked with
 * fcntl (the lock QEMU takes, so blockjobd and qemu-storage-daemon exclude each other too) for as
 * long as the daemon runs; a second daemon given the same file refuses to start, in QEMU's words.
 * It is written once the daemon is ready and removed when it stops cleanly.
 */
final class PidFile {
    private static final Set<PosixFilePermission> OWNER_ONLY = PosixFilePermissions.fromString("rw-------");
    private static final FileAttribute<Set<PosixFilePermission>> CREATE_OWNER_ONLY =
            PosixFilePermissions.asFileAttribute(OWNER_ONLY);
    /** QEMU's text for EAGAIN: what its "Cannot lock pid file" says when another process holds it. */
    private static final String LOCKED = "Cannot lock pid file: Resource temporarily unavailable";

    private final Path path;
    private final FileChannel channel; // its fd holds the lock: it stays open until the daemon ends
    private final FileLock lock;

    private PidFile(Path path, FileChannel channel, FileLock lock) {
        this.path = path;
        this.channel = channel;
        this.lock = lock;
    }

    /** Thrown with QEMU's message, less its "cannot create PID file: " prefix. */
    static final class PidFileException extends Exception {
        private static final long serialVersionUID = 1L;

        PidFileException(String message) {
            super(message);
        }
    }

    /**
     * Refuses early, before anything listens, if a running daemon holds {@code path}: a second
     * daemon must not take over the first one's sockets on its way to failing. Leaves no trace:
     * it creates nothing, and the lock it tries is let go at once.
     */
    static void checkNotHeld(Path path) throws PidFileException {
        try (FileChannel probe = FileChannel.open(path, StandardOpenOption.WRITE)) {
            FileLock held = probe.tryLock();
            if (held == null) {
                throw new PidFileException(LOCKED);
            }
            held.release();
        } catch (NoSuchFileException e) {
            // no daemon has it; acquire() creates it
        } catch (IOException e) {
            throw new PidFileException(problem(path, e));
        }
    }

    /**
     * Creates (mode 0600) or opens {@code path}, locks it, and writes this process's pid, as
     * qemu_write_pidfile does: if the file was replaced while it was being locked, it starts over.
     */
    static PidFile acquire(Path path) throws PidFileException {
        while (true) {
            FileChannel channel;
            try {
                channel = FileChannel.open(path, Set.of(StandardOpenOption.CREATE, StandardOpenOption.WRITE), CREATE_OWNER_ONLY);
            } catch (IOException e) {
                throw new PidFileException(problem(path, e));
            }
            try {
                Object locked = Files.readAttributes(path, BasicFileAttributes.class).fileKey(); // QEMU's fstat
                FileLock lock = channel.tryLock();
                if (lock == null) {
                    throw new PidFileException(LOCKED);
                }
                Object now;
                try {
                    now = Files.readAttributes(path, BasicFileAttributes.class).fileKey();
                } catch (NoSuchFileException e) {
                    now = null; // removed by the daemon that had it, as it stopped: try again
                }
                if (!Objects.equals(locked, now)) {
                    channel.close();
                    continue;
                }
                Files.setPosixFilePermissions(path, OWNER_ONLY); // 0600 whatever the umask, or an older file's mode
                channel.truncate(0);
                channel.write(ByteBuffer.wrap((ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII)));
                return new PidFile(path.toRealPath(), channel, lock);
            } catch (PidFileException e) {
                closeQuietly(channel);
                throw e;
            } catch (IOException e) {
                closeQuietly(channel);
                throw new PidFileException("Failed to write pid file: " + e.getMessage());
            }
        }
    }

    /** Removes the file and lets the lock go; at a clean exit. */
    void remove() throws IOException {
        try {
            Files.deleteIfExists(path);
        } finally {
            lock.release();
            channel.close();
        }
    }

    Path path() {
        return path;
    }

    private static String problem(Path path, IOException e) {
        String reason = e instanceof AccessDeniedException ? "Permission denied"
                : e instanceof NoSuchFileException ? "No such file or directory"
                : e instanceof FileSystemException f && f.getReason() != null ? f.getReason()
                : e.getMessage();
        return "Could not create '" + path + "': " + reason;
    }

    private static void closeQuietly(FileChannel channel) {
        try {
            channel.close();
        } catch (IOException e) {
            // nothing more to do
        }
    }
}
