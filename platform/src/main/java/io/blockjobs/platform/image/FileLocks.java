package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.Errno;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Image locking compatible with QEMU's {@code file-posix} driver, and one shared channel per file.
 *
 * <p>QEMU marks the permissions a user of an image holds by a shared lock on byte
 * {@code 100 + bit}, and those it refuses to share with others by a shared lock on byte
 * {@code 200 + bit}. Before taking them it checks that nobody else refuses what it needs, and that
 * nobody else holds what it refuses. Linux makes QEMU's open-file-description locks and the JDK's
 * POSIX record locks conflict, so taking the same bytes here keeps blockjobs and QEMU (qemu-img,
 * qemu-io, qemu-storage-daemon, a VM) from writing the same image at once.
 *
 * <p>POSIX locks belong to the process and vanish when any descriptor of the file is closed, so
 * all users of a file in this JVM share one {@link FileChannel}, kept open until the last of
 * them leaves; conflicts between them are checked here, in memory.
 */
final class FileLocks {

    /** QEMU's {@code BLK_PERM_*} bits that take part in file locking. */
    enum Perm {
        CONSISTENT_READ("consistent read"), WRITE("write"), WRITE_UNCHANGED("write unchanged"), RESIZE("resize");

        final String qemuName;

        Perm(String qemuName) {
            this.qemuName = qemuName;
        }

        long permByte() {
            return 100 + ordinal();
        }

        long sharedByte() {
            return 200 + ordinal();
        }
    }

    /** What a reader holds and refuses: like a QEMU read-only open. */
    static final Set<Perm> READ = EnumSet.of(Perm.CONSISTENT_READ);
    /** What a writer holds: like a QEMU read-write open of an image's file. */
    static final Set<Perm> READ_WRITE = EnumSet.of(Perm.CONSISTENT_READ, Perm.WRITE, Perm.RESIZE);
    /** What both refuse to share: nobody else may change the image under them. */
    static final Set<Perm> UNSHARED = EnumSet.of(Perm.WRITE, Perm.RESIZE);

    private static final Map<Object, SharedFile> OPEN = new HashMap<>();

    private FileLocks() {
    }

    /** One user's claim on a file; {@link #release()} gives it back. */
    static final class Claim {
        private final SharedFile file;
        private Set<Perm> held;
        private Set<Perm> unshared;
        private boolean released;

        private Claim(SharedFile file, Set<Perm> held, Set<Perm> unshared) {
            this.file = file;
            this.held = held;
            this.unshared = unshared;
        }

        FileChannel channel() {
            return file.channel;
        }

        /**
         * A channel on the same file that bypasses the page cache ({@code O_DIRECT}), opened on
         * first use and closed with the file's last claim: closing it earlier would drop the
         * process's locks.
         */
        FileChannel directChannel(Path path) throws IOException {
            synchronized (FileLocks.class) {
                if (file.directChannel == null) {
                    file.directChannel = file.writableChannel
                            ? FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE,
                                    com.sun.nio.file.ExtendedOpenOption.DIRECT)
                            : FileChannel.open(path, StandardOpenOption.READ, com.sun.nio.file.ExtendedOpenOption.DIRECT);
                }
                return file.directChannel;
            }
        }

        /** Punches a hole in the file (see {@link NativeFile}); false if it could not. */
        boolean punchHole(long offset, long length) {
            return file.writableChannel && NativeFile.punch(nativeFd(), offset, length);
        }

        /** {@link NativeFile#nextData} on the file. */
        long nextData(long offset) {
            return NativeFile.nextData(nativeFd(), offset);
        }

        /** {@link NativeFile#nextHole} on the file. */
        long nextHole(long offset) {
            return NativeFile.nextHole(nativeFd(), offset);
        }

        private int nativeFd() {
            int fd = file.nativeFd;
            if (fd == -2) {
                synchronized (FileLocks.class) {
                    if (file.nativeFd == -2) {
                        file.nativeFd = NativeFile.openFor(file.path, file.writableChannel);
                    }
                    fd = file.nativeFd;
                }
            }
            return fd;
        }

        /** Changes what this claim holds and refuses, checked as a new claim would be. */
        void change(Set<Perm> newHeld, Set<Perm> newUnshared, String name) throws IOException {
            synchronized (FileLocks.class) {
                if (newHeld.contains(Perm.WRITE) && !file.writableChannel) {
                    throw new ImageException(Errno.EACCES, name, "cannot be reopened for writing: permission denied");
                }
                checkConflicts(file, this, newHeld, newUnshared, name);
                held = Set.copyOf(newHeld);
                unshared = Set.copyOf(newUnshared);
                file.applyLocks();
            }
        }

