package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
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
 * Dirty bitmaps and allocation depth served over NBD, blockjobd beside QEMU's
 * qemu-storage-daemon: each runs the same sequence on its own copy of the same qcow2 chain (QMP
 * bitmaps, writes through an NBD export, exports with {@code bitmaps} and
 * {@code allocation-depth}, bad exports), and what real clients read ({@code nbdinfo --map},
 * {@code qemu-img map} with {@code x-dirty-bitmap}) and what QMP answered must be the same, and
 * what the writes imply.
 *
 * <p>The chain, 8 MiB, 64 KiB clusters: {@code base} holds 0x11 in [0, 2M); {@code top} holds
 * 0x22 in [1M, 3M) and a zero cluster at [6M, 6M + 64K).
 */
class NbdBitmapIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);

    @TempDir
    Path dir;
    private final Map<Kind, StorageDaemon> daemons = new EnumMap<>(Kind.class);
    private final Map<Kind, Path> dirs = new EnumMap<>(Kind.class);

    @BeforeEach
    void chains() throws Exception {
        Path template = Files.createDirectories(dir.resolve("template"));
        Qemu.img("create", "-f", "qcow2", template.resolve("base.qcow2").toString(), "8M");
        Qemu.io(template.resolve("base.qcow2"), "qcow2", "write -P 0x11 0 2M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", template.resolve("top.qcow2").toString());
        Qemu.io(template.resolve("top.qcow2"), "qcow2", "write -P 0x22 1M 2M", "write -z 6M 64k");
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            for (String f : List.of("base.qcow2", "top.qcow2")) {
                Files.copy(template.resolve(f), d.resolve(f), StandardCopyOption.COPY_ATTRIBUTES);
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
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + d.resolve("base.qcow2"),
                "--blockdev", "driver=qcow2,node-name=top,backing=base,file.driver=file,file.filename=" + d.resolve("top.qcow2")));
        daemons.put(kind, s);
        return s;
    }

    private static String socket(StorageDaemon d) {
        String uri = d.nbdUri("x");
        return uri.substring(uri.indexOf("?socket=") + "?socket=".length());
    }

    /** {@code qemu-img map --output=json} of an export, reading {@code context} as QEMU's NBD client's x-dirty-bitmap. */
    private static String qemuImgMap(StorageDaemon d, String export, String context) {
        return Qemu.run("qemu-img", "map", "--output=json", "--image-opts", "driver=nbd,server.type=unix,server.path="
                + socket(d) + ",export=" + export + ",x-dirty-bitmap=" + context).ok().out();
    }

    private static String nbdinfoMap(StorageDaemon d, String export, String context) {
        return Qemu.run("nbdinfo", "--map=" + context, d.nbdUri(export)).ok().out();
    }

    /** The node's bitmaps as {@code query-named-block-nodes} shows them: name, busy, recording, count. */
    private static String bitmapStates(StorageDaemon d, String node) throws Exception {
        for (JsonNode n : d.qmp.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(node)) {
                List<String> out = new ArrayList<>();
                for (JsonNode b : n.path("dirty-bitmaps")) {
                    out.add(b.get("name").asString() + " busy=" + b.get("busy").asBoolean() + " recording="
                            + b.get("recording").asBoolean() + " count=" + b.get("count").asLong());
                }
                return String.join(", ", out);
            }
        }
        throw new AssertionError(d + " has no node " + node);
    }

    private static String error(StorageDaemon d, String command, Object args) throws Exception {
        return d.qmp.error(command, args).get("desc").asString();
    }

    /**
     * The sequence, on one daemon; what it saw, by step. Bitmaps: {@code b0} on top (64 KiB
     * granules, recording throughout), {@code b1} on top (4 KiB, disabled before the last write),
     * {@code bb} on base (64 KiB, b1's bits merged in, then disabled).
     */
    private Map<String, String> run(StorageDaemon d) throws Exception {
        Map<String, String> seen = new LinkedHashMap<>();
        d.qmp.ok("block-dirty-bitmap-add", map("node", "top", "name", "b0"));
        d.qmp.ok("block-dirty-bitmap-add", map("node", "top", "name", "b1", "granularity", 4096));
        d.qmp.ok("block-dirty-bitmap-add", map("node", "base", "name", "bb"));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "w", "node-name", "top", "name", "w", "writable", true));
        Qemu.ioNbd(d.nbdUri("w"), "write -P 0x33 100k 8k", "write -P 0x33 4M 300k", "write -z 5M 64k");
        d.qmp.ok("block-dirty-bitmap-disable", map("node", "top", "name", "b1"));
        Qemu.ioNbd(d.nbdUri("w"), "write -P 0x44 7M 4k");
        d.qmp.ok("block-dirty-bitmap-merge", map("node", "base", "target", "bb", "bitmaps", List.of(map("node", "top", "name", "b1"))));

        // Bad exports: found down the chain but enabled on a writable node, missing, bad node.
        seen.put("enabled bitmap, read-only export", error(d, "block-export-add",
                map("type", "nbd", "id", "x", "node-name", "top", "name", "x", "bitmaps", List.of("bb"))));
        seen.put("missing bitmap", error(d, "block-export-add",
                map("type", "nbd", "id", "x", "node-name", "top", "name", "x", "writable", true, "bitmaps", List.of("nope"))));
        seen.put("missing bitmap of a node", error(d, "block-export-add", map("type", "nbd", "id", "x", "node-name", "top",
                "name", "x", "writable", true, "bitmaps", List.of(map("node", "top", "name", "nope")))));
        seen.put("bitmap of a missing node", error(d, "block-export-add", map("type", "nbd", "id", "x", "node-name", "top",
                "name", "x", "writable", true, "bitmaps", List.of(map("node", "nowhere", "name", "b0")))));
        seen.put("not a bitmap", error(d, "block-export-add", map("type", "nbd", "id", "x", "node-name", "top",
                "name", "x", "bitmaps", List.of(7))));
        d.qmp.ok("block-dirty-bitmap-disable", map("node", "base", "name", "bb"));

        // bb by name alone: found on base, below the exported node.
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "bm", "node-name", "top", "name", "bm", "writable", true,
                "bitmaps", List.of("b0", map("node", "top", "name", "b1"), "bb"), "allocation-depth", true));
        seen.put("bitmaps while exported", bitmapStates(d, "top") + "; " + bitmapStates(d, "base"));
        seen.put("clear an exported bitmap", error(d, "block-dirty-bitmap-clear", map("node", "top", "name", "b0")));
        seen.put("remove an exported bitmap", error(d, "block-dirty-bitmap-remove", map("node", "base", "name", "bb")));
        seen.put("export an exported bitmap", error(d, "block-export-add", map("type", "nbd", "id", "x", "node-name", "top",
                "name", "x", "writable", true, "bitmaps", List.of("b1"))));

        JsonNode list = Qemu.JSON.readTree(Qemu.run("nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + socket(d)).ok().out());
        for (JsonNode e : list.get("exports")) {
            seen.put("contexts of " + e.get("export-name").asString(), e.get("contexts").toString());
        }
        for (String context : List.of("base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0",
                "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:bb")) {
            seen.put("nbdinfo --map=" + context, nbdinfoMap(d, "bm", context));
        }
        seen.put("nbdinfo --map=qemu:allocation-depth --totals",
                Qemu.run("nbdinfo", "--map=qemu:allocation-depth", "--totals", d.nbdUri("bm")).ok().out());
        for (String context : List.of("qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:bb",
                "qemu:allocation-depth")) {
            seen.put("qemu-img map x-dirty-bitmap=" + context, qemuImgMap(d, "bm", context));
        }

        // block-export-del frees the bitmaps: once BLOCK_EXPORT_DELETED is out, they may be used.
        d.qmp.ok("block-export-del", map("id", "bm"));
        d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals("bm"));
        seen.put("bitmaps after block-export-del", bitmapStates(d, "top") + "; " + bitmapStates(d, "base"));
        d.qmp.ok("block-dirty-bitmap-clear", map("node", "top", "name", "b1"));
        // Through a filter: a name is looked for down through it, and the filter is a layer of
        // its own below its first look (base's data at depth 3, top's at 1).
        d.qmp.ok("blockdev-add", map("driver", "copy-on-read", "node-name", "cor", "file", "top"));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "cor", "node-name", "cor", "name", "cor",
                "bitmaps", List.of("bb"), "allocation-depth", true));
        seen.put("filter: nbdinfo --map=qemu:allocation-depth", nbdinfoMap(d, "cor", "qemu:allocation-depth"));
        seen.put("filter: nbdinfo --map=qemu:dirty-bitmap:bb", nbdinfoMap(d, "cor", "qemu:dirty-bitmap:bb"));
        // nbd-server-stop too.
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "again", "node-name", "top", "writable", true,
                "bitmaps", List.of("b0")));
        seen.put("exported again", bitmapStates(d, "top"));
        d.qmp.ok("nbd-server-stop");
        java.util.Set<String> deleting = new java.util.HashSet<>(List.of("again", "w", "cor")); // in any order
        while (!deleting.isEmpty()) {
            deleting.remove(d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> deleting.contains(e.get("id").asString()))
                    .get("data").get("id").asString());
        }
        seen.put("bitmaps after nbd-server-stop", bitmapStates(d, "top"));
        d.qmp.ok("block-dirty-bitmap-remove", map("node", "top", "name", "b0"));
        return seen;
    }

    @Test
    void mapsAndMessagesAsQemuStorageDaemons() throws Exception {
        Map<Kind, Map<String, String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            start(kind);
        }
        for (Kind kind : BOTH) {
            seen.put(kind, run(daemons.get(kind)));
        }
        Map<String, String> bj = seen.get(Kind.BLOCKJOBD);
        Map<String, String> qemu = seen.get(Kind.QEMU);
        assertThat(bj.keySet()).containsExactlyElementsOf(qemu.keySet());
        for (String step : qemu.keySet()) {
            assertThat(bj.get(step)).as("%s, blockjobd beside qemu-storage-daemon", step).isEqualTo(qemu.get(step));
        }

        // And what the writes imply. b0 (64 KiB granules) saw every write; b1 (4 KiB) all but the
        // last, at its own granularity; bb has b1's bits at 64 KiB.
        assertThat(bj.get("nbdinfo --map=qemu:dirty-bitmap:b0")).isEqualTo(table(
                0, 65536, 0, "clean", 65536, 65536, 1, "dirty", 131072, 4063232, 0, "clean",
                4194304, 327680, 1, "dirty", 4521984, 720896, 0, "clean", 5242880, 65536, 1, "dirty",
                5308416, 2031616, 0, "clean", 7340032, 65536, 1, "dirty", 7405568, 983040, 0, "clean"));
        assertThat(bj.get("nbdinfo --map=qemu:dirty-bitmap:b1")).isEqualTo(table(
                0, 102400, 0, "clean", 102400, 8192, 1, "dirty", 110592, 4083712, 0, "clean",
                4194304, 307200, 1, "dirty", 4501504, 741376, 0, "clean", 5242880, 65536, 1, "dirty",
                5308416, 3080192, 0, "clean"));
        assertThat(bj.get("nbdinfo --map=qemu:dirty-bitmap:bb")).isEqualTo(table(
                0, 65536, 0, "clean", 65536, 65536, 1, "dirty", 131072, 4063232, 0, "clean",
                4194304, 327680, 1, "dirty", 4521984, 720896, 0, "clean", 5242880, 65536, 1, "dirty",
                5308416, 3080192, 0, "clean"));
        // Depth: 2 where only base has data, 1 where top has (its writes, its zero clusters), 0 nowhere.
        assertThat(bj.get("nbdinfo --map=qemu:allocation-depth")).isEqualTo(table(
                0, 65536, 2, "backing depth 2", 65536, 65536, 1, "local", 131072, 917504, 2, "backing depth 2",
                1048576, 2097152, 1, "local", 3145728, 1048576, 0, "absent", 4194304, 327680, 1, "local",
                4521984, 720896, 0, "absent", 5242880, 65536, 1, "local", 5308416, 983040, 0, "absent",
                6291456, 65536, 1, "local", 6356992, 983040, 0, "absent", 7340032, 65536, 1, "local",
                7405568, 983040, 0, "absent"));
        assertThat(bj.get("filter: nbdinfo --map=qemu:allocation-depth")).startsWith(table(
                0, 65536, 3, "backing depth 3", 65536, 65536, 1, "local", 131072, 917504, 3, "backing depth 3"));
        assertThat(bj.get("filter: nbdinfo --map=qemu:dirty-bitmap:bb")).isEqualTo(bj.get("nbdinfo --map=qemu:dirty-bitmap:bb"));
        // qemu-img's x-dirty-bitmap: the context's flag 1 (dirty) reads as "no data".
        assertThat(bj.get("qemu-img map x-dirty-bitmap=qemu:dirty-bitmap:b0"))
                .contains("{ \"start\": 65536, \"length\": 65536, \"depth\": 0, \"present\": false, \"zero\": false, \"data\": false}")
                .contains("{ \"start\": 131072, \"length\": 4063232, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true");
        assertThat(bj.get("contexts of bm")).isEqualTo("[\"base:allocation\",\"qemu:allocation-depth\","
                + "\"qemu:dirty-bitmap:b0\",\"qemu:dirty-bitmap:b1\",\"qemu:dirty-bitmap:bb\"]");
        assertThat(bj.get("contexts of w")).isEqualTo("[\"base:allocation\"]");
        assertThat(bj.get("enabled bitmap, read-only export")).isEqualTo("Enabled bitmap 'bb' incompatible with readonly export");
        assertThat(bj.get("missing bitmap")).isEqualTo("Bitmap 'nope' is not found");
        assertThat(bj.get("clear an exported bitmap"))
                .isEqualTo("Bitmap 'b0' is currently in use by another operation and cannot be used");
        assertThat(bj.get("bitmaps while exported")).isEqualTo("b1 busy=true recording=false count=380928, "
                + "b0 busy=true recording=true count=524288; bb busy=true recording=false count=458752");
        assertThat(bj.get("bitmaps after block-export-del")).isEqualTo("b1 busy=false recording=false count=380928, "
                + "b0 busy=false recording=true count=524288; bb busy=false recording=false count=458752");
        assertThat(bj.get("exported again")).contains("b0 busy=true");
        assertThat(bj.get("bitmaps after nbd-server-stop")).contains("b0 busy=false");
    }

    @Test
    void theExportOptionTakesBitmapsAsQemusCommandLine() throws Exception {
        Path d = dirs.get(Kind.BLOCKJOBD);
        List<String> options = List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + d.resolve("top.qcow2"),
                "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("cli.sock"));
        for (String export : List.of("bitmaps.0=nope,allocation-depth=on", "bitmaps.1=b0", "bitmaps.0.name=b0",
                "bitmaps.0.node=top,bitmaps.0.name=b0", "bitmaps.0=b0,bitmaps.x=b1", "bitmaps=b0")) {
            String option = "type=nbd,id=e,node-name=top," + export;
            Map<Kind, String> said = new EnumMap<>(Kind.class);
            for (Kind kind : BOTH) {
                List<String> cmd = new ArrayList<>(List.of(kind == Kind.QEMU ? "qemu-storage-daemon"
                        : DaemonProcess.blockjobd().toString()));
                cmd.addAll(options);
                cmd.addAll(List.of("--export", option));
                Qemu.Result r = Qemu.run(cmd.toArray(String[]::new));
                assertThat(r.exit()).as("%s %s", kind, option).isEqualTo(1);
                String prefix = (kind == Kind.QEMU ? "qemu-storage-daemon" : "blockjobd") + ": --export " + option + ": ";
                String line = r.err().lines().filter(l -> l.startsWith(prefix)).findFirst()
                        .orElseThrow(() -> new AssertionError(kind + " said " + r.err()));
                said.put(kind, line.substring(prefix.length()));
            }
            assertThat(said.get(Kind.BLOCKJOBD)).as(option).isEqualTo(said.get(Kind.QEMU));
        }
    }

    /** nbdinfo --map's table: offset, length, flags, description per row. */
    private static String table(Object... cells) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < cells.length; i += 4) {
            b.append(String.format("%10d  %10d  %3d  %s%n", ((Number) cells[i]).longValue(),
                    ((Number) cells[i + 1]).longValue(), ((Number) cells[i + 2]).intValue(), cells[i + 3]));
        }
        return b.toString();
    }
}
