package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * blockjobd started as QEMU's own tooling starts qemu-storage-daemon: by the Python harness's
 * {@code iotests.QemuStorageDaemon} (the harness listens, the daemon connects), on standard input
 * and output as the test {@code qsd-jobs} does, with {@code --daemonize}, and quietly.
 */
class DaemonCompatIT {
    private static final Duration LONG = Duration.ofSeconds(90);

    @TempDir
    Path dir;
    Path base;
    Path top;

    @BeforeEach
    void chain() {
        base = dir.resolve("base.qcow2");
        top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "16M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 2M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x22 1M 1M");
    }

    /** The chain as blockdevs, with QEMU's implied keys ({@code file,...} for {@code driver=file,...}). */
    private List<String> blockdevs() {
        return List.of("--blockdev", "file,node-name=base-file,filename=" + base,
                "--blockdev", "qcow2,node-name=base,file=base-file",
                "--blockdev", "file,node-name=top-file,filename=" + top,
                "--blockdev", "qcow2,node-name=top,file=top-file,backing=base");
    }

    private static Process start(List<String> args, Map<String, String> env) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(DaemonProcess.blockjobd().toString()));
        cmd.addAll(args);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().putAll(env);
        return pb.start();
    }

    /** A daemon whose stdout and stderr are collected as it runs. */
    private record Run(Process p, CompletableFuture<String> out, CompletableFuture<String> err) {
        static Run of(List<String> args) throws IOException {
            Process p = start(args, Map.of()); // no BLOCKJOBS_LOG_LEVEL: the launcher's default
            return new Run(p, CompletableFuture.supplyAsync(() -> readAll(p.getInputStream())),
                    CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream())));
        }

        /** Waits for the exit; asserts status 0 and that nothing was printed on stdout or stderr. */
        void assertQuietExit() throws Exception {
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).as("exit status (stderr: %s)", err.get(60, TimeUnit.SECONDS)).isZero();
            assertThat(out.get(60, TimeUnit.SECONDS)).as("stdout").isEmpty();
            assertThat(err.get(60, TimeUnit.SECONDS)).as("stderr").isEmpty();
        }
    }

    private static String readAll(java.io.InputStream in) {
        try {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(" + e + ")";
        }
    }

    @Test
    void startedAsIotestsQemuStorageDaemonConnectsToTheHarnessAndStreams() throws Exception {
        // iotests.QemuStorageDaemon(*args, qmp=True): it listens, appends --pidfile and the
        // client-mode monitor, waits for the pid file, checks the pid, then accepts.
        Path sock = dir.resolve("qsd-a.sock");
        Path pidfile = dir.resolve("qsd-a-pid");
        try (ServerSocketChannel harness = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            harness.bind(UnixDomainSocketAddress.of(sock));
            List<String> args = new ArrayList<>(blockdevs());
            args.addAll(List.of("--pidfile", pidfile.toString(),
                    "--chardev", "socket,id=qmp-sock,path=" + sock, "--monitor", "qmp-sock"));
            Run run = Run.of(args);
            Process p = run.p();
            try {
                until(() -> Files.exists(pidfile) || !p.isAlive());
                assertThat(p.isAlive()).as("the daemon runs").isTrue();
                until(() -> !Files.readString(pidfile).isBlank());
                assertThat(Long.parseLong(Files.readString(pidfile).trim())).isEqualTo(p.pid());
                try (SocketChannel connection = harness.accept(); QmpClient qmp = QmpClient.accepted(connection)) {
                    assertThat(qmp.greeting().at("/QMP/capabilities").get(0).asString()).isEqualTo("oob");
                    qmp.ok("block-stream", Map.of("device", "top", "job-id", "stream0"));
                    JsonNode done = qmp.awaitEvent("BLOCK_JOB_COMPLETED", data -> data.path("device").asString().equals("stream0"), LONG);
                    assertThat(done.at("/data/error").isMissingNode()).as("completed without error: %s", done).isTrue();
                    assertThat(done.at("/data/len").asLong()).isEqualTo(16L << 20);
                    qmp.ok("quit");
                }
                run.assertQuietExit();
            } finally {
                p.destroyForcibly();
            }
        }
        assertThat(pidfile).doesNotExist();
        Qemu.assertClean(top);
        assertThat(Qemu.info(top).has("backing-filename")).as("streamed: top has no backing file").isFalse();
        Qemu.io(top, "qcow2", "read -P 0x11 0 1M", "read -P 0x22 1M 1M", "read -P 0 2M 1M");
    }

    @Test
    void aClientModeMonitorThatCannotConnectIsQemusError() throws Exception {
        Path sock = dir.resolve("nobody.sock");
        Process p = start(List.of("--chardev", "socket,id=m,path=" + sock, "--monitor", "m"), Map.of());
        String err = readAll(p.getErrorStream());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).isEqualTo(1);
        assertThat(err).isEqualTo("blockjobd: --chardev socket,id=m,path=" + sock
                + ": Failed to connect to '" + sock + "': No such file or directory\n");
    }

    @Test
    void reconnectConnectsAgainAfterTheHarnessHangsUp() throws Exception {
        Path sock = dir.resolve("r.sock");
        try (ServerSocketChannel harness = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            harness.bind(UnixDomainSocketAddress.of(sock));
            try (DaemonProcess d = DaemonProcess.start(null, null, List.of(
                    "--chardev", "socket,id=m,path=" + sock + ",reconnect=1", "--monitor", "m"))) {
                d.awaitReady();
                try (SocketChannel first = harness.accept(); QmpClient qmp = QmpClient.accepted(first)) {
                    qmp.ok("query-version");
                }
                try (SocketChannel second = harness.accept(); QmpClient qmp = QmpClient.accepted(second)) {
                    assertThat(qmp.ok("query-version").at("/qemu/major").asInt()).isEqualTo(7);
                }
            }
        }
    }

    @Test
    void stdioMonitorDrivesAStreamJobThroughStdinAndStdout() throws Exception {
        // As QEMU's test qsd-jobs: --chardev stdio,id=stdio --monitor chardev=stdio
        List<String> args = new ArrayList<>(List.of("--chardev", "stdio,id=stdio", "--monitor", "chardev=stdio"));
        args.addAll(blockdevs());
        Process p = start(args, Map.of());
        CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()));
        try {
            OutputStream in = p.getOutputStream();
            BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            JsonNode greeting = Qemu.JSON.readTree(out.readLine());
            assertThat(greeting.has("QMP")).isTrue();
            send(in, "{\"execute\": \"qmp_capabilities\"}");
            send(in, "{\"execute\": \"block-stream\", \"arguments\": {\"device\": \"top\", \"job-id\": \"job0\"}}");
            List<JsonNode> replies = new ArrayList<>();
            JsonNode completed = null;
            String line;
            while (completed == null && (line = out.readLine()) != null) {
                JsonNode m = Qemu.JSON.readTree(line); // every line of stdout is one QMP message
                if (!m.has("event")) {
                    replies.add(m);
                } else if (m.get("event").asString().equals("BLOCK_JOB_COMPLETED")) {
                    completed = m;
                }
            }
            assertThat(completed).as("BLOCK_JOB_COMPLETED on stdout").isNotNull();
            assertThat(completed.at("/data/device").asString()).isEqualTo("job0");
            assertThat(completed.at("/data/error").isMissingNode()).isTrue();
            send(in, "{\"execute\": \"quit\"}");
            while (replies.size() < 3 && (line = out.readLine()) != null) {
                JsonNode m = Qemu.JSON.readTree(line);
                if (!m.has("event")) {
                    replies.add(m);
                }
            }
            assertThat(replies).map(JsonNode::toString).containsExactly("{\"return\":{}}", "{\"return\":{}}", "{\"return\":{}}");
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).isZero();
            assertThat(err.get(60, TimeUnit.SECONDS)).as("nothing on stderr").isEmpty();
        } finally {
            p.destroyForcibly();
        }
        Qemu.assertClean(top);
        Qemu.io(top, "qcow2", "read -P 0x11 0 1M", "read -P 0x22 1M 1M");
    }

    @Test
    void prettyStdioOutputIsQsdsByteForByte() throws Exception {
        String script = """
                {"execute": "qmp_capabilities"}
                {"execute": "query-block-exports"}
                {"execute": "query-jobs", "id": {"a": ["\u00e9\\n\\u0001", 1, true, null, {}, []]}}
                {"execute": "no-such-command"}
                {"execute": "quit"}
                """;
        List<String> args = List.of("--chardev", "stdio,id=stdio", "--monitor", "chardev=stdio,pretty=on");
        String ours = run(DaemonProcess.blockjobd().toString(), args, script);
        String qsd = run("qemu-storage-daemon", args, script);
        // After the greeting (versions differ), QSD's replies exactly; QSD 7.2 sends no SHUTDOWN event on quit.
        String qsdReplies = qsd.substring(qsd.indexOf("\r\n}\r\n") + 5);
        String ourReplies = ours.substring(ours.indexOf("\r\n}\r\n") + 5);
        assertThat(qsdReplies).contains("\"class\": \"CommandNotFound\"").contains("{\r\n    \"return\": {\r\n    }\r\n}\r\n");
        assertThat(ourReplies).startsWith(qsdReplies);
        assertThat(ours).startsWith("{\r\n    \"QMP\": {\r\n        \"version\": {\r\n            \"qemu\": {\r\n");
    }

    @Test
    void repliesLeaveInOrderAndShutdownFollowsQuitsReply() throws Exception {
        // Pipelined requests, half answered by the main loop and half at once (a bad member): the
        // replies keep the requests' order, and quit's SHUTDOWN comes after quit's reply, as in QEMU.
        StringBuilder script = new StringBuilder("{\"execute\": \"qmp_capabilities\"}\n");
        int requests = 400;
        for (int i = 0; i < requests; i++) {
            script.append(i % 2 == 0
                    ? "{\"execute\": \"query-jobs\", \"id\": " + i + "}\n"
                    : "{\"execute\": \"query-jobs\", \"id\": " + i + ", \"bogus\": 1}\n");
        }
        script.append("{\"execute\": \"quit\", \"id\": \"quit\"}\n");
        String out = run(DaemonProcess.blockjobd().toString(),
                List.of("--chardev", "stdio,id=stdio", "--monitor", "chardev=stdio"), script.toString());
        List<String> order = new ArrayList<>();
        for (String line : out.split("\r\n")) {
            JsonNode m = Qemu.JSON.readTree(line);
            if (m.has("event")) {
                order.add(m.get("event").asString());
            } else if (m.has("id")) {
                order.add(m.get("id").asString());
            }
        }
        List<String> expected = new ArrayList<>();
        for (int i = 0; i < requests; i++) {
            expected.add(Integer.toString(i));
        }
        expected.add("quit");
        expected.add("SHUTDOWN");
        assertThat(order).containsExactlyElementsOf(expected);
    }

    private static String run(String program, List<String> args, String stdin) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(program));
        cmd.addAll(args);
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        try (OutputStream in = p.getOutputStream()) {
            in.write(stdin.getBytes(StandardCharsets.UTF_8));
        }
        String out = readAll(p.getInputStream());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).as("%s exits after quit", program).isTrue();
        assertThat(p.exitValue()).isZero();
        return out;
    }

    private static void send(OutputStream in, String line) throws IOException {
        in.write((line + "\n").getBytes(StandardCharsets.UTF_8));
        in.flush();
    }

    @Test
    void daemonizeReturnsOnceThePidFileIsWrittenAndTheMonitorListens() throws Exception {
        Path sock = dir.resolve("qmp.sock");
        Path pidfile = dir.resolve("pid");
        List<String> args = new ArrayList<>(List.of("--daemonize", "--pidfile", pidfile.toString(),
                "--chardev", "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "m"));
        args.addAll(blockdevs());
        Process parent = new ProcessBuilder(concat(DaemonProcess.blockjobd().toString(), args)).redirectErrorStream(true).start();
        String said = readAll(parent.getInputStream()); // ends only once every holder of the pipe let go: the daemon too
        assertThat(parent.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(parent.exitValue()).as("parent's exit status (said: %s)", said).isZero();
        assertThat(said).isEmpty();
        assertThat(pidfile).exists();
        long pid = Long.parseLong(Files.readString(pidfile).trim());
        ProcessHandle daemon = ProcessHandle.of(pid).orElseThrow();
        try {
            assertThat(daemon.isAlive()).isTrue();
            assertThat(pid).isNotEqualTo(parent.pid());
            try (QmpClient qmp = QmpClient.connect(sock)) {
                assertThat(qmp.ok("query-named-block-nodes").findValuesAsString("node-name")).contains("top", "base");
                qmp.ok("quit");
            }
            daemon.onExit().get(60, TimeUnit.SECONDS);
        } finally {
            daemon.destroyForcibly();
        }
        assertThat(pidfile).doesNotExist();
    }

    @Test
    void daemonizeFailingBeforeReadyExitsOneWithTheMessage() throws Exception {
        Path sock = dir.resolve("qmp.sock");
        Process parent = new ProcessBuilder(concat(DaemonProcess.blockjobd().toString(), List.of("--daemonize",
                "--blockdev", "file,node-name=f,filename=" + dir.resolve("missing.qcow2"),
                "--chardev", "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "m"))).start();
        String err = readAll(parent.getErrorStream());
        assertThat(parent.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(parent.exitValue()).isEqualTo(1);
        assertThat(err).startsWith("blockjobd: --blockdev file,node-name=f,filename=" + dir.resolve("missing.qcow2") + ": ");
        assertThat(sock).doesNotExist();
        Process stdio = new ProcessBuilder(concat(DaemonProcess.blockjobd().toString(),
                List.of("--daemonize", "--chardev", "stdio,id=s", "--monitor", "s"))).start();
        assertThat(readAll(stdio.getErrorStream())).isEqualTo("blockjobd: --chardev stdio,id=s: cannot use stdio with -daemonize\n");
        assertThat(stdio.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(stdio.exitValue()).isEqualTo(1);
    }

    @Test
    void aNormalStartAndStopPrintsNothing() throws Exception {
        Path sock = dir.resolve("qmp.sock");
        Path nbd = dir.resolve("nbd.sock");
        List<String> args = new ArrayList<>(blockdevs());
        args.addAll(List.of("--chardev", "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "m",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd, "--export", "nbd,id=e,node-name=top"));
        Run first = Run.of(args);
        try {
            until(() -> Files.exists(sock) || !first.p().isAlive());
            try (QmpClient qmp = QmpClient.connect(sock)) {
                qmp.ok("query-block-exports");
                qmp.ok("quit");
            }
            first.assertQuietExit();
        } finally {
            first.p().destroyForcibly();
        }
        // SIGTERM, the other normal stop, is as quiet.
        Run second = Run.of(args);
        try {
            until(() -> Files.exists(sock) || !second.p().isAlive());
            try (QmpClient qmp = QmpClient.connect(sock)) {
                qmp.ok("query-version");
            }
            second.p().toHandle().destroy(); // SIGTERM; Process.destroy() would close the streams being read
            second.assertQuietExit();
        } finally {
            second.p().destroyForcibly();
        }
    }

    /** Polls, as iotests.QemuStorageDaemon polls for its pid file, with a generous bound. */
    private static void until(Callable<Boolean> condition) throws Exception {
        long end = System.nanoTime() + LONG.toNanos();
        while (!condition.call()) {
            if (System.nanoTime() > end) {
                throw new AssertionError("not within " + LONG);
            }
            Thread.sleep(10);
        }
    }

    private static List<String> concat(String first, List<String> rest) {
        List<String> all = new ArrayList<>(List.of(first));
        all.addAll(rest);
        return all;
    }
}
