package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * {@code query-chardev}, {@code query-chardev-backends}, {@code chardev-remove} and
 * {@code chardev-send-break}: blockjobd and qemu-storage-daemon 7.2 are started with the same
 * chardevs (a listening unix monitor, a listening TCP monitor, a client-mode monitor that
 * connects to the test, and a spare socket no monitor uses) and asked the same things; replies
 * must match once each daemon's own folder and ports are replaced by placeholders.
 */
class ChardevIT {
    @TempDir
    Path dir;

    /** What one daemon answered, normalised. */
    private record Answers(List<JsonNode> replies, List<String> backends) {
    }

    private static String cmd(String execute, String arguments) {
        return "{\"execute\":\"" + execute + "\",\"arguments\":" + arguments + "}";
    }

    private static int freePort() throws Exception {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    private Answers run(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind == Kind.QEMU ? "q" : "b"));
        int port = freePort();
        Path harnessSocket = d.resolve("harness.sock");
        try (ServerSocketChannel harness = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            harness.bind(UnixDomainSocketAddress.of(harnessSocket));
            List<String> options = List.of(
                    "--chardev", "socket,id=tcpmon,host=127.0.0.1,port=" + port + ",server=on,wait=off",
                    "--monitor", "tcpmon",
                    "--chardev", "socket,id=spare,path=" + d.resolve("spare.sock") + ",server=on,wait=off",
                    "--chardev", "socket,id=out,path=" + harnessSocket,
                    "--monitor", "chardev=out");
            try (StorageDaemon daemon = StorageDaemon.start(kind, d, options);
                 SocketChannel outConnection = harness.accept();
                 QmpClient out = QmpClient.accepted(outConnection)) {
                List<JsonNode> replies = new ArrayList<>();
                List<String> script = List.of(
                        cmd("chardev-send-break", "{\"id\":\"spare\"}"),
                        cmd("chardev-send-break", "{\"id\":\"nope\"}"),
                        cmd("chardev-remove", "{\"id\":\"nope\"}"),
                        cmd("chardev-remove", "{\"id\":\"mon0\"}"),
                        cmd("chardev-remove", "{\"id\":\"out\"}"),
                        cmd("chardev-remove", "{}"),
                        cmd("chardev-remove", "{\"id\":5}"),
                        cmd("query-chardev-backends", "{\"x\":1}"));
                replies.add(normalise(daemon.qmp.ok("query-chardev"), d, port, -1));
                try (SocketChannel tcp = SocketChannel.open(new InetSocketAddress("127.0.0.1", port));
                     QmpClient overTcp = QmpClient.accepted(tcp)) {
                    int clientPort = ((InetSocketAddress) tcp.getLocalAddress()).getPort();
                    replies.add(normalise(overTcp.ok("query-chardev"), d, port, clientPort));
                }
                for (String c : script) {
                    JsonNode parsed = Json.MAPPER.readTree(c);
                    replies.add(daemon.qmp.execute(parsed.get("execute").asString(), parsed.get("arguments")));
                }
                replies.add(out.execute("chardev-remove", Map.of("id", "spare")));
                replies.add(normalise(out.ok("query-chardev"), d, port, -1));
                replies.add(out.execute("chardev-remove", Map.of("id", "spare")));
                List<String> backends = new ArrayList<>();
                daemon.qmp.ok("query-chardev-backends").forEach(b -> backends.add(b.get("name").asString()));
                assertThat(Files.exists(d.resolve("spare.sock"))).as("%s: the spare socket is gone with its chardev", kind)
                        .isFalse();
                return new Answers(replies, backends);
            }
        }
    }

    /** Sorted by label (QEMU lists chardevs in hash-table order), this daemon's folder and ports replaced. */
    private static JsonNode normalise(JsonNode chardevs, Path d, int port, int clientPort) throws Exception {
        List<String> entries = new ArrayList<>();
        for (JsonNode c : chardevs) {
            String filename = c.get("filename").asString().replace(d.toString(), "DIR").replace(":" + port, ":PORT");
            if (clientPort > 0) {
                filename = filename.replace(":" + clientPort, ":CLIENT");
            }
            entries.add(Json.MAPPER.writeValueAsString(Map.of("label", c.get("label").asString(), "filename", filename,
                    "frontend-open", c.get("frontend-open").asBoolean())));
        }
        entries.sort(null);
        return Json.MAPPER.readTree("[" + String.join(",", entries) + "]");
    }

    @Test
    void chardevsAreListedAndRemovedAsOnQemuStorageDaemon() throws Exception {
        Answers qsd = run(Kind.QEMU);
        Answers bj = run(Kind.BLOCKJOBD);
        assertThat(bj.replies()).hasSameSizeAs(qsd.replies());
        for (int i = 0; i < qsd.replies().size(); i++) {
            assertThat(bj.replies().get(i)).as("reply %d (QSD: %s)", i, qsd.replies().get(i)).isEqualTo(qsd.replies().get(i));
        }
        // what the comparison stands on: QSD's own answers
        assertThat(qsd.replies().get(1).toString())
                .contains("\"filename\":\"tcp:127.0.0.1:PORT,server=on <-> 127.0.0.1:CLIENT\"")
                .contains("\"filename\":\"unix:\"")
                .contains("\"filename\":\"disconnected:unix:DIR/spare.sock,server=on\"");
        assertThat(qsd.replies().get(5).at("/error/desc").asString()).isEqualTo("Chardev 'mon0' is busy");
        // blockjobd opens only the backends it has; QSD lists every one it was built with
        assertThat(bj.backends()).containsExactlyInAnyOrder("socket", "stdio", "ringbuf", "memory");
        assertThat(qsd.backends()).containsAll(bj.backends());
    }

    /** The ring-buffer sequence both daemons get; every reply compared. */
    private static List<String> ringScript() {
        return List.of(
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"hello w\u00f6rld\"}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":5}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":100,\"format\":\"base64\"}"),
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"AAEC/w==\",\"format\":\"base64\"}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":100}"), // a NUL ends the UTF-8 text, as in QEMU
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"0123456789abcdefXYZ\"}"), // overflows: oldest dropped
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":100}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":100}"),
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"/w==\",\"format\":\"base64\"}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":100,\"format\":\"base64\"}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":0}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":-1}"),
                cmd("ringbuf-read", "{\"device\":\"nope\",\"size\":1}"),
                cmd("ringbuf-read", "{\"device\":\"mon0\",\"size\":1}"),
                cmd("ringbuf-write", "{\"device\":\"mon0\",\"data\":\"x\"}"),
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"!!\",\"format\":\"base64\"}"),
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"x\",\"format\":\"hex\"}"),
                cmd("ringbuf-write", "{\"device\":\"r\"}"),
                cmd("chardev-add", "{\"id\":\"r2\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":3}}}"),
                cmd("chardev-add", "{\"id\":\"r2\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":4}}}"),
                cmd("chardev-add", "{\"id\":\"r2\",\"backend\":{\"type\":\"ringbuf\",\"data\":{}}}"),
                cmd("chardev-add", "{\"id\":\"r\",\"backend\":{\"type\":\"memory\",\"data\":{}}}"),
                cmd("chardev-add", "{\"id\":\"r3\",\"backend\":{\"type\":\"memory\",\"data\":{\"size\":4}}}"),
                cmd("chardev-add", "{\"id\":\"r6\",\"backend\":{\"type\":\"ringbuf\"}}"),
                cmd("chardev-add", "{\"id\":\"r6\",\"backend\":{\"type\":\"nope\",\"data\":{}}}"),
                cmd("ringbuf-write", "{\"device\":\"r3\",\"data\":\"abcdef\"}"),
                cmd("ringbuf-read", "{\"device\":\"r3\",\"size\":10}"),
                cmd("ringbuf-read", "{\"device\":\"r2\",\"size\":10}"),
                cmd("chardev-remove", "{\"id\":\"r2\"}"),
                cmd("ringbuf-read", "{\"device\":\"r2\",\"size\":10}"));
    }

    @Test
    void ringBuffersAnswerAsOnQemuStorageDaemon() throws Exception {
        List<String> options = List.of("--chardev", "ringbuf,id=r,size=16");
        List<String> script = ringScript();
        List<List<JsonNode>> answers = new ArrayList<>();
        for (Kind kind : List.of(Kind.QEMU, Kind.BLOCKJOBD)) {
            Path d = Files.createDirectories(dir.resolve(kind == Kind.QEMU ? "rq" : "rb"));
            try (StorageDaemon daemon = StorageDaemon.start(kind, d, options)) {
                List<JsonNode> replies = new ArrayList<>();
                for (String c : script) {
                    JsonNode parsed = Json.MAPPER.readTree(c);
                    replies.add(daemon.qmp.execute(parsed.get("execute").asString(), parsed.get("arguments")));
                }
                replies.add(normalise(daemon.qmp.ok("query-chardev"), d, -1, -1));
                answers.add(replies);
            }
        }
        List<JsonNode> qsd = answers.get(0);
        List<JsonNode> bj = answers.get(1);
        for (int i = 0; i < qsd.size(); i++) {
            String what = i < script.size() ? script.get(i) : "query-chardev";
            assertThat(bj.get(i)).as("%s (QSD: %s)", what, qsd.get(i)).isEqualTo(qsd.get(i));
        }
        // what the comparison stands on: QSD's own answers
        assertThat(qsd.get(1).get("return").asString()).isEqualTo("hello");
        assertThat(qsd.get(6).get("return").asString()).isEqualTo("3456789abcdefXYZ");
        assertThat(qsd.get(18).at("/error/desc").asString())
                .isEqualTo("Failed to add chardev 'r2': size of ringbuf chardev must be power of two");
        assertThat(qsd.get(26).get("return").asString()).isEqualTo("cdef");
    }

    /** The {@code chardev-change} sequence both daemons get; every reply compared. */
    private static List<String> changeScript() {
        String ring4 = "{\"type\":\"ringbuf\",\"data\":{\"size\":4}}";
        return List.of(
                cmd("chardev-change", "{\"id\":\"nope\",\"backend\":" + ring4 + "}"),
                cmd("chardev-change", "{\"id\":\"mon0\",\"backend\":" + ring4 + "}"),
                cmd("chardev-change", "{\"id\":\"mon0\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":3}}}"),
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"abcdef\"}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":" + ring4 + "}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":10}"), // a new, empty ring
                cmd("ringbuf-write", "{\"device\":\"r\",\"data\":\"abcdef\"}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":10}"), // of the new size
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":3}}}"),
                cmd("ringbuf-read", "{\"device\":\"r\",\"size\":10}"), // gone with the failed change
                cmd("chardev-add", "{\"id\":\"r\",\"backend\":" + ring4 + "}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"nope\",\"data\":{}}}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"memory\",\"data\":{}}}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"ringbuf\"}}"),
                cmd("chardev-change", "{\"id\":\"r\"}"),
                cmd("chardev-change", "{\"backend\":" + ring4 + "}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"x\":1}}}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":\"x\"}}}"),
                cmd("chardev-change", "{\"id\":\"r\",\"backend\":" + ring4 + ",\"x\":1}"),
                cmd("chardev-change", "{\"id\":\"spare\",\"backend\":{\"type\":\"ringbuf\",\"data\":{\"size\":8}}}"),
                cmd("ringbuf-write", "{\"device\":\"spare\",\"data\":\"0123456789\"}"),
                cmd("ringbuf-read", "{\"device\":\"spare\",\"size\":100}"),
                cmd("query-chardev", "{}"));
    }

    @Test
    void chardevChangeAnswersAsOnQemuStorageDaemon() throws Exception {
        List<String> script = changeScript();
        List<List<JsonNode>> answers = new ArrayList<>();
        for (Kind kind : List.of(Kind.QEMU, Kind.BLOCKJOBD)) {
            Path d = Files.createDirectories(dir.resolve(kind == Kind.QEMU ? "cq" : "cb"));
            List<String> options = List.of("--chardev", "ringbuf,id=r,size=16",
                    "--chardev", "socket,id=spare,path=" + d.resolve("spare.sock") + ",server=on,wait=off");
            try (StorageDaemon daemon = StorageDaemon.start(kind, d, options)) {
                List<JsonNode> replies = new ArrayList<>();
                for (String c : script) {
                    JsonNode parsed = Json.MAPPER.readTree(c);
                    JsonNode reply = daemon.qmp.execute(parsed.get("execute").asString(), parsed.get("arguments"));
                    replies.add(reply.has("return") && reply.get("return").isArray()
                            ? normalise(reply.get("return"), d, -1, -1) : reply);
                }
                assertThat(Files.exists(d.resolve("spare.sock"))).as("%s: the spare socket went with the change", kind)
                        .isFalse();
                if (kind == Kind.BLOCKJOBD) {
                    // blockjobd opens no socket over QMP: it says so and keeps the chardev
                    JsonNode socket = daemon.qmp.execute("chardev-change", Json.MAPPER.readTree("{\"id\":\"r\","
                            + "\"backend\":{\"type\":\"socket\",\"data\":{\"addr\":{\"type\":\"unix\","
                            + "\"data\":{\"path\":\"x.sock\"}}}}}"));
                    assertThat(socket.at("/error/desc").asString()).startsWith("Failed to add chardev 'r': blockjobd adds"
                            + " only ringbuf and memory chardevs over QMP");
                    assertThat(normalise(daemon.qmp.ok("query-chardev"), d, -1, -1).toString()).contains("\"label\":\"r\"");
                }
                answers.add(replies);
            }
        }
        List<JsonNode> qsd = answers.get(0);
        List<JsonNode> bj = answers.get(1);
        for (int i = 0; i < qsd.size(); i++) {
            assertThat(bj.get(i)).as("%s (QSD: %s)", script.get(i), qsd.get(i)).isEqualTo(qsd.get(i));
        }
        // what the comparison stands on: QSD's own answers
        assertThat(qsd.get(0).at("/error/desc").asString()).isEqualTo("Chardev 'nope' does not exist");
        assertThat(qsd.get(1).at("/error/desc").asString()).isEqualTo("Chardev user does not support chardev hotswap");
        assertThat(qsd.get(2).at("/error/desc").asString()).isEqualTo("Chardev user does not support chardev hotswap");
        assertThat(qsd.get(5).get("return").asString()).isEmpty();
        assertThat(qsd.get(7).get("return").asString()).isEqualTo("cdef");
        assertThat(qsd.get(8).at("/error/desc").asString())
                .isEqualTo("Failed to add chardev 'r': size of ringbuf chardev must be power of two");
        assertThat(qsd.get(9).at("/error/desc").asString()).isEqualTo("Device 'r' not found");
        assertThat(qsd.get(21).get("return").asString()).isEqualTo("23456789");
        Map<String, String> filenames = new java.util.TreeMap<>();
        qsd.get(22).forEach(c -> filenames.put(c.get("label").asString(), c.get("filename").asString()));
        assertThat(filenames).containsEntry("spare", "ringbuf").containsEntry("r", "memory");
    }
}
