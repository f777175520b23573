package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.platform.testkit.StorageDaemon;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * blockjobd's NBD client ({@code driver: nbd}) against real servers: qemu-nbd, qemu-storage-daemon's
 * export and a second blockjobd. The client's node is exported again by the blockjobd under test,
 * so that qemu-io, qemu-img compare and qemu-img map drive it from outside; what they see must be
 * what the server's image holds.
 */
class NbdClientIT {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    DaemonProcess client;
    QmpClient qmp;
    final List<AutoCloseable> servers = new ArrayList<>();

    @BeforeEach
    void startClient() throws Exception {
        Path home = Files.createDirectories(dir.resolve("client"));
        client = DaemonProcess.startWithMonitor(home, List.of());
        qmp = QmpClient.connect(client.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        qmp.close();
        client.close();
        for (AutoCloseable s : servers.reversed()) {
            s.close();
        }
    }

    // ---- servers ----------------------------------------------------------------------------------

    /** qemu-nbd serving {@code image} as export {@code exp} on {@code socket}, ready when this returns. */
    private final class QemuNbd implements AutoCloseable {
        final Path socket;
        final ProcessHandle process;

        QemuNbd(Path socket, Path image, String format, String... extra) throws IOException {
            this(socket, List.of("-k", socket.toString()), image, format, extra);
        }

        /** On TCP, 127.0.0.1:{@code port}. */
        QemuNbd(int port, Path image, String format, String... extra) throws IOException {
            this(null, List.of("-b", "127.0.0.1", "-p", Integer.toString(port)), image, format, extra);
        }

        private QemuNbd(Path socket, List<String> address, Path image, String format, String... extra) throws IOException {
            this.socket = socket;
            Path pidFile = Files.createTempFile(dir, "qemu-nbd", ".pid");
            Files.delete(pidFile);
            List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "--fork", "--pid-file", pidFile.toString()));
            cmd.addAll(address);
            cmd.addAll(List.of("-f", format, "-x", "exp", "--persistent", "-e", "16"));
            cmd.addAll(List.of(extra));
            cmd.add(image.toString());
            Qemu.run(cmd.toArray(String[]::new)).ok(); // --fork: returns once the socket listens
            process = ProcessHandle.of(Long.parseLong(Files.readString(pidFile).trim())).orElseThrow();
            servers.add(this);
        }

