package io.blockjobs.platform.testkit;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/**
 * blockjobd or QEMU's qemu-storage-daemon, started the same way (a QMP monitor at
 * {@code dir/qmp.sock}, an NBD server at {@code dir/nbd.sock}, then the given options) and
 * driven the same way, so that one test runs a sequence on both and compares what they did.
 */
public final class StorageDaemon implements AutoCloseable {

    /** Which daemon. */
    public enum Kind {
        BLOCKJOBD, QEMU;

        @Override
        public String toString() {
            return this == BLOCKJOBD ? "blockjobd" : "qemu-storage-daemon";
        }
    }

    public final Kind kind;
    private final DaemonProcess blockjobd;
    private final QemuStorageDaemon qemu;
    public final QmpClient qmp;

    private StorageDaemon(Kind kind, DaemonProcess blockjobd, QemuStorageDaemon qemu, QmpClient qmp) {
        this.kind = kind;
        this.blockjobd = blockjobd;
        this.qemu = qemu;
        this.qmp = qmp;
    }

    /** Starts {@code kind} with a monitor and NBD server in {@code dir}, then {@code options}; connects QMP. */
    public static StorageDaemon start(Kind kind, Path dir, List<String> options) throws IOException {
        return start(kind, List.of(), dir, options);
    }

    /** As {@link #start(Kind, Path, List)}, run through {@code launcher} (as another user, say). */
    public static StorageDaemon start(Kind kind, List<String> launcher, Path dir, List<String> options) throws IOException {
        if (kind == Kind.BLOCKJOBD) {
            DaemonProcess d = DaemonProcess.startWithMonitor(launcher, dir, options, java.util.Map.of());
            return new StorageDaemon(kind, d, null, QmpClient.connect(d.qmpSocket));
        }
        QemuStorageDaemon q = QemuStorageDaemon.startWithMonitor(dir, launcher, options);
        return new StorageDaemon(kind, null, q, QmpClient.connect(q.qmpSocket));
    }

    public long pid() {
        return kind == Kind.BLOCKJOBD ? blockjobd.pid() : qemu.pid();
    }

    /** NBD URI of an export. */
    public String nbdUri(String export) {
        return kind == Kind.BLOCKJOBD ? blockjobd.nbdUri(export) : qemu.nbdUri(export);
    }

    /** QMP {@code quit}, then waits for the process to end: its images are closed after. */
    public void quit() throws Exception {
        qmp.ok("quit");
        awaitExit();
    }

    /** SIGKILL: the daemon closes nothing; returns once the process is gone. */
    public void killHard() throws Exception {
        if (kind == Kind.BLOCKJOBD) {
            blockjobd.killHard();
        } else {
            ProcessHandle h = ProcessHandle.of(qemu.pid()).orElseThrow();
            java.util.concurrent.CompletableFuture<ProcessHandle> gone = h.onExit();
            h.destroyForcibly();
            gone.get();
        }
    }

    /** Waits for the process to end. */
    public void awaitExit() throws Exception {
        if (kind == Kind.BLOCKJOBD) {
            int status = blockjobd.awaitExit();
            if (status != 0) {
                throw new AssertionError("blockjobd exited " + status + ": " + String.join("\n", blockjobd.log()));
            }
        } else {
            qemu.awaitExit();
        }
    }

    @Override
    public void close() throws Exception {
        qmp.close();
        if (blockjobd != null) {
            blockjobd.close();
        } else {
            qemu.close();
        }
    }

    @Override
    public String toString() {
        return kind.toString();
    }
}
