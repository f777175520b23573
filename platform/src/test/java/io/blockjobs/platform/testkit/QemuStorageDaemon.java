package io.blockjobs.platform.testkit;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * QEMU's own {@code qemu-storage-daemon}, the oracle, started with the same monitor and NBD
 * server layout as {@link DaemonProcess#startWithMonitor}: {@code dir/qmp.sock} and
 * {@code dir/nbd.sock}. With {@code --daemonize} it returns once every option is set up.
 */
public final class QemuStorageDaemon implements AutoCloseable {
    private final ProcessHandle process;
    public final Path qmpSocket;
    public final Path nbdSocket;

    private QemuStorageDaemon(ProcessHandle process, Path qmpSocket, Path nbdSocket) {
        this.process = process;
        this.qmpSocket = qmpSocket;
        this.nbdSocket = nbdSocket;
    }

    /** Starts it with a monitor and NBD server in {@code dir}, then {@code extra} options. */
    public static QemuStorageDaemon startWithMonitor(Path dir, List<String> extra) throws IOException {
        return startWithMonitor(dir, List.of(), extra);
    }

    /**
     * As {@link #startWithMonitor(Path, List)}, run through {@code launcher}, a command that
     * executes its arguments in its own process ({@code setpriv --reuid=65534 ...}).
     */
    public static QemuStorageDaemon startWithMonitor(Path dir, List<String> launcher, List<String> extra) throws IOException {
        Path qmp = dir.resolve("qmp.sock");
        Path nbd = dir.resolve("nbd.sock");
        Path pidfile = dir.resolve("qsd.pid");
        Files.deleteIfExists(pidfile);
        List<String> cmd = new ArrayList<>(launcher);
        cmd.addAll(List.of("qemu-storage-daemon",
                "--chardev", "socket,id=mon0,path=" + qmp + ",server=on,wait=off",
                "--monitor", "chardev=mon0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd));
        cmd.addAll(extra);
        cmd.addAll(List.of("--daemonize", "--pidfile", pidfile.toString()));
        Process parent;
        try {
            parent = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        } catch (IOException e) {
            throw new AssertionError("cannot run qemu-storage-daemon (apt-get install qemu-system-common): " + e.getMessage(), e);
        }
        String out = new String(parent.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (!parent.waitFor(60, TimeUnit.SECONDS) || parent.exitValue() != 0) {
                throw new AssertionError("qemu-storage-daemon did not start: " + cmd + "\n" + out);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
        long pid = Long.parseLong(Files.readString(pidfile).trim());
        ProcessHandle handle = ProcessHandle.of(pid).orElseThrow(() -> new AssertionError("qemu-storage-daemon is gone: " + out));
        return new QemuStorageDaemon(handle, qmp, nbd);
    }

    public long pid() {
        return process.pid();
    }

    /** NBD URI of an export. */
    public String nbdUri(String export) {
        return "nbd+unix:///" + export + "?socket=" + nbdSocket;
    }

    /** Waits for the process to end (after {@code quit}, say). */
    public void awaitExit() {
        try {
            process.onExit().get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new AssertionError("qemu-storage-daemon did not exit", e);
        }
    }

    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroy();
            awaitExit();
        }
    }
}