        @Override
        public void close() throws Exception {
            if (process.isAlive()) {
                var gone = process.onExit();
                process.destroy();
                gone.get(60, TimeUnit.SECONDS);
            }
        }
    }

    private static Map<String, Object> unix(Path socket) {
        return Map.of("type", "unix", "path", socket.toString());
    }

    /** blockdev-add of an nbd node (extra members after the address and export). */
    private void addNbd(String node, Map<String, Object> server, String export, Object... extra) throws IOException {
        qmp.ok("blockdev-add", nbd(node, server, export, extra));
    }

    private static Map<String, Object> nbd(String node, Map<String, Object> server, String export, Object... extra) {
        Map<String, Object> a = new LinkedHashMap<>();
        a.put("driver", "nbd");
        if (node != null) {
            a.put("node-name", node);
        }
        a.put("server", server);
        if (export != null) {
            a.put("export", export);
        }
        for (int i = 0; i < extra.length; i += 2) {
            a.put((String) extra[i], extra[i + 1]);
        }
        return a;
    }

    /** Exports {@code node} from the client daemon as {@code name}, writable; returns its URI. */
    private String reexport(String node, String name) throws IOException {
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e-" + name, "node-name", node, "name", name,
                "writable", true));
        return client.nbdUri(name);
    }

    private Path randomRaw(String name, int size, long seed) throws IOException {
        byte[] data = new byte[size];
        new SplittableRandom(seed).nextBytes(data);
        Path p = dir.resolve(name);
        Files.write(p, data);
        return p;
    }

    /** The same writes, write-zeroes and discards, on an image (expected) or through NBD (actual). */
    private static final String[] WORKLOAD = {
        "write -P 0x22 4M 2M", "write -z 12M 1M", "write -P 0x23 20M 64k", "discard 1M 1M",
        "aio_write -P 0x44 30M 1M", "aio_write -P 0x45 31M 1M", "aio_write -P 0x46 33M 512k", "aio_write -z 36M 2M",
        "aio_flush", "write -P 0x47 100 1000", "write -f -P 0x48 50M 64k", "write -z -f 52M 64k", "write -z -u 40M 4M", "flush",
    };

    // ---- tests ------------------------------------------------------------------------------------

    @Test
    void qemuNbdExportThroughTheClient() throws Exception {
        Path image = dir.resolve("served.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "64M");
        Qemu.io(image, "qcow2", "write -P 0x11 0 8M", "write -P 0x12 48M 1M");
        Path expected = dir.resolve("expected.qcow2");
        Files.copy(image, expected);
        QemuNbd server = new QemuNbd(dir.resolve("qn.sock"), image, "qcow2");
        addNbd("n0", unix(server.socket), "exp");

        JsonNode nodes = qmp.ok("query-named-block-nodes", Map.of("flat", true));
        String filename = "nbd+unix:///exp?socket=" + server.socket;
        assertThat(nodes.get(0).get("drv").asString()).isEqualTo("nbd");
        assertThat(nodes.get(0).get("file").asString()).isEqualTo(filename);
        assertThat(nodes.get(0).get("image").get("filename").asString()).isEqualTo(filename);
        assertThat(nodes.get(0).get("image").get("format").asString()).isEqualTo("nbd");
        assertThat(nodes.get(0).get("image").get("virtual-size").asLong()).isEqualTo(64L * MIB);
        assertThat(nodes.get(0).get("ro").asBoolean()).isFalse();
        JsonNode graph = qmp.ok("x-debug-query-block-graph");
        assertThat(graph.get("nodes").toString()).contains("\"name\":\"n0\"");

        String uri = reexport("n0", "re");
        Qemu.ioNbd(uri, "read -P 0x11 0 8M", "read -P 0x12 48M 1M", "read -P 0 9M 1M");
        Qemu.ioNbd(uri, WORKLOAD);
        Qemu.io(expected, "qcow2", WORKLOAD);
        Qemu.ioNbd(uri, "read -P 0x47 100 1000", "read -P 0x45 31M 1M", "read -P 0 36M 2M");
        // Many requests in flight on the client's one connection: an out-of-order convert, 16 coroutines.
        Path source = randomRaw("source.raw", 16 * MIB, 13);
        Qemu.img("convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw", source.toString(), uri);
        Qemu.img("convert", "-n", "-f", "raw", "-O", "qcow2", source.toString(), expected.toString());
        // Block status through the client: the same extents as qemu-nbd reports directly.
        assertThat(Qemu.img("map", "--output=json", "-f", "raw", uri).out())
                .isEqualTo(Qemu.img("map", "--output=json", "-f", "raw", "nbd+unix:///exp?socket=" + server.socket).out());
        assertThat(Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", uri,
                "nbd+unix:///exp?socket=" + server.socket).exit()).as("client view = server view").isZero();
        qmp.ok("block-export-del", Map.of("id", "e-re"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-re"));
        qmp.ok("blockdev-del", Map.of("node-name", "n0"));
        server.close();
        Qemu.assertClean(image);
        assertThat(Qemu.identical(image, "qcow2", expected, "qcow2")).as("served image = the same writes done locally").isTrue();
    }

    @Test
    void qcow2OverQemuStorageDaemonsExport() throws Exception {
        // QSD exports the qcow2 *file*; blockjobd opens the qcow2 format over an nbd protocol node.
        Path image = dir.resolve("disk.qcow2");
        // An NBD export cannot grow (as in QEMU, writes past its end fail EINVAL): every cluster is allocated up front.
        Qemu.img("create", "-f", "qcow2", "-o", "preallocation=metadata", image.toString(), "64M");
        Qemu.io(image, "qcow2", "write -P 0x31 0 4M");
        Path expected = dir.resolve("expected.qcow2");
        Files.copy(image, expected);
        Path qsdHome = Files.createDirectories(dir.resolve("qsd"));
        StorageDaemon qsd = StorageDaemon.start(StorageDaemon.Kind.QEMU, qsdHome, List.of(
                "--blockdev", "driver=file,node-name=f0,filename=" + image,
                "--export", "type=nbd,id=e0,node-name=f0,name=file,writable=on"));
        servers.add(qsd);
        Path socket = qsdHome.resolve("nbd.sock");
        qmp.ok("blockdev-add", Map.of("driver", "qcow2", "node-name", "q0",
                "file", nbd("nf", unix(socket), "file")));
        JsonNode nodes = qmp.ok("query-named-block-nodes", Map.of("flat", true));
        assertThat(nodes.toString()).contains("\"drv\":\"qcow2\"").contains("\"drv\":\"nbd\"")
                .contains("nbd+unix:///file?socket=" + socket);
        String uri = reexport("q0", "q");
        Qemu.ioNbd(uri, "read -P 0x31 0 4M");
        Qemu.ioNbd(uri, WORKLOAD);
        Qemu.io(expected, "qcow2", WORKLOAD);
        Path source = randomRaw("source.raw", 8 * MIB, 29);
        Qemu.img("convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw", source.toString(), uri);
        Qemu.img("convert", "-n", "-f", "raw", "-O", "qcow2", source.toString(), expected.toString());
        qmp.ok("block-export-del", Map.of("id", "e-q"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-q"));
        qmp.ok("blockdev-del", Map.of("node-name", "q0"));
        qsd.quit();
        Qemu.assertClean(image);
        assertThat(Qemu.identical(image, "qcow2", expected, "qcow2")).isTrue();
    }

    @Test
    void rawOverAnotherBlockjobdWithItsDirtyBitmap() throws Exception {
        Path image = dir.resolve("other.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "32M");
        Qemu.io(image, "qcow2", "write -P 0x51 0 2M");
        Path home = Files.createDirectories(dir.resolve("server"));
        StorageDaemon other = StorageDaemon.start(StorageDaemon.Kind.BLOCKJOBD, home, List.of(
                "--blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename=" + image));
        servers.add(other);
        other.qmp.ok("block-dirty-bitmap-add", Map.of("node", "d0", "name", "b0"));
        other.qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "d0", "name", "disk",
                "writable", true, "bitmaps", List.of("b0")));
        Path socket = home.resolve("nbd.sock");
        qmp.ok("blockdev-add", Map.of("driver", "raw", "node-name", "r0", "file", nbd(null, unix(socket), "disk")));
        String uri = reexport("r0", "r");
        Qemu.ioNbd(uri, "read -P 0x51 0 2M", "write -P 0x52 8M 1M", "write -z 16M 1M", "flush");
        Qemu.ioNbd(other.nbdUri("disk"), "read -P 0x52 8M 1M", "read -P 0x51 0 2M");
        // x-dirty-bitmap: block status reports the bitmap, dirty as "no data" (QEMU's trick).
        addNbd("bm", unix(socket), "disk", "x-dirty-bitmap", "qemu:dirty-bitmap:b0", "read-only", true);
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e-bm", "node-name", "bm", "name", "bm"));
        JsonNode map = Qemu.JSON.readTree(Qemu.img("map", "--output=json", "-f", "raw", client.nbdUri("bm")).out());
        List<String> dirty = new ArrayList<>();
        for (JsonNode e : map) {
            if (!e.get("data").asBoolean()) {
                dirty.add(e.get("start").asLong() + "+" + e.get("length").asLong());
            }
        }
        assertThat(dirty).containsExactly(8 * MIB + "+" + MIB, 16 * MIB + "+" + MIB);
        // The bitmap's context is required: an unknown one fails the open as QEMU's does.
        assertThat(qmp.error("blockdev-add", nbd("bad", unix(socket), "disk", "x-dirty-bitmap", "qemu:dirty-bitmap:nope"))
                .get("desc").asString()).isEqualTo("Could not open image: Invalid argument");
        qmp.ok("block-export-del", Map.of("id", "e-bm"));
        qmp.ok("block-export-del", Map.of("id", "e-r"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-r"));
        qmp.ok("blockdev-del", Map.of("node-name", "r0"));
        other.quit();
        Qemu.assertClean(image);
        Qemu.io(image, "qcow2", "read -P 0x52 8M 1M", "read -P 0 16M 1M", "read -P 0x51 0 2M");
    }

    @Test
    void readOnlyExports() throws Exception {
        Path image = dir.resolve("ro.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "16M");
        Qemu.io(image, "qcow2", "write -P 0x61 0 1M");
        QemuNbd server = new QemuNbd(dir.resolve("ro.sock"), image, "qcow2", "-r");
        assertThat(qmp.error("blockdev-add", nbd("w", unix(server.socket), "exp")).get("desc").asString())
                .isEqualTo("Could not open image: Permission denied");
        addNbd("ro", unix(server.socket), "exp", "read-only", true);
        addNbd("auto", unix(server.socket), "exp", "auto-read-only", true);
        JsonNode nodes = qmp.ok("query-named-block-nodes", Map.of("flat", true));
        for (JsonNode n : nodes) {
            assertThat(n.get("ro").asBoolean()).as(n.get("node-name").asString()).isTrue();
        }
        assertThat(qmp.error("block-export-add", Map.of("type", "nbd", "id", "x", "node-name", "ro", "writable", true))
                .get("desc").asString()).isNotBlank();
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e-ro", "node-name", "ro", "name", "ro"));
        Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x61 0 1M", client.nbdUri("ro")).ok();
        Qemu.Result w = Qemu.run("qemu-io", "-f", "raw", "-c", "write 0 4k", client.nbdUri("ro"));
        assertThat(w.out() + w.err()).doesNotContain("wrote 4096");
        // The same export over TCP (a second read-only server may share the image).
        int port;
        try (java.net.ServerSocket probe = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        new QemuNbd(port, image, "qcow2", "-r");
        addNbd("tcp", Map.of("type", "inet", "host", "127.0.0.1", "port", Integer.toString(port)), "exp", "read-only", true);
        JsonNode tcp = qmp.ok("query-named-block-nodes", Map.of("flat", true)).get(0);
        assertThat(tcp.get("node-name").asString()).isEqualTo("tcp");
        assertThat(tcp.get("file").asString()).isEqualTo("nbd://127.0.0.1:" + port + "/exp");
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e-tcp", "node-name", "tcp", "name", "tcp"));
        Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x61 0 1M", "-c", "read -P 0 1M 1M", client.nbdUri("tcp")).ok();
    }

    /** A job writes into a node over NBD: block-commit of a local layer into a qcow2 base served by qemu-nbd. */
    @Test
    void commitIntoABaseOverNbd() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", "-o", "preallocation=metadata", base.toString(), "32M"); // the export cannot grow
        Qemu.io(base, "qcow2", "write -P 0x81 0 4M");
        Path mid = dir.resolve("mid.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", mid.toString());
        Qemu.io(mid, "qcow2", "write -P 0x82 2M 4M", "write -z 8M 1M");
        Path top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", mid.toString(), "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x83 5M 1M");
        Path expected = dir.resolve("expected.raw");
        Qemu.img("convert", "-f", "qcow2", "-O", "raw", top.toString(), expected.toString());
        QemuNbd server = new QemuNbd(dir.resolve("base.sock"), base, "raw"); // the qcow2 file, as bytes
        qmp.ok("blockdev-add", Map.of("driver", "qcow2", "node-name", "base", "file", nbd(null, unix(server.socket), "exp")));
        qmp.ok("blockdev-add", Map.of("driver", "qcow2", "node-name", "mid", "backing", "base",
                "file", Map.of("driver", "file", "filename", mid.toString())));
        qmp.ok("blockdev-add", Map.of("driver", "qcow2", "node-name", "top", "backing", "mid",
                "file", Map.of("driver", "file", "filename", top.toString())));
        qmp.ok("block-commit", Map.of("job-id", "c", "device", "top", "top-node", "mid", "base-node", "base"));
        JsonNode done = qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("c"));
        assertThat(done.get("data").has("error")).as("%s", done).isFalse();
        String uri = reexport("top", "top");
        assertThat(Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), uri).exit())
                .as("the guest's view after the commit").isZero();
        qmp.ok("block-export-del", Map.of("id", "e-top"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-top"));
        for (String node : List.of("top", "mid", "base")) { // mid, dropped from the chain, still holds base
            qmp.ok("blockdev-del", Map.of("node-name", node));
        }
        server.close();
        Qemu.assertClean(base);
        // The base now holds what mid held over it.
        Qemu.io(base, "qcow2", "read -P 0x81 0 2M", "read -P 0x82 2M 4M", "read -P 0 8M 1M");
    }

    /** The same bad blockdev-add arguments on both daemons: the same messages (TLS aside). */
    @Test
    void badInputAsQemuStorageDaemon() throws Exception {
        Path image = dir.resolve("bad.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "16M");
        QemuNbd server = new QemuNbd(dir.resolve("bad.sock"), image, "qcow2");
        Path qsdHome = Files.createDirectories(dir.resolve("qsd"));
        StorageDaemon qsd = StorageDaemon.start(StorageDaemon.Kind.QEMU, qsdHome, List.of());
        servers.add(qsd);
        Map<String, Object> good = unix(server.socket);
        List<Map<String, Object>> cases = List.of(
                nbd("a", good, "nope"),
                nbd("b", good, null),
                nbd("c", unix(dir.resolve("absent.sock")), "exp"),
                nbd("d", Map.of("type", "inet", "host", "127.0.0.1", "port", "1"), "exp"),
                nbd("e", Map.of("type", "unix"), "exp"),
                nbd("f", Map.of("type", "inet", "host", "127.0.0.1"), "exp"),
                nbd("g", Map.of("type", "bogus", "path", "x"), "exp"),
                nbd("h", Map.of("type", "unix", "path", server.socket.toString(), "bogus", 1), "exp"),
                nbd("i", good, "exp", "bogus", 1),
                nbd("j", good, "exp", "reconnect-delay", -1),
                nbd("k", good, "exp", "reconnect-delay", "x"),
                nbd("l", good, "exp", "open-timeout", 1.5),
                nbd("m", good, "exp", "x-dirty-bitmap", "qemu:dirty-bitmap:none"),
                nbd("o", unix(dir.resolve("absent.sock")), "exp", "open-timeout", 1),
                Map.of("driver", "nbd", "node-name", "n", "export", "exp"));
        for (Map<String, Object> c : cases) {
            String ours = qmp.error("blockdev-add", c).get("desc").asString();
            String theirs = qsd.qmp.error("blockdev-add", c).get("desc").asString();
            assertThat(ours).as("%s", c).isEqualTo(theirs);
        }
        assertThat(qmp.error("blockdev-add", nbd("t", good, "exp", "tls-creds", "tls0")).get("desc").asString())
                .isEqualTo("NBD over TLS is not supported: cannot use tls-creds 'tls0'");
        // Nothing was left behind, and the daemon goes on: a good one opens.
        assertThat(qmp.ok("query-named-block-nodes").isEmpty()).isTrue();
        addNbd("ok", good, "exp");
    }

    /** The server's NBD errnos reach the client as typed errors, and its own export replies with them. */
    @Test
    void serverErrnosArriveTyped() throws Exception {
        Path image = dir.resolve("err.raw");
        Qemu.img("create", "-f", "raw", image.toString(), "16M");
        Path home = Files.createDirectories(dir.resolve("qsd"));
        StorageDaemon qsd = StorageDaemon.start(StorageDaemon.Kind.QEMU, home, List.of(
                "--blockdev", "driver=file,node-name=f0,filename=" + image,
                "--blockdev", "{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"image\":\"f0\",\"inject-error\":["
                        + "{\"event\":\"write_aio\",\"errno\":28,\"sector\":0},"
                        + "{\"event\":\"write_aio\",\"errno\":5,\"sector\":2048}]}",
                "--blockdev", "driver=raw,node-name=r0,file=bd",
                "--export", "type=nbd,id=e0,node-name=r0,name=disk,writable=on"));
        servers.add(qsd);
        addNbd("n0", unix(home.resolve("nbd.sock")), "disk");
        String uri = reexport("n0", "re");
        Qemu.Result nospc = Qemu.run("qemu-io", "-f", "raw", "-c", "write 0 4k", uri);
        assertThat(nospc.out() + nospc.err()).contains("write failed: No space left on device");
        Qemu.Result eio = Qemu.run("qemu-io", "-f", "raw", "-c", "write 1M 4k", uri);
        assertThat(eio.out() + eio.err()).contains("write failed: Input/output error");
        Qemu.ioNbd(uri, "write -P 0x5a 2M 4k", "read -P 0x5a 2M 4k");
    }

    /** With open-timeout, blockdev-add waits for a server that is not there yet. */
    @Test
    void openTimeoutWaitsForTheServer() throws Exception {
        Path image = dir.resolve("late.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "16M");
        Qemu.io(image, "qcow2", "write -P 0x91 0 1M");
        Path socket = dir.resolve("late.sock");
        CompletableFuture<JsonNode> add = CompletableFuture.supplyAsync(() -> {
            try {
                return qmp.execute("blockdev-add", nbd("late", unix(socket), "exp", "open-timeout", 60));
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        awaitTrue("a first attempt failed", Duration.ofSeconds(30),
                () -> client.log().stream().anyMatch(l -> l.contains("(open-timeout)")));
        assertThat(add).isNotDone();
        new QemuNbd(socket, image, "qcow2");
        assertThat(add.get(60, TimeUnit.SECONDS).has("return")).as("%s", add.get()).isTrue();
        Qemu.ioNbd(reexport("late", "late"), "read -P 0x91 0 1M");
    }

    // ---- reconnect ----------------------------------------------------------------------------------

    /**
     * A QSD that serves the raw {@code image} as export {@code disk}, its writes throttled to 2 MiB/s
     * when {@code slow}, so that a copy through it is still running when the test kills it. Raw,
     * because a killed server loses what it acknowledged but kept in memory (qcow2's metadata
     * cache) and no client can help that; a raw file's acknowledged writes are in the kernel.
     */
    private StorageDaemon slowServer(Path home, Path image, boolean slow) throws Exception {
        Files.createDirectories(home);
        List<String> args = new ArrayList<>(List.of("--blockdev", "driver=raw,node-name=d0,file.driver=file,file.filename=" + image));
        String exported = "d0";
        if (slow) {
            args.addAll(List.of("--object", "throttle-group,id=tg,x-bps-write=" + 2 * MIB,
                    "--blockdev", "driver=throttle,node-name=t0,throttle-group=tg,file=d0"));
            exported = "t0";
        }
        args.addAll(List.of("--export", "type=nbd,id=e0,node-name=" + exported + ",name=disk,writable=on"));
        StorageDaemon s = StorageDaemon.start(StorageDaemon.Kind.QEMU, home, args);
        servers.add(s);
        return s;
    }

    /**
     * SIGKILL, then waits until the process is dead: gone, or a zombie (a daemonized server is
     * nobody's child here, and whoever reaps orphans may take a minute; a zombie holds no socket,
     * file or lock any more).
     */
    private void killServer(StorageDaemon server) throws Exception {
        servers.remove(server); // its close() would wait for the zombie's exit
        server.qmp.close();
        killHard(server.pid());
    }

    private static void killHard(long pid) throws Exception {
        ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
        Path stat = Path.of("/proc", Long.toString(pid), "stat");
        awaitTrue("process " + pid + " is dead", Duration.ofSeconds(60), () -> {
            try {
                String s = Files.readString(stat);
                return s.substring(s.lastIndexOf(')') + 2).startsWith("Z");
            } catch (IOException e) {
                return true; // gone
            }
        });
    }

    /** Waits until {@code condition} holds (polling it), failing after {@code timeout}. */
    private static void awaitTrue(String what, Duration timeout, Callable<Boolean> condition) throws Exception {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.call()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not within " + timeout + ": " + what);
            }
            TimeUnit.MILLISECONDS.sleep(50); // a poll interval, not a synchronisation
        }
    }

    /**
     * Whether the server has written part of the random copy into the raw {@code image}: some MiB
     * of it starts with data (QSD's statistics do not count its exports' writes).
     */
    private static boolean grown(Path image) throws IOException {
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(image)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(512);
            for (long at = 0; at < ch.size(); at += MIB) {
                ch.read(b.clear(), at);
                for (int i = 0; i < b.position(); i++) {
                    if (b.get(i) != 0) {
                        return true;
                    }
                }
            }
            return false;
        }
    }

    private long reconnects() {
        return client.log().stream().filter(l -> l.contains("reconnected")).count();
    }

    /** qemu-img convert of {@code source} into the client's re-export, in the background. */
    private CompletableFuture<Qemu.Result> copyInBackground(Path source, String uri) {
        // its own thread: the common pool may have one worker, which Qemu.run's output readers need
        return CompletableFuture.supplyAsync(() -> Qemu.run("qemu-img", "convert", "-n", "-W", "-m", "8", "-f", "raw",
                "-O", "raw", source.toString(), uri), r -> Thread.ofVirtual().start(r));
    }

    @Test
    void withoutReconnectDelayALostServerFailsRequestsAtOnceAndTheClientReconnectsLater() throws Exception {
        Path image = dir.resolve("rc0.raw");
        Qemu.img("create", "-f", "raw", image.toString(), "64M");
        Path home = dir.resolve("srv");
        StorageDaemon server = slowServer(home, image, true);
        addNbd("n0", unix(home.resolve("nbd.sock")), "disk");
        String uri = reexport("n0", "re");
        Path source = randomRaw("src.raw", 64 * MIB, 7);
        CompletableFuture<Qemu.Result> copy = copyInBackground(source, uri);
        awaitTrue("the server has written part of the copy", Duration.ofSeconds(60), () -> grown(image));
        killServer(server);
        Qemu.Result r = copy.get(120, TimeUnit.SECONDS);
        assertThat(r.exit()).as("%s", r).isNotZero();
        assertThat(r.err()).contains("Input/output error");
        Qemu.Result read = Qemu.run("qemu-io", "-f", "raw", "-c", "read 0 64k", uri);
        assertThat(read.out() + read.err()).contains("read failed: Input/output error");
        // The daemon goes on; once the server is back the node reconnects in the background.
        assertThat(qmp.ok("query-named-block-nodes").toString()).contains("\"n0\"");
        long before = reconnects();
        slowServer(home, image, false);
        awaitTrue("the client reconnected", Duration.ofSeconds(60), () -> reconnects() > before);
        Qemu.ioNbd(uri, "write -P 0x71 0 1M", "read -P 0x71 0 1M", "flush");
        qmp.ok("block-export-del", Map.of("id", "e-re"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-re"));
        qmp.ok("blockdev-del", Map.of("node-name", "n0"));
        ((StorageDaemon) servers.getLast()).quit();
        Qemu.io(image, "raw", "read -P 0x71 0 1M");
    }

    @Test
    void withinTheReconnectDelayHeldRequestsSucceedOnTheNewConnection() throws Exception {
        Path image = dir.resolve("rc1.raw");
        Qemu.img("create", "-f", "raw", image.toString(), "64M");
        Path home = dir.resolve("srv");
        StorageDaemon server = slowServer(home, image, true);
        addNbd("n0", unix(home.resolve("nbd.sock")), "disk", "reconnect-delay", 60);
        String uri = reexport("n0", "re");
        Path source = randomRaw("src.raw", 32 * MIB, 11);
        CompletableFuture<Qemu.Result> copy = copyInBackground(source, uri);
        awaitTrue("the server has written part of the copy", Duration.ofSeconds(60), () -> grown(image));
        killServer(server);
        assertThat(copy).as("the copy, killed mid-way; client log %s", client.log()).isNotDone();
        StorageDaemon again = slowServer(home, image, false);
        Qemu.Result r = copy.get(120, TimeUnit.SECONDS);
        assertThat(r.exit()).as("%s", r).isZero();
        assertThat(reconnects()).isPositive();
        qmp.ok("block-export-del", Map.of("id", "e-re"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("e-re"));
        qmp.ok("blockdev-del", Map.of("node-name", "n0"));
        again.quit();
        assertThat(Qemu.identical(source, "raw", image, "raw")).as("every write arrived").isTrue();
    }

    @Test
    void pastTheReconnectDelayHeldRequestsFail() throws Exception {
        Path image = dir.resolve("rc2.raw");
        Qemu.img("create", "-f", "raw", image.toString(), "64M");
        Path home = dir.resolve("srv");
        StorageDaemon server = slowServer(home, image, true);
        addNbd("n0", unix(home.resolve("nbd.sock")), "disk", "reconnect-delay", 2);
        String uri = reexport("n0", "re");
        Path source = randomRaw("src.raw", 32 * MIB, 17);
        CompletableFuture<Qemu.Result> copy = copyInBackground(source, uri);
        awaitTrue("the server has written part of the copy", Duration.ofSeconds(60), () -> grown(image));
        long killed = System.nanoTime();
        killServer(server);
        Qemu.Result r = copy.get(120, TimeUnit.SECONDS);
        long heldMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killed);
        assertThat(r.exit()).as("%s", r).isNotZero();
        assertThat(r.err()).contains("Input/output error");
        assertThat(heldMillis).as("requests were held for the reconnect-delay first").isGreaterThanOrEqualTo(2000);
        assertThat(qmp.ok("query-named-block-nodes").toString()).contains("\"n0\"");
    }
}
