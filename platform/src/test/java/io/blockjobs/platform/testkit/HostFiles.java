package io.blockjobs.platform.testkit;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What the host says about a daemon's files: its open descriptors of an image and their
 * {@code open(2)} flags from {@code /proc}, and how much of a file is allocated on disk.
 */
public final class HostFiles {
    /** {@code O_DIRECT} on x86-64 Linux, as {@code /proc/<pid>/fdinfo} shows it in octal. */
    public static final int O_DIRECT = 040000;
    /** {@code O_ACCMODE}: 0 read-only, 1 write-only, 2 read-write. */
    public static final int O_ACCMODE = 03;

    private HostFiles() {
    }

    /** The descriptors process {@code pid} holds open on {@code file}, found through {@code /proc/<pid>/fd}. */
    public static List<Integer> descriptorsOf(long pid, Path file) throws IOException {
        Path real = file.toRealPath();
        List<Integer> fds = new ArrayList<>();
        try (DirectoryStream<Path> dir = Files.newDirectoryStream(Path.of("/proc", String.valueOf(pid), "fd"))) {
            for (Path fd : dir) {
                try {
                    if (Files.readSymbolicLink(fd).equals(real)) {
                        fds.add(Integer.parseInt(fd.getFileName().toString()));
                    }
                } catch (IOException e) {
                    // closed meanwhile
                }
            }
        }
        fds.sort(null);
        return fds;
    }

    /** The {@code flags:} line of {@code /proc/<pid>/fdinfo/<fd>}: the file's open flags. */
    public static int openFlags(long pid, int fd) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc", String.valueOf(pid), "fdinfo", String.valueOf(fd)))) {
            if (line.startsWith("flags:")) {
                return Integer.parseInt(line.substring("flags:".length()).trim(), 8);
            }
        }
        throw new AssertionError("no flags in /proc/" + pid + "/fdinfo/" + fd);
    }

    /** The open flags of every descriptor {@code pid} holds on {@code file}. */
    public static List<Integer> openFlagsOf(long pid, Path file) throws IOException {
        List<Integer> flags = new ArrayList<>();
        for (int fd : descriptorsOf(pid, file)) {
            flags.add(openFlags(pid, fd));
        }
        return flags;
    }

    /** Bytes the file system has allocated to {@code file} ({@code st_blocks} × 512). */
    public static long allocatedBytes(Path file) {
        Qemu.Result r = Qemu.run("stat", "-c", "%b %B", file.toString()).ok();
        String[] f = r.out().trim().split(" ");
        return Long.parseLong(f[0]) * Long.parseLong(f[1]);
    }

    /** The user id this test runs as. */
    public static int uid() throws IOException {
        return (Integer) Files.getAttribute(Path.of("/proc/self"), "unix:uid");
    }
}
