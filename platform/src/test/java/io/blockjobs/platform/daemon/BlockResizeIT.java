package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * {@code block_resize}, {@code change-backing-file}, {@code block-set-write-threshold} with
 * {@code BLOCK_WRITE_THRESHOLD}, and {@code nbd-server-add}/{@code -remove}, blockjobd beside
 * QEMU's qemu-storage-daemon: each runs the same sequence on its own copy of the same images,
 * and what QMP answered (errors word for word), what the events said, what {@code qemu-img info}
 * shows after and what a client reads must be the same; every image stays {@code qemu-img check}
 * clean.
 *
 * <p>Images (64 KiB clusters): {@code base} 8 MiB of 0x11 &lt;- {@code mid} 8 MiB, read-only,
 * empty &lt;- {@code top} 4 MiB, 0x22 in [0, 1M); {@code shrink} 8 MiB of 0x33, no backing;
 * {@code r.raw} 4 MiB; {@code ro} a read-only qcow2.
 */
class BlockResizeIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final long M = 1 << 20;

    @TempDir
    Path dir;
    private final Map<Kind, StorageDaemon> daemons = new EnumMap<>(Kind.class);
    private final Map<Kind, Path> dirs = new EnumMap<>(Kind.class);

    @BeforeEach
    void images() throws Exception {
        Path t = Files.createDirectories(dir.resolve("template"));
        Qemu.img("create", "-f", "qcow2", t.resolve("base.qcow2").toString(), "8M");
        Qemu.io(t.resolve("base.qcow2"), "qcow2", "write -P 0x11 0 8M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", t.resolve("mid.qcow2").toString(), "8M");
        Qemu.img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", t.resolve("top.qcow2").toString(), "4M");
        Qemu.io(t.resolve("top.qcow2"), "qcow2", "write -P 0x22 0 1M");
        Qemu.img("create", "-f", "qcow2", t.resolve("shrink.qcow2").toString(), "8M");
        Qemu.io(t.resolve("shrink.qcow2"), "qcow2", "write -P 0x33 0 8M");
        Qemu.img("create", "-f", "qcow2", t.resolve("ro.qcow2").toString(), "4M");
        Qemu.img("create", "-f", "raw", t.resolve("r.raw").toString(), "4M");
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            for (String f : List.of("base.qcow2", "mid.qcow2", "top.qcow2", "shrink.qcow2", "ro.qcow2", "r.raw")) {
                Files.copy(t.resolve(f), d.resolve(f), StandardCopyOption.COPY_ATTRIBUTES);
            }
            dirs.put(kind, d);
        }
    }

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons.values()) {
            d.close();
        }
    }

    private StorageDaemon start(Kind kind) throws Exception {
        Path d = dirs.get(kind);
        StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), List.of(
                "--blockdev", "driver=qcow2,node-name=base,read-only=on,file.driver=file,file.filename=" + d.resolve("base.qcow2"),
                "--blockdev", "driver=qcow2,node-name=mid,read-only=on,backing=base,file.driver=file,file.filename="
                        + d.resolve("mid.qcow2"),
                "--blockdev", "driver=file,node-name=topf,filename=" + d.resolve("top.qcow2"),
                "--blockdev", "driver=qcow2,node-name=top,backing=mid,file=topf",
                "--blockdev", "driver=qcow2,node-name=shrink,file.driver=file,file.filename=" + d.resolve("shrink.qcow2"),
                "--blockdev", "driver=qcow2,node-name=ro,read-only=on,file.driver=file,file.filename=" + d.resolve("ro.qcow2"),
                "--blockdev", "driver=file,node-name=rf,filename=" + d.resolve("r.raw"),
                "--blockdev", "driver=raw,node-name=r,file=rf"));
        daemons.put(kind, s);
        return s;
    }

    private static String socket(StorageDaemon d) {
        String uri = d.nbdUri("x");
        return uri.substring(uri.indexOf("?socket=") + "?socket=".length());
    }

    /** The command's reply as the comparison records it: "ok", or the error's class and text. */
    private static String reply(StorageDaemon d, String command, Object args) throws Exception {
        JsonNode r = d.qmp.execute(command, args);
        if (r.has("return")) {
            return "ok";
        }
        return r.get("error").get("class").asString() + ": " + r.get("error").get("desc").asString();
    }

    private static JsonNode node(StorageDaemon d, String name) throws Exception {
        for (JsonNode n : d.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals(name)) {
                return n;
            }
        }
        throw new AssertionError(d + " has no node " + name);
    }

    /** A command's arguments in {@code query-qmp-schema}: each member's name, "?" if optional, and its JSON type. */
    private static String schemaOf(StorageDaemon d, String kind, String name) throws Exception {
        Map<String, JsonNode> byName = new LinkedHashMap<>();
        for (JsonNode e : d.qmp.ok("query-qmp-schema")) {
            byName.put(e.get("name").asString(), e);
        }
        JsonNode entry = null;
        for (JsonNode e : byName.values()) {
            if (e.get("meta-type").asString().equals(kind) && e.get("name").asString().equals(name)) {
                entry = e;
            }
        }
        if (entry == null) {
            return "absent";
        }
        JsonNode args = byName.get(entry.get(kind.equals("event") ? "arg-type" : "arg-type").asString());
        List<String> out = new ArrayList<>();
        for (JsonNode m : args.get("members")) {
            JsonNode type = byName.get(m.get("type").asString());
            String json = type == null ? m.get("type").asString()
                    : type.get("meta-type").asString().equals("builtin") ? type.get("json-type").asString()
                    : type.get("meta-type").asString();
            out.add(m.get("name").asString() + (m.has("default") ? "?" : "") + ":" + json);
        }
        out.sort(null);
        return String.join(",", out);
    }

    /** The sequence, on one daemon; what it saw, by step. */
    private Map<String, String> run(StorageDaemon d) throws Exception {
        Map<String, String> seen = new LinkedHashMap<>();
        for (String c : List.of("block_resize", "change-backing-file", "block-set-write-threshold", "nbd-server-add",
                "nbd-server-remove")) {
            seen.put("schema " + c, schemaOf(d, "command", c));
        }
        seen.put("schema event", schemaOf(d, "event", "BLOCK_WRITE_THRESHOLD"));

        // block_resize: bad arguments and refusals.
        seen.put("resize missing node", reply(d, "block_resize", map("node-name", "nope", "size", 8 * M)));
        seen.put("resize by device", reply(d, "block_resize", map("device", "top", "size", 8 * M)));
        seen.put("resize neither", reply(d, "block_resize", map("size", 8 * M)));
        seen.put("resize negative", reply(d, "block_resize", map("node-name", "top", "size", -1)));
        seen.put("resize unaligned qcow2", reply(d, "block_resize", map("node-name", "top", "size", 1000)));
        seen.put("resize read-only", reply(d, "block_resize", map("node-name", "ro", "size", 8 * M)));
        seen.put("resize a qcow2's file", reply(d, "block_resize", map("node-name", "topf", "size", 8 * M)));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "top", "writable", true));
        seen.put("resize exported", reply(d, "block_resize", map("node-name", "top", "size", 8 * M)));
        d.qmp.ok("block-export-del", map("id", "e"));
        d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals("e"));
        d.qmp.ok("block-stream", map("job-id", "s", "device", "top", "speed", 1024));
        seen.put("resize during a job", reply(d, "block_resize", map("node-name", "top", "size", 8 * M)));
        seen.put("resize during a job, by device and node",
                reply(d, "block_resize", map("device", "top", "node-name", "top", "size", 8 * M)));
        seen.put("change-backing-file during a job", reply(d, "change-backing-file",
                map("device", "top", "image-node-name", "top", "backing-file", "x")));
        d.qmp.ok("block-job-cancel", map("device", "s"));
        d.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> e.get("id").asString().equals("s")
                && e.get("status").asString().equals("null"));

        // block_resize: grow past one L1 entry (512 MiB) over a longer backing file, shrink, raw.
        seen.put("grow top", reply(d, "block_resize", map("node-name", "top", "size", 1024 * M)));
        seen.put("top size", node(d, "top").get("image").get("virtual-size").asString());
        seen.put("shrink", reply(d, "block_resize", map("node-name", "shrink", "size", 2 * M)));
        seen.put("resize read-only to 0", reply(d, "block_resize", map("node-name", "ro", "size", 0)));
        seen.put("grow raw", reply(d, "block_resize", map("node-name", "r", "size", 8 * M)));
        seen.put("raw size", node(d, "r").get("image").get("virtual-size").asString());
        seen.put("shrink raw's file", reply(d, "block_resize", map("node-name", "rf", "size", 3 * M)));
        seen.put("raw size after", node(d, "r").get("image").get("virtual-size").asString());
        seen.put("read grown top", read(exported(d, "top"), "read -P 0x22 0 1M", "read -P 0 4M 4M", "read -P 0 1020M 4M"));
        d.qmp.ok("block-export-del", map("id", "top"));
        d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals("top"));

        // change-backing-file.
        seen.put("cbf missing device", reply(d, "change-backing-file", map("device", "nope", "image-node-name", "top",
                "backing-file", "x")));
        seen.put("cbf not a root", reply(d, "change-backing-file", map("device", "topf", "image-node-name", "top",
                "backing-file", "x")));
        seen.put("cbf missing image", reply(d, "change-backing-file", map("device", "top", "image-node-name", "nope",
                "backing-file", "x")));
        seen.put("cbf no backing", reply(d, "change-backing-file", map("device", "top", "image-node-name", "base",
                "backing-file", "x")));
        seen.put("cbf other chain", reply(d, "change-backing-file", map("device", "shrink", "image-node-name", "mid",
                "backing-file", "x")));
        Path dd = dirs.get(d.kind);
        seen.put("cbf top", reply(d, "change-backing-file", map("device", "top", "image-node-name", "top",
                "backing-file", dd.resolve("mid.qcow2").toString())));
        seen.put("cbf read-only mid", reply(d, "change-backing-file", map("device", "top", "image-node-name", "mid",
                "backing-file", dd.resolve("base.qcow2").toString())));
        seen.put("mid read-only after cbf", node(d, "mid").get("ro").asString());

        // block-set-write-threshold and BLOCK_WRITE_THRESHOLD, written past over NBD.
        seen.put("threshold missing node", reply(d, "block-set-write-threshold",
                map("node-name", "nope", "write-threshold", 100)));
        d.qmp.ok("block-set-write-threshold", map("node-name", "top", "write-threshold", 3 * M));
        seen.put("threshold set", node(d, "top").get("write_threshold").asString());
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "w", "node-name", "top", "name", "w", "writable", true));
        Qemu.ioNbd(d.nbdUri("w"), "write -P 0x44 1M 64k", "write -P 0x44 3008k 128k", "write -P 0x44 5M 64k");
        JsonNode event = d.qmp.awaitEvent("BLOCK_WRITE_THRESHOLD", e -> true);
        seen.put("event", event.get("data").toString());
        seen.put("threshold after", node(d, "top").get("write_threshold").asString());
        d.qmp.ok("block-export-del", map("id", "w"));
        d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals("w"));
        seen.put("events of the kind", String.valueOf(d.qmp.seenEvents().stream()
                .filter(e -> e.get("event").asString().equals("BLOCK_WRITE_THRESHOLD")).count()));

        // nbd-server-add / nbd-server-remove.
        d.qmp.ok("nbd-server-stop");
        seen.put("add, no server", reply(d, "nbd-server-add", map("device", "top")));
        d.qmp.ok("nbd-server-start", map("addr", map("type", "unix", "data", map("path", socket(d)))));
        seen.put("add missing", reply(d, "nbd-server-add", map("device", "nope")));
        seen.put("add missing bitmap", reply(d, "nbd-server-add", map("device", "top", "bitmap", "bm")));
        seen.put("add", reply(d, "nbd-server-add", map("device", "top")));
        seen.put("add again", reply(d, "nbd-server-add", map("device", "top")));
        seen.put("add named, writable", reply(d, "nbd-server-add", map("device", "shrink", "name", "x",
                "writable", true, "description", "shrunk")));
        seen.put("add read-only as writable", reply(d, "nbd-server-add", map("device", "ro", "writable", true)));
        seen.put("exports", exports(d));
        seen.put("read through top", read(d.nbdUri("top"), "read -P 0x22 0 1M", "read -P 0x44 3008k 128k"));
        JsonNode info = Qemu.JSON.readTree(Qemu.run("nbdinfo", "--json", d.nbdUri("x")).ok().out());
        seen.put("nbdinfo x", info.get("exports").get(0).get("export-size") + " "
                + info.get("exports").get(0).get("description") + " ro=" + info.get("exports").get(0).get("is_read_only"));
        JsonNode roInfo = Qemu.JSON.readTree(Qemu.run("nbdinfo", "--json", d.nbdUri("ro")).ok().out());
        seen.put("nbdinfo ro", "ro=" + roInfo.get("exports").get(0).get("is_read_only"));
        Qemu.ioNbd(d.nbdUri("x"), "write -P 0x55 0 64k");
        seen.put("remove missing", reply(d, "nbd-server-remove", map("name", "nope")));
        seen.put("remove hard", reply(d, "nbd-server-remove", map("name", "x", "mode", "hard")));
        seen.put("remove", reply(d, "nbd-server-remove", map("name", "top")));
        seen.put("remove ro", reply(d, "nbd-server-remove", map("name", "ro")));
        d.qmp.awaitEach("BLOCK_EXPORT_DELETED", "id", List.of("x", "top", "ro"), Duration.ofSeconds(60));
        seen.put("exports after", exports(d));
        return seen;
    }

    /** qemu-io's reads of an NBD URI, read-only: "ok" if each found its pattern, else what qemu-io said. */
    private static String read(String uri, String... reads) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-r", "-f", "raw"));
        for (String r : reads) {
            cmd.add("-c");
            cmd.add(r);
        }
        cmd.add(uri);
        Qemu.Result r = Qemu.run(cmd.toArray(String[]::new));
        String all = r.out() + r.err();
        return r.exit() == 0 && !all.contains("fail") && !all.contains("Pattern verification") ? "ok" : all;
    }

    /** {@code query-block-exports} as id@node, sorted (its order is not what this test is about). */
    private static String exports(StorageDaemon d) throws Exception {
        List<String> out = new ArrayList<>();
        for (JsonNode e : d.qmp.ok("query-block-exports")) {
            out.add(e.get("type").asString() + ":" + e.get("id").asString() + "@" + e.get("node-name").asString());
        }
        out.sort(null);
        return out.toString();
    }

    /** Exports {@code node} read-only as {@code node} and returns its URI. */
    private static String exported(StorageDaemon d, String node) throws Exception {
        d.qmp.ok("block-export-add", map("type", "nbd", "id", node, "node-name", node));
        return d.nbdUri(node);
    }

    /** What {@code qemu-img info} says of the images after the daemon quit, and that each is clean. */
    private Map<String, String> images(Kind kind) {
        Map<String, String> out = new LinkedHashMap<>();
        Path d = dirs.get(kind);
        for (String f : List.of("top.qcow2", "mid.qcow2", "shrink.qcow2", "ro.qcow2")) {
            Path p = d.resolve(f);
            JsonNode info = Qemu.info(p);
            out.put(f, info.get("virtual-size") + " backing=" + info.path("backing-filename").asString("-")
                    .replace(d.toString(), "DIR") + " fmt=" + info.path("backing-filename-format").asString("-"));
            Qemu.assertClean(p);
        }
        out.put("r.raw", Qemu.info(d.resolve("r.raw")).get("virtual-size").toString());
        return out;
    }

    @Test
    void asQemuStorageDaemon() throws Exception {
        Map<Kind, Map<String, String>> seen = new EnumMap<>(Kind.class);
        Map<Kind, Map<String, String>> after = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon d = start(kind);
            seen.put(kind, run(d));
            d.quit();
            after.put(kind, images(kind));
        }
        Map<String, String> bj = seen.get(Kind.BLOCKJOBD);
        Map<String, String> qemu = seen.get(Kind.QEMU);
        assertThat(bj.keySet()).containsExactlyElementsOf(qemu.keySet());
        for (String step : qemu.keySet()) {
            assertThat(bj.get(step)).as("%s (qemu-storage-daemon: %s)", step, qemu.get(step)).isEqualTo(qemu.get(step));
        }
        assertThat(after.get(Kind.BLOCKJOBD)).isEqualTo(after.get(Kind.QEMU));

        // What QEMU does, so that a change in both would not pass unnoticed.
        assertThat(qemu.get("resize a qcow2's file")).isEqualTo("GenericError: Permission conflict on node 'topf': "
                + "permissions 'resize' are both required by an unnamed block device (uses node 'topf' as 'root' child) "
                + "and unshared by node 'top' (uses node 'topf' as 'file' child).");
        assertThat(qemu.get("mid read-only after cbf")).isEqualTo("true");
        assertThat(qemu.get("resize during a job")).isEqualTo("GenericError: Device '(null)' is in use");
        assertThat(qemu.get("event")).isEqualTo(
                "{\"node-name\":\"top\",\"write-threshold\":" + 3 * M + ",\"amount-exceeded\":"
                        + (3008 * 1024 + 128 * 1024 - 3 * M) + "}");
        assertThat(qemu.get("events of the kind")).isEqualTo("1");
        assertThat(after.get(Kind.QEMU).get("top.qcow2")).startsWith(String.valueOf(1024 * M));
        assertThat(after.get(Kind.QEMU).get("shrink.qcow2")).startsWith(String.valueOf(2 * M));
        assertThat(after.get(Kind.QEMU).get("r.raw")).isEqualTo(String.valueOf(3 * M));
    }
}
