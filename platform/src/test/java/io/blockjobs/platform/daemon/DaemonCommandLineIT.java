package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/** blockjobd takes qemu-storage-daemon's command line, refuses bad options, and stops cleanly. */
class DaemonCommandLineIT {

    @TempDir
    Path dir;
    Path base;
    Path top;

    @BeforeEach
    void chain() {
        base = dir.resolve("base.qcow2");
        top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "64M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 1M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x22 1M 1M");
    }

    @Test
    void theIssuesCommandLineStartsAndServes() throws Exception {
        Path qmp = dir.resolve("qmp.sock");
        Path nbd = dir.resolve("nbd.sock");
        Path pid = dir.resolve("pid");
        try (DaemonProcess d = DaemonProcess.start(qmp, nbd, List.of(
                "--blockdev", "driver=file,node-name=f0,filename=" + base,
                "--blockdev", "driver=qcow2,node-name=disk0,file=f0",
                "--blockdev", "{\"driver\":\"qcow2\",\"node-name\":\"top\",\"file\":{\"driver\":\"file\",\"filename\":\""
                        + top + "\"},\"backing\":\"disk0\"}",
                "--chardev", "socket,id=mon0,path=" + qmp + ",server=on,wait=off",
                "--monitor", "chardev=mon0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,node-name=top,name=top,writable=on",
                "--pidfile", pid.toString()))) {
            d.awaitReady();
            assertThat(Files.readString(pid).trim()).isEqualTo(String.valueOf(d.pid()));
            assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(qmp))).isEqualTo("rw-------");
            Qemu.ioNbd(d.nbdUri("top"), "read -P 0x11 0 1M", "read -P 0x22 1M 1M");
            try (QmpClient c = QmpClient.connect(qmp)) {
                JsonNode nodes = c.ok("query-named-block-nodes", java.util.Map.of("flat", true));
                assertThat(nodes.findValuesAsString("node-name")).contains("f0", "disk0", "top");
                assertThat(c.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("top");
            }
            assertThat(d.stdout()).as("the daemon prints nothing to stdout").isEmpty();
        }
        assertThat(pid).doesNotExist();
        Qemu.assertClean(top);
        Qemu.assertClean(base);
    }

    @Test
    void backingChainOpensFromTheImagesOwnNames() throws Exception {
        try (DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top,
                "--export", "type=nbd,id=e,node-name=top,writable=on"));
             QmpClient c = QmpClient.connect(d.qmpSocket)) {
            JsonNode nodes = c.ok("query-named-block-nodes");
            JsonNode topInfo = null;
            for (JsonNode n : nodes) {
                if (n.get("node-name").asString().equals("top")) {
                    topInfo = n;
                }
            }
            assertThat(topInfo).isNotNull();
            assertThat(topInfo.get("backing_file_depth").asInt()).isEqualTo(1);
            assertThat(topInfo.at("/image/backing-image/filename").asString()).isEqualTo(base.toString());
            assertThat(topInfo.at("/image/backing-filename").asString()).isEqualTo("base.qcow2");
            Qemu.ioNbd(d.nbdUri("top"), "read -P 0x11 0 1M", "read -P 0x22 1M 1M", "read -P 0 2M 1M");
        }
    }

    @Test
    void loopbackTcpMonitor() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        try (DaemonProcess d = DaemonProcess.start(null, null, List.of(
                "--chardev", "socket,id=m,host=127.0.0.1,port=" + port + ",server=on,wait=off", "--monitor", "m"))) {
            d.awaitReady();
            try (Socket s = new Socket("127.0.0.1", port)) {
                var in = new java.io.BufferedReader(new java.io.InputStreamReader(s.getInputStream()));
                assertThat(in.readLine()).startsWith("{\"QMP\":");
            }
        }
    }

    @Test
    void badOptionsExitBeforeAnythingListens() throws Exception {
        Path qmp = dir.resolve("qmp.sock");
        String[][] cases = {
            {"--frobnicate", "x", "--frobnicate"},
            {"--blockdev", "driver=file,node-name=f0,filename=" + dir.resolve("missing.qcow2"), "--blockdev"},
            {"--blockdev", "driver=vmdk,node-name=v,file=x", "--blockdev"},
            {"--blockdev", "driver=file,node-name=1bad,filename=" + base, "--blockdev"},
            {"--export", "type=nbd,id=e,node-name=nowhere", "--export"},
            {"--monitor", "chardev=nope", "--monitor"},
            {"--workflow-schedule", "name=n,script=compact-chain.js,schedule=every day", "Invalid schedule 'every day'"},
            {"--workflow-schedule", "name=n,script=nowhere.js,schedule=@daily", "nowhere.js': No such file"},
        };
        for (String[] c : cases) {
            try (DaemonProcess d = DaemonProcess.start(qmp, null, List.of(c[0], c[1],
                    "--chardev", "socket,id=mon0,path=" + qmp + ",server=on,wait=off", "--monitor", "chardev=mon0"))) {
                assertThat(d.awaitExit()).as("exit status for %s", c[0] + " " + c[1]).isEqualTo(1);
                assertThat(String.join("\n", d.log())).as("message for %s", c[0]).contains(c[2]);
                assertThat(qmp).as("nothing listens after %s", c[0]).doesNotExist();
            }
        }
    }

    @Test
    void workflowSchedulesFromTheCommandLineRunUnattended() throws Exception {
        Path script = dir.resolve("tick.js");
        Files.writeString(script, "export default async function (bj, args) { return args.n + '!'; }");
        try (DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of(
                "--workflow-schedule", "name=tick,script=" + script + ",schedule=* * * * * *,args.n=3"));
             QmpClient c = QmpClient.connect(d.qmpSocket)) {
            JsonNode finished = c.awaitEvent("WORKFLOW_FINISHED", e -> e.get("id").asString().equals("tick-1"));
            assertThat(finished.at("/data/result").asString()).isEqualTo("3!");
            JsonNode schedule = c.ok("query-workflow-schedules").get(0);
            assertThat(schedule.get("name").asString()).isEqualTo("tick");
            assertThat(schedule.get("schedule").asString()).isEqualTo("* * * * * *");
            assertThat(schedule.get("runs").asLong()).isPositive();
        }
    }

    @Test
    void helpAndVersion() throws Exception {
        try (DaemonProcess d = DaemonProcess.start(null, null, List.of("--version"))) {
            assertThat(d.awaitExit()).isZero();
            assertThat(d.stdout()).startsWith("blockjobd ");
        }
        try (DaemonProcess d = DaemonProcess.start(null, null, List.of("--help"))) {
            assertThat(d.awaitExit()).isZero();
            assertThat(d.stdout()).contains("--blockdev", "--nbd-server", "--export", "--workflow-schedule");
        }
    }

    @Test
    void sigtermClosesImagesCleanly() throws Exception {
        DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top,
                "--export", "type=nbd,id=e,node-name=top,writable=on"));
        try (QmpClient c = QmpClient.connect(d.qmpSocket)) {
            Qemu.ioNbd(d.nbdUri("top"), "write -P 0x33 10M 5M");
            d.close(); // SIGTERM
            c.awaitEvent("SHUTDOWN", data -> data.get("reason").asString().equals("host-signal"));
            assertThat(d.awaitExit()).isZero();
        }
        Qemu.assertClean(top);
        Qemu.io(top, "qcow2", "read -P 0x33 10M 5M");
    }
}
