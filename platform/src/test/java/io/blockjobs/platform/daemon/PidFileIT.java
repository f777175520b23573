package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QemuStorageDaemon;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --pidfile} as qemu-storage-daemon's: mode 0600 whatever the umask, locked with fcntl for
 * the daemon's life (a second daemon, blockjobd or QEMU's, refuses to start, in QEMU's words),
 * written once the daemon is ready, removed when it stops cleanly, left behind by SIGKILL.
 */
class PidFileIT {

    /** Runs the daemon under umask 000, where a plain create would make the file world-writable. */
    private static final List<String> UMASK_000 = List.of("sh", "-c", "umask 000; exec \"$0\" \"$@\"");

    /** QEMU's message when another process holds the file (EAGAIN from F_SETLK). */
    private static final String LOCKED = "cannot create PID file: Cannot lock pid file: Resource temporarily unavailable";

    @TempDir
    Path dir;

    private static List<String> monitorAt(Path socket) {
        return List.of("--chardev", "socket,id=mon0,path=" + socket + ",server=on,wait=off", "--monitor", "chardev=mon0");
    }

    private static List<String> with(List<String> a, String... more) {
        List<String> all = new ArrayList<>(a);
        all.addAll(List.of(more));
        return all;
    }

    /** Runs qemu-storage-daemon in the foreground until it exits; returns its exit status and stderr. */
    private static String[] qemu(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("qemu-storage-daemon"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("qemu-storage-daemon did not exit: " + cmd);
        }
        return new String[] {String.valueOf(p.exitValue()), err.strip()};
    }

    @Test
    void aSecondDaemonRefusesTheFileWhileTheFirstRuns() throws Exception {
        Path pid = dir.resolve("daemon.pid");
        Path socket = dir.resolve("qmp.sock");
        try (DaemonProcess first = DaemonProcess.start(UMASK_000, socket, null, with(monitorAt(socket), "--pidfile", pid.toString()),
                java.util.Map.of())) {
            first.awaitReady();
            assertThat(Files.readString(pid)).isEqualTo(first.pid() + "\n");
            assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(pid))).as("umask 000").isEqualTo("rw-------");

            // The lock lives as long as the daemon, not as long as some object in it: after a full GC too.
            Process gc = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "jcmd").toString(),
                    String.valueOf(first.pid()), "GC.run").redirectErrorStream(true).start();
            gc.getInputStream().readAllBytes();
            assertThat(gc.waitFor()).isZero();

            // A second blockjobd with the same pidfile and the same monitor socket refuses before touching the socket.
            // (null: this handle must not remove the socket when it closes)
            try (DaemonProcess second = DaemonProcess.start(null, null, with(monitorAt(socket), "--pidfile", pid.toString()))) {
                assertThat(second.awaitExit()).isEqualTo(1);
                assertThat(second.log()).contains("blockjobd: " + LOCKED);
            }
            // QEMU's daemon says the same (its fcntl lock and ours exclude each other).
            String[] qsd = qemu("--pidfile", pid.toString());
            assertThat(qsd[0]).isEqualTo("1");
            assertThat(qsd[1]).isEqualTo("qemu-storage-daemon: " + LOCKED);

            assertThat(Files.readString(pid)).as("the file is still the first daemon's").isEqualTo(first.pid() + "\n");
            try (QmpClient c = QmpClient.connect(socket)) {
                assertThat(c.ok("query-version").has("qemu")).as("the first daemon's monitor still answers").isTrue();
                c.ok("quit");
            }
            assertThat(first.awaitExit()).isZero();
        }
        assertThat(pid).as("removed at a clean exit").doesNotExist();
    }

    @Test
    void blockjobdRefusesAFileQemuHolds() throws Exception {
        Path qsdDir = Files.createDirectories(dir.resolve("qsd"));
        Path qsdPid = qsdDir.resolve("qsd.pid"); // QemuStorageDaemon runs it with --pidfile there
        try (QemuStorageDaemon qsd = QemuStorageDaemon.startWithMonitor(qsdDir, List.of())) {
            assertThat(Files.readString(qsdPid).trim()).isEqualTo(String.valueOf(qsd.pid()));
            try (DaemonProcess d = DaemonProcess.start(null, null, List.of("--pidfile", qsdPid.toString()))) {
                assertThat(d.awaitExit()).isEqualTo(1);
                assertThat(d.log()).contains("blockjobd: " + LOCKED);
            }
            try (QmpClient c = QmpClient.connect(qsd.qmpSocket)) {
                c.ok("quit");
            }
            qsd.awaitExit();
        }
        assertThat(qsdPid).as("QEMU removes its pidfile at a clean exit too").doesNotExist();
    }

    @Test
    void aFileLeftBySigkillIsTakenOverAndAnOldModeIsTightened() throws Exception {
        Path pid = dir.resolve("daemon.pid");
        Files.writeString(pid, "999999\n");
        Files.setPosixFilePermissions(pid, PosixFilePermissions.fromString("rw-rw-rw-"));
        DaemonProcess first = DaemonProcess.start(null, null, List.of("--pidfile", pid.toString()));
        first.awaitReady();
        assertThat(Files.readString(pid)).isEqualTo(first.pid() + "\n");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(pid))).isEqualTo("rw-------");
        first.killHard();
        assertThat(Files.readString(pid)).as("SIGKILL leaves the file").isEqualTo(first.pid() + "\n");
        try (DaemonProcess second = DaemonProcess.start(null, null, List.of("--pidfile", pid.toString()))) {
            second.awaitReady(); // the lock died with the first daemon
            assertThat(Files.readString(pid)).isEqualTo(second.pid() + "\n");
        }
        assertThat(pid).as("removed at SIGTERM").doesNotExist();
    }

    @Test
    void aFileThatCannotBeCreatedIsNamedAsQemuNamesIt() throws Exception {
        Path pid = dir.resolve("missing").resolve("daemon.pid");
        try (DaemonProcess d = DaemonProcess.start(null, null, List.of("--pidfile", pid.toString()))) {
            assertThat(d.awaitExit()).isEqualTo(1);
            String[] qsd = qemu("--pidfile", pid.toString());
            assertThat(qsd[0]).isEqualTo("1");
            assertThat(qsd[1]).isEqualTo("qemu-storage-daemon: cannot create PID file: Could not create '" + pid
                    + "': No such file or directory");
            assertThat(d.log()).contains(qsd[1].replace("qemu-storage-daemon: ", "blockjobd: "));
        }
    }
}
