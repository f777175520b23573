package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * Dirty bitmaps in memory, blockjobd beside qemu-storage-daemon: the same bitmaps, the same
 * writes through an NBD export, the same commands; every reply (counts, {@code sha256}, QEMU's
 * error messages) must be the same from both daemons.
 */
class BitmapIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    private final List<StorageDaemon> running = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : running) {
            d.close();
        }
    }

    /** A 64 MiB qcow2 disk with some data, opened as {@code disk} over {@code f-disk}, a 32 MiB one as {@code small}; a writable export {@code e} of disk. */
    private StorageDaemon start(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Path disk = d.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "64M");
        Qemu.io(disk, "qcow2", "write -P 0x11 0 8M");
        Path small = d.resolve("small.qcow2");
        Qemu.img("create", "-f", "qcow2", small.toString(), "32M");
        List<String> options = List.of(
                "--blockdev", "driver=file,node-name=f-disk,filename=" + disk,
                "--blockdev", "driver=qcow2,node-name=disk,file=f-disk,discard=unmap",
                "--blockdev", "driver=file,node-name=f-small,filename=" + small,
                "--blockdev", "driver=qcow2,node-name=small,file=f-small",
                "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on");
        StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), options);
        running.add(s);
        return s;
    }

    /** The whole reply of each command, {@code return} or {@code error}, without ids. */
    private static List<String> run(StorageDaemon s, List<Cmd> commands) throws Exception {
        List<String> out = new ArrayList<>();
        for (Cmd c : commands) {
            JsonNode r = s.qmp.execute(c.name(), c.args());
            out.add(c.name() + " -> " + (r.has("error") ? "error: " + r.get("error").get("desc").asString() : r.get("return")));
        }
        return out;
    }

    private static JsonNode bitmapsOf(StorageDaemon s, String node) throws Exception {
        for (JsonNode n : s.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals(node)) {
                return n.path("dirty-bitmaps");
            }
        }
        throw new AssertionError("no node " + node);
    }

    /** One QMP command. */
    private record Cmd(String name, Object args) {
    }

    private static Cmd cmd(String name, Object args) {
        return new Cmd(name, args);
    }

    private static Cmd sha(String name) {
        return cmd("x-debug-block-dirty-bitmap-sha256", map("node", "disk", "name", name));
    }

    @Test
    void writesThroughAnExportAreCountedAsQemuCountsThem() throws Exception {
        Map<Kind, JsonNode> listed = new EnumMap<>(Kind.class);
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon s = start(kind);
            List<String> r = new ArrayList<>(run(s, List.of(
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "dflt")),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "fine", "granularity", 512)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "coarse", "granularity", 1 << 20)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "off", "disabled", true)),
                    sha("dflt"))));
            Qemu.ioNbd(s.nbdUri("disk"),
                    "write -P 0x22 0 4k",
                    "write -P 0x23 1047576 3000",       // unaligned, across a 64 KiB boundary
                    "write -z 10M 1M",
                    "discard 20M 64k",
                    "write -P 0x24 67108352 512");      // the last sector
            r.addAll(run(s, List.of(sha("dflt"), sha("fine"), sha("coarse"), sha("off"))));
            // Enabled again, it records from now on only.
            r.addAll(run(s, List.of(cmd("block-dirty-bitmap-enable", map("node", "disk", "name", "off")))));
            Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x25 30M 128k");
            r.addAll(run(s, List.of(sha("off"), sha("dflt"))));
            listed.put(kind, bitmapsOf(s, "disk"));
            replies.put(kind, r);
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        assertThat(listed.get(Kind.BLOCKJOBD)).isEqualTo(listed.get(Kind.QEMU));
        // What the writes imply, so that two wrong daemons cannot agree: 4k, 3000 bytes across a
        // 64 KiB boundary (two granules), 1M of zeroes, a 64k discard (the node has discard=unmap:
        // under the default discard=ignore QEMU drops a discard before it is a request), 512 at
        // the end: 1 + 2 + 16 + 1 + 1 granules of 64 KiB, then 2 more from the second round.
        JsonNode dflt = find(listed.get(Kind.BLOCKJOBD), "dflt");
        assertThat(dflt.get("count").asLong()).isEqualTo(23 * 65536L);
        assertThat(dflt.get("granularity").asLong()).isEqualTo(65536);
        assertThat(find(listed.get(Kind.BLOCKJOBD), "off").get("count").asLong()).isEqualTo(2 * 65536L);
        assertThat(find(listed.get(Kind.BLOCKJOBD), "fine").get("count").asLong())
                .isEqualTo(4096 + 3072 + MIB + 65536 + 512 + 128 * 1024);
    }

    /** JSON with members sorted by name: QEMU's dictionaries have no order. */
    private static String canonical(JsonNode n) {
        if (n.isObject()) {
            java.util.TreeMap<String, String> m = new java.util.TreeMap<>();
            for (String k : n.propertyNames()) {
                m.put(k, canonical(n.get(k)));
            }
            return m.toString();
        }
        if (n.isArray()) {
            List<String> l = new ArrayList<>();
            n.forEach(e -> l.add(canonical(e)));
            return l.toString();
        }
        return n.toString();
    }

    private static JsonNode find(JsonNode bitmaps, String name) {
        for (JsonNode b : bitmaps) {
            if (b.path("name").asString().equals(name)) {
                return b;
            }
        }
        throw new AssertionError("no bitmap " + name + " in " + bitmaps);
    }

    @Test
    void mergesAndClearsAsQemu() throws Exception {
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon s = start(kind);
            List<String> r = new ArrayList<>(run(s, List.of(
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "a", "granularity", 4096)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "b", "granularity", 1 << 20)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "into", "disabled", true)),
                    cmd("block-dirty-bitmap-add", map("node", "small", "name", "elsewhere")))));
            Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x31 5000 100", "write -P 0x32 40M 3M");
            r.addAll(run(s, List.of(
                    cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "into", "bitmaps", List.of("a"))),
                    sha("into"),
                    cmd("block-dirty-bitmap-clear", map("node", "disk", "name", "into")),
                    cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "into",
                            "bitmaps", List.of("b", map("node", "disk", "name", "a")))),
                    sha("into"),
                    cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "into",
                            "bitmaps", List.of(map("node", "small", "name", "elsewhere")))),
                    cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "into", "bitmaps", List.of("nope"))),
                    cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "nope", "bitmaps", List.of("a"))),
                    cmd("block-dirty-bitmap-clear", map("node", "disk", "name", "a")),
                    sha("a"),
                    cmd("block-dirty-bitmap-remove", map("node", "disk", "name", "b")),
                    cmd("block-dirty-bitmap-remove", map("node", "disk", "name", "b")),
                    sha("into"))));
            r.add(canonical(bitmapsOf(s, "disk")));
            replies.put(kind, r);
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        List<String> r = replies.get(Kind.BLOCKJOBD);
        assertThat(r.get(5)).as("the first merge gave 'into' a's bits").isNotEqualTo(r.get(13)).contains("sha256");
        assertThat(r.get(9)).contains("Bitmaps are of different sizes");
    }

    @Test
    void refusesWhatQemuRefusesWithItsWords() throws Exception {
        String longName = "n".repeat(1024);
        List<Cmd> commands = List.of(
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", "")),
                cmd("block-dirty-bitmap-add", map("node", "nosuch", "name", "x")),
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", "x", "granularity", 1000)),
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", "x", "granularity", 256)),
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", longName)),
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", "x")),
                cmd("block-dirty-bitmap-add", map("node", "disk", "name", "x")),
                cmd("block-dirty-bitmap-add", map("node", "f-disk", "name", "p", "persistent", true)),
                cmd("block-dirty-bitmap-remove", map("node", "disk", "name", "nope")),
                cmd("block-dirty-bitmap-remove", map("node", "nosuch", "name", "x")),
                cmd("block-dirty-bitmap-enable", map("node", "disk", "name", "nope")),
                cmd("block-dirty-bitmap-disable", map("node", "small", "name", "x")),
                cmd("block-dirty-bitmap-clear", map("node", "disk", "name", "nope")),
                cmd("x-debug-block-dirty-bitmap-sha256", map("node", "disk", "name", "nope")),
                cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "x", "bitmaps", List.of(5))),
                cmd("block-dirty-bitmap-merge", map("node", "disk", "target", "x", "bitmaps", List.of(map("name", "x")))));
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon s = start(kind);
            replies.put(kind, run(s, commands));
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        assertThat(replies.get(Kind.BLOCKJOBD).get(0)).endsWith("error: Bitmap name cannot be empty");
        assertThat(replies.get(Kind.BLOCKJOBD).get(5)).endsWith("{}");
    }

    @Test
    void aTransactionThatFailsLeavesEveryBitmapAsItWas() throws Exception {
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon s = start(kind);
            run(s, List.of(
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "a")),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "b", "granularity", 512)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "c", "disabled", true)),
                    cmd("block-dirty-bitmap-add", map("node", "disk", "name", "d"))));
            Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x41 1M 200k", "write -P 0x42 9M 1k");
            List<Cmd> probe = List.of(sha("a"), sha("b"), sha("c"), sha("d"));
            List<String> before = run(s, probe);
            String listedBefore = canonical(bitmapsOf(s, "disk"));
            List<String> r = new ArrayList<>(run(s, List.of(cmd("transaction", map("actions", List.of(
                    map("type", "block-dirty-bitmap-clear", "data", map("node", "disk", "name", "a")),
                    map("type", "block-dirty-bitmap-merge", "data", map("node", "disk", "target", "c", "bitmaps", List.of("b"))),
                    map("type", "block-dirty-bitmap-enable", "data", map("node", "disk", "name", "c")),
                    map("type", "block-dirty-bitmap-disable", "data", map("node", "disk", "name", "d")),
                    map("type", "block-dirty-bitmap-add", "data", map("node", "disk", "name", "new")),
                    map("type", "block-dirty-bitmap-remove", "data", map("node", "disk", "name", "b")),
                    map("type", "abort", "data", map())))))));
            assertThat(run(s, probe)).as("%s: bits after the aborted transaction", kind).isEqualTo(before);
            assertThat(canonical(bitmapsOf(s, "disk"))).as("%s", kind).isEqualTo(listedBefore);
            // The same actions without the abort all take effect.
            r.addAll(run(s, List.of(cmd("transaction", map("actions", List.of(
                    map("type", "block-dirty-bitmap-clear", "data", map("node", "disk", "name", "a")),
                    map("type", "block-dirty-bitmap-merge", "data", map("node", "disk", "target", "c", "bitmaps", List.of("b"))),
                    map("type", "block-dirty-bitmap-add", "data", map("node", "disk", "name", "new")),
                    map("type", "block-dirty-bitmap-remove", "data", map("node", "disk", "name", "d"))))))));
            r.addAll(run(s, List.of(sha("a"), sha("c"))));
            r.add(canonical(bitmapsOf(s, "disk")));
            replies.put(kind, r);
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        assertThat(replies.get(Kind.BLOCKJOBD).get(0)).contains("Transaction aborted using Abort action");
    }

    /**
     * A job's writes mark bitmaps as a client's do: a commit writes mid's data into base, and
     * base's bitmap counts exactly that, as in QEMU; stream's copy-on-read writes mark nothing in
     * QEMU (they bypass the write path's end), and not here either.
     */
    @Test
    void aJobsWritesAreCountedAsQemuCountsThem() throws Exception {
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve("job-" + kind.name().toLowerCase()));
            Qemu.img("create", "-f", "qcow2", d.resolve("base.qcow2").toString(), "64M");
            Qemu.io(d.resolve("base.qcow2"), "qcow2", "write -P 0x11 0 64M");
            Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", d.resolve("mid.qcow2").toString());
            Qemu.io(d.resolve("mid.qcow2"), "qcow2", "write -P 0x22 1M 3M", "write -P 0x23 40M 100k");
            Qemu.img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", d.resolve("top.qcow2").toString());
            Qemu.img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", d.resolve("side.qcow2").toString());
            List<String> options = new ArrayList<>();
            String below = null;
            for (String layer : List.of("base", "mid", "top")) {
                options.addAll(List.of("--blockdev", "driver=file,node-name=f-" + layer + ",filename=" + d.resolve(layer + ".qcow2"),
                        "--blockdev", "driver=qcow2,node-name=" + layer + ",file=f-" + layer + (below == null ? "" : ",backing=" + below)));
                below = layer;
            }
            StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), options);
            running.add(s);
            List<String> r = new ArrayList<>(run(s, List.of(
                    cmd("block-dirty-bitmap-add", map("node", "base", "name", "b")),
                    cmd("block-dirty-bitmap-add", map("node", "top", "name", "t", "granularity", 4096)))));
            s.qmp.ok("block-stream", map("job-id", "s", "device", "top", "base-node", "mid"));
            s.qmp.awaitEvent("BLOCK_JOB_COMPLETED", e -> e.path("device").asString().equals("s"));
            s.qmp.ok("block-commit", map("job-id", "c", "device", "top", "top-node", "mid", "base-node", "base"));
            s.qmp.awaitEvent("BLOCK_JOB_COMPLETED", e -> e.path("device").asString().equals("c"));
            r.addAll(run(s, List.of(
                    cmd("x-debug-block-dirty-bitmap-sha256", map("node", "base", "name", "b")),
                    cmd("x-debug-block-dirty-bitmap-sha256", map("node", "top", "name", "t")))));
            r.add(canonical(bitmapsOf(s, "base")));
            r.add(canonical(bitmapsOf(s, "top")));
            replies.put(kind, r);
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        assertThat(replies.get(Kind.BLOCKJOBD).get(4)).as("the commit wrote 3M and 100k into base")
                .contains("count=" + (3 * MIB + 2 * 65536));
    }
}