        /** Gives the claim back; the channel closes with the file's last claim. */
        void release() throws IOException {
            synchronized (FileLocks.class) {
                if (released) {
                    return;
                }
                released = true;
                file.claims.remove(this);
                if (file.claims.isEmpty()) {
                    OPEN.remove(file.key);
                    if (file.directChannel != null) {
                        file.directChannel.close();
                    }
                    file.channel.close(); // drops every lock of this process on the file
                    NativeFile.closeFd(file.nativeFd);
                } else {
                    file.applyLocks();
                }
            }
        }
    }

    private static final class SharedFile {
        final Object key;
        final String path;
        final FileChannel channel;
        final boolean writableChannel;
        final List<Claim> claims = new ArrayList<>();
        final Map<Long, FileLock> locks = new HashMap<>();
        // A second descriptor for fallocate and lseek, opened on first use and closed with the
        // channel: closing any descriptor of the file would drop the process's locks on it.
        volatile int nativeFd = -2;
        // The O_DIRECT descriptor of cache.direct=on nodes, for the same reason kept to the end.
        FileChannel directChannel;

        SharedFile(Object key, Path path, FileChannel channel, boolean writableChannel) {
            this.key = key;
            this.path = path.toString();
            this.channel = channel;
            this.writableChannel = writableChannel;
        }

        /** Makes the OS locks match the union of the claims. */
        void applyLocks() throws IOException {
            Set<Long> wanted = new java.util.HashSet<>();
            for (Claim c : claims) {
                c.held.forEach(p -> wanted.add(p.permByte()));
                c.unshared.forEach(p -> wanted.add(p.sharedByte()));
            }
            for (var it = locks.entrySet().iterator(); it.hasNext(); ) {
                var entry = it.next();
                if (!wanted.contains(entry.getKey())) {
                    entry.getValue().release();
                    it.remove();
                }
            }
            for (long b : wanted) {
                if (!locks.containsKey(b)) {
                    locks.put(b, channel.lock(b, 1, true));
                }
            }
        }

        /** True if another process holds a lock on byte {@code b}. */
        boolean lockedElsewhere(long b) throws IOException {
            if (!writableChannel) {
                return false; // cannot test: a shared test lock would not see shared holders
            }
            // A byte this process holds hides other holders from the probe (POSIX locks are the
            // process's): let go of it for the probe, as a reopen for writing must see a reader
            // elsewhere that refuses to share "write".
            FileLock ours = locks.remove(b);
            if (ours != null) {
                ours.release();
            }
            try {
                FileLock probe = channel.tryLock(b, 1, false);
                if (probe == null) {
                    return true;
                }
                probe.release();
                return false;
            } finally {
                if (ours != null) {
                    locks.put(b, channel.lock(b, 1, true));
                }
            }
        }
    }

    /**
     * Opens {@code path} (read-write if {@code held} includes {@link Perm#WRITE}) and claims
     * {@code held} while refusing {@code unshared} to everyone else.
     *
     * @throws ImageLockedException if someone, here or in another process, is in the way
     */
    static Claim claim(Path path, Set<Perm> held, Set<Perm> unshared) throws IOException {
        String name = path.toString();
        boolean wantWrite = held.contains(Perm.WRITE);
        synchronized (FileLocks.class) {
            Object key;
            try {
                key = Files.readAttributes(path, BasicFileAttributes.class).fileKey();
            } catch (java.nio.file.NoSuchFileException e) {
                throw new ImageException(name, "no such file");
            }
            if (key == null) {
                key = path.toRealPath();
            }
            SharedFile file = OPEN.get(key);
            boolean created = false;
            if (file == null) {
                file = openShared(path, key, wantWrite);
                created = true;
            } else if (wantWrite && !file.writableChannel) {
                throw new ImageException(name, "is open read-only here and cannot be opened for writing");
            }
            try {
                checkConflicts(file, null, held, unshared, name);
                Claim claim = new Claim(file, Set.copyOf(held), Set.copyOf(unshared));
                file.claims.add(claim);
                file.applyLocks();
                if (created) {
                    OPEN.put(key, file);
                }
                return claim;
            } catch (IOException | RuntimeException e) {
                if (created) {
                    file.channel.close();
                }
                throw e;
            }
        }
    }

    /** Refuses {@code held}/{@code unshared} if another claim here, or another process, is in the way. */
    private static void checkConflicts(SharedFile file, Claim self, Set<Perm> held, Set<Perm> unshared, String name)
            throws IOException {
        {
            {
                for (Claim other : file.claims) {
                    if (other == self) {
                        continue;
                    }
                    for (Perm p : held) {
                        if (other.unshared.contains(p)) {
                            throw new ImageLockedException(name, "already in use here: another node refuses to share \""
                                    + p.qemuName + "\"; close that node first", "Failed to get \"" + p.qemuName + "\" lock");
                        }
                    }
                    for (Perm p : unshared) {
                        if (other.held.contains(p)) {
                            throw new ImageLockedException(name, "already in use here: another node holds \""
                                    + p.qemuName + "\"; close that node first", "Failed to get shared \"" + p.qemuName + "\" lock");
                        }
                    }
                }
                for (Perm p : held) {
                    if (file.lockedElsewhere(p.sharedByte())) {
                        throw new ImageLockedException(name, "Failed to get \"" + p.qemuName
                                + "\" lock: is another process (QEMU, qemu-img, blockjobd) using the image?",
                                "Failed to get \"" + p.qemuName + "\" lock");
                    }
                }
                for (Perm p : unshared) {
                    if (file.lockedElsewhere(p.permByte())) {
                        throw new ImageLockedException(name, "Failed to get shared \"" + p.qemuName
                                + "\" lock: is another process (QEMU, qemu-img, blockjobd) using the image?",
                                "Failed to get shared \"" + p.qemuName + "\" lock");
                    }
                }
            }
        }
    }

    private static SharedFile openShared(Path path, Object key, boolean wantWrite) throws IOException {
        try {
            return new SharedFile(key, path, FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE), true);
        } catch (AccessDeniedException e) {
            if (wantWrite) {
                throw new ImageException(Errno.EACCES, path.toString(), "permission denied: the file cannot be opened for writing");
            }
            return new SharedFile(key, path, FileChannel.open(path, StandardOpenOption.READ), false);
        }
    }
}
