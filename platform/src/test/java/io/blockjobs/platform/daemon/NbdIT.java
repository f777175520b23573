package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against blockjobd's exports. */
class NbdIT {

    @TempDir
    Path dir;
    Path base;
    Path top;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeEach
    void start() throws Exception {
        base = dir.resolve("base.qcow2");
        top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "64M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 8M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.toString());
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top,
                "--export", "type=nbd,id=exp0,node-name=top,name=top,writable=on,description=the top"));
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        qmp.close();
        daemon.close();
    }

    @Test
    void writesThroughOneConnectionAreSeenThroughAnother() throws Exception {
        String uri = daemon.nbdUri("top");
        Qemu.ioNbd(uri, "write -P 0x22 4M 2M", "write -z 12M 1M", "write -P 0x23 20M 64k", "discard 1M 1M", "flush");
        Path expected = dir.resolve("expected.raw");
        Qemu.img("create", "-f", "raw", expected.toString(), "64M");
        // discard=ignore, QEMU's default: the trim is accepted and the data stays.
        Qemu.io(expected, "raw", "write -P 0x11 0 8M", "write -P 0x22 4M 2M", "write -P 0x23 20M 64k");
        assertThat(Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), uri).exit())
                .as("qemu-img compare over a second connection").isZero();
        // Two writers at once on separate connections.
        CompletableFuture<Qemu.Result> a = CompletableFuture.supplyAsync(() -> Qemu.ioNbd(uri, "write -P 0x44 30M 4M"));
        CompletableFuture<Qemu.Result> b = CompletableFuture.supplyAsync(() -> Qemu.ioNbd(uri, "write -P 0x55 40M 4M"));
        a.join();
        b.join();
        Qemu.ioNbd(uri, "read -P 0x44 30M 4M", "read -P 0x55 40M 4M", "read -P 0 12M 1M");
        qmp.ok("quit");
        assertThat(daemon.awaitExit()).isZero();
        Qemu.assertClean(top);
        Qemu.assertClean(base);
        Qemu.io(top, "qcow2", "read -P 0x22 4M 2M", "read -P 0x44 30M 4M", "read -P 0x55 40M 4M");
    }

    @Test
    void nbdinfoAndNbdcopy() throws Exception {
        String uri = daemon.nbdUri("top");
        Qemu.ioNbd(uri, "write -P 0x22 16M 1M");
        Qemu.Result map = Qemu.run("nbdinfo", "--map", uri).ok();
        // base:allocation of the whole chain: data where base and top have it, a zero hole elsewhere.
        assertThat(map.out()).containsPattern("\\s0\\s+8388608\\s+0\\s+data")
                .containsPattern("8388608\\s+8388608\\s+3\\s+hole,zero")
                .containsPattern("16777216\\s+1048576\\s+0\\s+data");
        Qemu.Result list = Qemu.run("nbdinfo", "--list", "nbd+unix:///?socket=" + daemon.nbdSocket).ok();
        assertThat(list.out()).contains("export=\"top\"").contains("description: the top");
        Path copy = dir.resolve("copy.raw");
        Qemu.run("nbdcopy", uri, copy.toString()).ok();
        assertThat(Files.size(copy)).isEqualTo(64 << 20);
        assertThat(Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", copy.toString(), uri).exit()).isZero();
        // nbdcopy writes back too.
        Path source = dir.resolve("source.raw");
        Qemu.img("create", "-f", "raw", source.toString(), "64M");
        Qemu.io(source, "raw", "write -P 0x77 0 64M");
        Qemu.run("nbdcopy", source.toString(), uri).ok();
        Qemu.ioNbd(uri, "read -P 0x77 0 64M");
    }

    @Test
    void readOnlyExportsRefuseWrites() throws Exception {
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "ro", "node-name", "top", "name", "ro"));
        String uri = daemon.nbdUri("ro");
        Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", uri).ok();
        Qemu.Result w = Qemu.run("qemu-io", "-f", "raw", "-c", "write 0 4k", uri);
        assertThat(w.out() + w.err()).containsIgnoringCase("Permission denied").doesNotContain("wrote 4096");
        Qemu.Result info = Qemu.run("nbdinfo", uri).ok();
        assertThat(info.out()).contains("is_read_only: true");
    }

    @Test
    void serverAndExportsThroughQmp() throws Exception {
        assertThat(qmp.error("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                Map.of("path", dir.resolve("other.sock").toString())))).get("desc").asString())
                .isEqualTo("NBD server already running");
        assertThat(qmp.error("block-export-add", Map.of("type", "nbd", "id", "exp0", "node-name", "top"))
                .get("desc").asString()).isEqualTo("Block export id 'exp0' is already in use");
        assertThat(qmp.error("block-export-add", Map.of("type", "nbd", "id", "x", "node-name", "top", "name", "top"))
                .get("desc").asString()).isEqualTo("NBD server already has export named 'top'");
        assertThat(qmp.error("block-export-del", Map.of("id", "nope")).get("desc").asString())
                .isEqualTo("Export 'nope' is not found");
        qmp.ok("nbd-server-stop");
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("exp0"));
        assertThat(qmp.ok("query-block-exports").isEmpty()).isTrue();
        assertThat(qmp.error("nbd-server-stop", null).get("desc").asString()).isEqualTo("NBD server not running");
        // QMP's nbd-server-start takes the legacy address form, as in QEMU.
        Path sock = dir.resolve("again.sock");
        qmp.ok("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data", Map.of("path", sock.toString()))));
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e2", "node-name", "top", "writable", true));
        Qemu.ioNbd("nbd+unix:///top?socket=" + sock, "write -P 0x66 0 64k", "read -P 0x66 0 64k");
    }
}
