package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

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
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * qcow2 internal snapshots: {@code blockdev-snapshot-internal-sync},
 * {@code blockdev-snapshot-delete-internal-sync} and the {@code transaction} action, taken while
 * a client writes through an NBD export; images whose snapshots {@code qemu-img snapshot -c}
 * made, written through blockjobd. Judges: {@code qemu-img snapshot -l} (names and ids),
 * {@code qemu-img check} (clean, no leak), and {@code qemu-img compare} of each snapshot
 * ({@code qemu-img convert -l snapshot.name=S}) and of the active layer against raw references
 * that qemu-io wrote. The QMP sequence also runs on qemu-storage-daemon 7.2, and the replies
 * (errors word for word) and the snapshot lists must be the same.
 */
class InternalSnapshotIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final long M = 1 << 20;
    private static final long K = 1024;

    @TempDir
    Path dir;
    private final Map<Kind, StorageDaemon> daemons = new EnumMap<>(Kind.class);

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons.values()) {
            d.close();
        }
    }

    /** The writes between the snapshots: A after s1, B after s2 (qemu-io commands, for NBD and for the raw references). */
    private static final String[] WRITES_A = {
        "write -P 0x22 0 1M", "write -P 0x23 6M 64k", "write -P 0x24 100k 8k", "write -z 4M 512k",
    };
    private static final String[] WRITES_B = {
        "write -P 0x33 512k 1M", "discard 2M 1M", "write -P 0x35 7M 64k", "write -P 0x36 6208k 4k",
    };

    /**
     * {@code disk}: 8 MiB, 0x11 in [0, 6M), compressed 0x44 in [6M, 6M+256k), a zero cluster at
     * 7M; {@code ro}: read-only with a snapshot {@code qemu-img} made; {@code v2}: compat 0.10;
     * {@code r.raw}.
     */
    private Path template() throws Exception {
        Path t = Files.createDirectories(dir.resolve("template"));
        Qemu.img("create", "-f", "qcow2", t.resolve("disk.qcow2").toString(), "8M");
        Qemu.io(t.resolve("disk.qcow2"), "qcow2", "write -P 0x11 0 6M", "write -c -P 0x44 6M 256k", "write -z 7M 64k");
        Qemu.img("create", "-f", "qcow2", t.resolve("ro.qcow2").toString(), "4M");
        Qemu.img("snapshot", "-c", "rs", t.resolve("ro.qcow2").toString());
        Qemu.img("create", "-f", "qcow2", "-o", "compat=0.10", t.resolve("v2.qcow2").toString(), "4M");
        Qemu.img("create", "-f", "raw", t.resolve("r.raw").toString(), "4M");
        Qemu.img("create", "-f", "qcow2", t.resolve("tgt.qcow2").toString(), "8M");
        // The references: the disk at each instant, written by qemu-io on raw copies.
        Path ref0 = t.resolve("ref0.raw");
        Qemu.img("convert", "-O", "raw", t.resolve("disk.qcow2").toString(), ref0.toString());
        Path refA = t.resolve("refA.raw");
        Files.copy(ref0, refA);
        Qemu.io(refA, "raw", WRITES_A);
        Path refB = t.resolve("refB.raw");
        Files.copy(refA, refB);
        Qemu.io(refB, "raw", WRITES_B);
        return t;
    }

    private StorageDaemon start(Kind kind, Path d) throws Exception {
        StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), List.of(
                "--blockdev", "driver=file,node-name=diskf,filename=" + d.resolve("disk.qcow2"),
                "--blockdev", "driver=qcow2,node-name=disk,discard=unmap,file=diskf",
                "--blockdev", "driver=qcow2,node-name=ro,read-only=on,file.driver=file,file.filename=" + d.resolve("ro.qcow2"),
                "--blockdev", "driver=qcow2,node-name=v2,file.driver=file,file.filename=" + d.resolve("v2.qcow2"),
                "--blockdev", "driver=file,node-name=rf,filename=" + d.resolve("r.raw"),
                "--blockdev", "driver=raw,node-name=r,file=rf",
                "--blockdev", "driver=qcow2,node-name=tgt,file.driver=file,file.filename=" + d.resolve("tgt.qcow2")));
        daemons.put(kind, s);
        return s;
    }

    /** The reply as compared: "ok", or the error's class and text. */
    private static String reply(StorageDaemon d, String command, Object args) throws Exception {
        JsonNode r = d.qmp.execute(command, args);
        if (r.has("return")) {
            return "ok";
        }
        return r.get("error").get("class").asString() + ": " + r.get("error").get("desc").asString();
    }

    /** A command's argument and return members in {@code query-qmp-schema}: name, "?" if optional, JSON type. */
    private static String schemaOf(StorageDaemon d, String name) throws Exception {
        Map<String, JsonNode> byName = new LinkedHashMap<>();
        for (JsonNode e : d.qmp.ok("query-qmp-schema")) {
            byName.put(e.get("name").asString(), e);
        }
        JsonNode entry = byName.values().stream()
                .filter(e -> e.get("meta-type").asString().equals("command") && e.get("name").asString().equals(name))
                .findFirst().orElse(null);
        if (entry == null) {
            return "absent";
        }
        return members(byName, entry.get("arg-type").asString()) + " -> " + members(byName, entry.get("ret-type").asString());
    }

    private static String members(Map<String, JsonNode> byName, String type) {
        List<String> out = new ArrayList<>();
        for (JsonNode m : byName.get(type).get("members")) {
            JsonNode t = byName.get(m.get("type").asString());
            String json = t.get("meta-type").asString().equals("builtin") ? t.get("json-type").asString()
                    : t.get("meta-type").asString();
            out.add(m.get("name").asString() + (m.has("default") ? "?" : "") + ":" + json);
        }
        out.sort(null);
        return String.join(",", out);
    }

    /** A delete's returned SnapshotInfo as compared: its id, name, VM state size and which members it has. */
    private static String deleted(StorageDaemon d, Object args) throws Exception {
        JsonNode r = d.qmp.execute("blockdev-snapshot-delete-internal-sync", args);
        if (!r.has("return")) {
            return r.get("error").get("desc").asString();
        }
        JsonNode info = r.get("return");
        List<String> keys = new ArrayList<>(info.propertyNames());
        keys.sort(null);
        long now = System.currentTimeMillis() / 1000;
        assertThat(info.get("date-sec").asLong()).as("date-sec").isBetween(now - 600, now + 1);
        assertThat(info.get("date-nsec").asLong()).isBetween(0L, 999_999_999L);
        assertThat(info.get("vm-clock-nsec").asLong()).isBetween(0L, 999_999_999L);
        return info.get("id").asString() + " " + info.get("name").asString() + " " + info.get("vm-state-size") + " " + keys;
    }

    /** {@code query-named-block-nodes}' {@code image.snapshots} of {@code node}: id, name, VM state size, members. */
    private static String imageSnapshots(StorageDaemon d, String node) throws Exception {
        for (JsonNode n : d.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals(node)) {
                JsonNode list = n.get("image").get("snapshots");
                if (list == null) {
                    return "none";
                }
                List<String> out = new ArrayList<>();
                for (JsonNode sn : list) {
                    List<String> keys = new ArrayList<>(sn.propertyNames());
                    keys.sort(null);
                    out.add(sn.get("id").asString() + " " + sn.get("name").asString() + " " + sn.get("vm-state-size")
                            + " icount=" + sn.path("icount").asString("-") + " " + keys);
                }
                return String.join("; ", out);
            }
        }
        return "no node";
    }

    /** {@code qemu-img snapshot -l}: "id tag" of each snapshot, in order. */
    private static List<String> snapshotList(Path image) {
        List<String> out = new ArrayList<>();
        String text = Qemu.img("snapshot", "-l", image.toString()).out();
        for (String line : text.split("\n")) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 2 && f[0].matches("\\d+")) {
                out.add(f[0] + " " + f[1]);
            }
        }
        return out;
    }

    /** The contents of snapshot {@code name} of {@code image}, as raw. */
    private static Path snapshotData(Path image, String name, Path out) {
        Qemu.img("convert", "-l", "snapshot.name=" + name, "-O", "raw", image.toString(), out.toString());
        return out;
    }

    private static void assertSame(Path raw, Path reference, String what) {
        assertThat(Qemu.identical(raw, "raw", reference, "raw")).as(what).isTrue();
    }

    /** The sequence on one daemon; what it saw, by step. */
    private Map<String, String> run(StorageDaemon d) throws Exception {
        Map<String, String> seen = new LinkedHashMap<>();
        for (String c : List.of("blockdev-snapshot-internal-sync", "blockdev-snapshot-delete-internal-sync")) {
            seen.put("schema " + c, schemaOf(d, c));
        }
        String create = "blockdev-snapshot-internal-sync";
        String delete = "blockdev-snapshot-delete-internal-sync";
        seen.put("missing device", reply(d, create, map("device", "nope", "name", "x")));
        seen.put("not a root", reply(d, create, map("device", "diskf", "name", "x")));
        seen.put("read-only", reply(d, create, map("device", "ro", "name", "x")));
        seen.put("raw", reply(d, create, map("device", "r", "name", "x")));
        seen.put("empty name", reply(d, create, map("device", "disk", "name", "")));
        seen.put("no name", reply(d, create, map("device", "disk")));
        seen.put("delete, neither", reply(d, delete, map("device", "disk")));
        seen.put("delete missing name", reply(d, delete, map("device", "disk", "name", "zz")));
        seen.put("delete missing id", reply(d, delete, map("device", "disk", "id", "7")));
        seen.put("delete raw", reply(d, delete, map("device", "r", "name", "zz")));
        seen.put("delete not a root", reply(d, delete, map("device", "diskf", "name", "zz")));
        seen.put("image snapshots ro", imageSnapshots(d, "ro"));
        seen.put("delete read-only", reply(d, delete, map("device", "ro", "name", "rs")));
        // QEMU 7.2 drops the snapshot from its list in memory although the delete failed (the
        // image keeps it); blockjobd still lists it.
        String roAfter = imageSnapshots(d, "ro");
        if (d.kind == Kind.BLOCKJOBD) {
            assertThat(roAfter).isEqualTo(seen.get("image snapshots ro"));
        }

        d.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "tgt", "sync", "full", "speed", 1,
                "filter-node-name", "mt"));
        seen.put("during a job", reply(d, create, map("device", "disk", "name", "x")));
        seen.put("during a job, its filter", reply(d, create, map("device", "mt", "name", "x")));
        seen.put("delete during a job, its filter", reply(d, delete, map("device", "mt", "name", "x")));
        d.qmp.ok("block-job-cancel", map("device", "m", "force", true));
        d.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> e.get("id").asString().equals("m")
                && e.get("status").asString().equals("null"));

        d.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "disk", "writable", true));
        d.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "b0", "persistent", true));
        String uri = d.nbdUri("disk");
        seen.put("s1", reply(d, create, map("device", "disk", "name", "s1")));
        Qemu.ioNbd(uri, WRITES_A);
        seen.put("s1 again", reply(d, create, map("device", "disk", "name", "s1")));
        seen.put("s2", reply(d, create, map("device", "disk", "name", "s2")));
        Qemu.ioNbd(uri, WRITES_B);
        seen.put("transaction aborted", reply(d, "transaction", map("actions", List.of(
                map("type", "blockdev-snapshot-internal-sync", "data", map("device", "disk", "name", "t1")),
                map("type", "abort", "data", map())))));
        seen.put("transaction", reply(d, "transaction", map("actions", List.of(
                map("type", "blockdev-snapshot-internal-sync", "data", map("device", "disk", "name", "t2"))))));
        seen.put("named like an id", reply(d, create, map("device", "disk", "name", "1")));
        seen.put("delete by id and wrong name", reply(d, delete, map("device", "disk", "id", "1", "name", "s2")));
        seen.put("delete by name that is an id", deleted(d, map("device", "disk", "name", "1")));
        seen.put("delete t2 by id and name", deleted(d, map("device", "disk", "id", "3", "name", "t2")));
        seen.put("delete again", reply(d, delete, map("device", "disk", "id", "3", "name", "t2")));
        seen.put("s3", reply(d, create, map("device", "disk", "name", "s3")));
        seen.put("v2 snapshot", reply(d, create, map("device", "v2", "name", "s1")));
        seen.put("v2 resize", reply(d, "block_resize", map("node-name", "v2", "size", 8 * M)));
        seen.put("a 300-byte name", reply(d, create, map("device", "v2", "name", "n".repeat(300))));
        seen.put("its first 255 bytes", reply(d, create, map("device", "v2", "name", "n".repeat(255))));
        Qemu.ioNbd(uri, "read -P 0x33 512k 1M", "read -P 0x36 6208k 4k");
        JsonNode bitmaps = null;
        for (JsonNode n : d.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals("disk")) {
                bitmaps = n.get("dirty-bitmaps");
            }
        }
        seen.put("bitmap", bitmaps.get(0).get("name").asString() + " count=" + bitmaps.get(0).get("count"));
        for (String node : List.of("disk", "diskf", "r", "v2")) {
            seen.put("image snapshots " + node, imageSnapshots(d, node));
        }
        return seen;
    }

    @Test
    void asQemuStorageDaemon() throws Exception {
        Path t = template();
        Map<Kind, Map<String, String>> seen = new EnumMap<>(Kind.class);
        Map<Kind, Map<String, List<String>>> lists = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            for (String f : List.of("disk.qcow2", "ro.qcow2", "v2.qcow2", "r.raw", "tgt.qcow2")) {
                Files.copy(t.resolve(f), d.resolve(f), StandardCopyOption.COPY_ATTRIBUTES);
            }
            StorageDaemon s = start(kind, d);
            seen.put(kind, run(s));
            s.quit();
            Map<String, List<String>> l = new LinkedHashMap<>();
            for (String f : List.of("disk.qcow2", "ro.qcow2", "v2.qcow2")) {
                Qemu.assertClean(d.resolve(f));
                l.put(f, snapshotList(d.resolve(f)));
            }
            lists.put(kind, l);
            // Each snapshot holds the disk of its instant; the active layer every write.
            Path disk = d.resolve("disk.qcow2");
            assertSame(snapshotData(disk, "s1", d.resolve("s1.raw")), t.resolve("ref0.raw"), kind + " s1");
            assertSame(snapshotData(disk, "s2", d.resolve("s2.raw")), t.resolve("refA.raw"), kind + " s2");
            assertSame(snapshotData(disk, "s3", d.resolve("s3.raw")), t.resolve("refB.raw"), kind + " s3");
            assertThat(Qemu.identical(disk, "qcow2", t.resolve("refB.raw"), "raw")).as(kind + " active").isTrue();
            JsonNode info = Qemu.info(disk);
            assertThat(info.get("format-specific").get("data").get("bitmaps").get(0).get("name").asString())
                    .as(kind + " persistent bitmap").isEqualTo("b0");
        }
        Map<String, String> bj = seen.get(Kind.BLOCKJOBD);
        Map<String, String> qemu = seen.get(Kind.QEMU);
        assertThat(bj.keySet()).containsExactlyElementsOf(qemu.keySet());
        for (String step : qemu.keySet()) {
            assertThat(bj.get(step)).as("%s (qemu-storage-daemon: %s)", step, qemu.get(step)).isEqualTo(qemu.get(step));
        }
        assertThat(lists.get(Kind.BLOCKJOBD)).isEqualTo(lists.get(Kind.QEMU));

        // What QEMU does, so that a change in both would not pass unnoticed.
        assertThat(qemu.get("read-only")).isEqualTo("GenericError: Device 'ro' is read only");
        assertThat(qemu.get("raw")).isEqualTo(
                "GenericError: Block format 'raw' used by device 'r' does not support internal snapshots");
        assertThat(qemu.get("s1 again")).isEqualTo("GenericError: Snapshot with name 's1' already exists on device 'disk'");
        assertThat(qemu.get("delete, neither")).isEqualTo("GenericError: Name or id must be provided");
        assertThat(qemu.get("delete missing name"))
                .isEqualTo("GenericError: Snapshot with id 'null' and name 'zz' does not exist on device 'disk'");
        assertThat(qemu.get("delete read-only"))
                .isEqualTo("GenericError: Failed to remove snapshot from snapshot list: Operation not permitted");
        assertThat(qemu.get("during a job")).isEqualTo("GenericError: Need a root block node"); // below mirror_top
        // The job is its nodes' parent in QEMU: its op blocker is never reached.
        assertThat(qemu.get("during a job, its filter")).isEqualTo("GenericError: Need a root block node");
        assertThat(qemu.get("v2 resize")).isEqualTo("GenericError: Can't resize a v2 image which has snapshots");
        assertThat(lists.get(Kind.QEMU).get("disk.qcow2")).containsExactly("1 s1", "2 s2", "3 s3");
    }

    /**
     * An image whose snapshots {@code qemu-img snapshot -c} made is written through blockjobd:
     * the snapshots keep their data, the image stays clean; then blockjobd deletes them and no
     * cluster leaks. Snapshots taken while a client writes hold a state the writes passed through.
     */
    @Test
    void imagesWithQemuSnapshotsAndSnapshotsDuringWrites() throws Exception {
        Path d = Files.createDirectories(dir.resolve("q"));
        Path disk = d.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "8M");
        Qemu.io(disk, "qcow2", "write -P 0x11 0 4M", "write -c -P 0x12 4M 512k");
        Qemu.img("snapshot", "-c", "q1", disk.toString());
        Qemu.io(disk, "qcow2", "write -P 0x13 1M 1M", "write -P 0x14 6M 1M");
        Qemu.img("snapshot", "-c", "q2", disk.toString());
        Path q1 = snapshotData(disk, "q1", d.resolve("q1.raw"));
        Path q2 = snapshotData(disk, "q2", d.resolve("q2.raw"));
        Path ref = d.resolve("ref.raw");
        Files.copy(q2, ref);
        String[] writes = {"write -P 0x21 0 64k", "write -P 0x22 1536k 1M", "write -P 0x23 4M 100k",
            "write -z 6M 256k", "discard 7M 512k", "write -P 0x24 8000k 192k"};
        Qemu.io(ref, "raw", writes);

        StorageDaemon first = StorageDaemon.start(Kind.BLOCKJOBD, Files.createDirectories(d.resolve("run")), List.of(
                "--blockdev", "driver=qcow2,node-name=disk,discard=unmap,file.driver=file,file.filename=" + disk,
                "--export", "type=nbd,id=e,node-name=disk,writable=on"));
        daemons.put(Kind.BLOCKJOBD, first);
        StorageDaemon s = first;
        Qemu.ioNbd(s.nbdUri("disk"), writes);

        // Snapshots while a client writes: every 64 KiB chunk, in order, twice (patterns 0x31, then 0x32).
        List<String> sweep = new ArrayList<>();
        for (int pass = 1; pass <= 2; pass++) {
            for (long off = 0; off < 8 * M; off += 64 * K) {
                sweep.add("write -P 0x3" + pass + " " + off + " 64k");
            }
        }
        CompletableFuture<Qemu.Result> writer = CompletableFuture.supplyAsync(
                () -> Qemu.ioNbd(first.nbdUri("disk"), sweep.toArray(String[]::new)));
        List<String> taken = new ArrayList<>();
        while (!writer.isDone() && taken.size() < 40) {
            String name = "w" + taken.size();
            s.qmp.ok("blockdev-snapshot-internal-sync", map("device", "disk", "name", name));
            taken.add(name);
        }
        writer.join();
        s.qmp.ok("blockdev-snapshot-internal-sync", map("device", "disk", "name", "after"));
        taken.add("after");
        s.quit();
        Qemu.assertClean(disk);
        assertSame(snapshotData(disk, "q1", d.resolve("q1-after.raw")), q1, "q1 unchanged");
        assertSame(snapshotData(disk, "q2", d.resolve("q2-after.raw")), q2, "q2 unchanged");
        // Each sweep snapshot: some prefix of the writes done, no write torn; later ones further on.
        int before = -1;
        for (String name : taken) {
            byte[] data = Files.readAllBytes(snapshotData(disk, name, d.resolve(name + ".raw")));
            int done = writesDone(data, (int) (8 * M / (64 * K)), name);
            assertThat(done).as("%s after the one before", name).isGreaterThanOrEqualTo(before);
            before = done;
        }
        assertThat(before).as("the last snapshot came after the sweep").isEqualTo(sweep.size());
        assertThat(Qemu.identical(disk, "qcow2", d.resolve("after.raw"), "raw"))
                .as("the last snapshot, taken after the sweep, is the active layer").isTrue();
        List<String> expected = new ArrayList<>(List.of("1 q1", "2 q2"));
        for (int i = 0; i < taken.size(); i++) {
            expected.add((i + 3) + " " + taken.get(i));
        }
        assertThat(snapshotList(disk)).containsExactlyElementsOf(expected);

        // blockjobd deletes them all, qemu-img's too: no leak, the data stays.
        s = StorageDaemon.start(Kind.BLOCKJOBD, d.resolve("run"), List.of(
                "--blockdev", "driver=qcow2,node-name=disk,discard=unmap,file.driver=file,file.filename=" + disk,
                "--export", "type=nbd,id=e,node-name=disk,writable=on"));
        daemons.put(Kind.BLOCKJOBD, s);
        s.qmp.ok("blockdev-snapshot-delete-internal-sync", map("device", "disk", "name", "q2"));
        Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x41 4M 64k");
        for (String name : taken) {
            s.qmp.ok("blockdev-snapshot-delete-internal-sync", map("device", "disk", "name", name));
        }
        s.qmp.ok("blockdev-snapshot-delete-internal-sync", map("device", "disk", "id", "1"));
        Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x42 0 64k", "read -P 0x41 4M 64k", "read -P 0x32 64k 64k");
        s.quit();
        Qemu.assertClean(disk);
        assertThat(snapshotList(disk)).isEmpty();
        JsonNode check = Qemu.JSON.readTree(Qemu.check(disk).out());
        assertThat(check.path("leaks").asLong(0)).isZero();
        Path end = d.resolve("end.raw");
        Qemu.img("convert", "-O", "raw", disk.toString(), end.toString());
        byte[] data = Files.readAllBytes(end);
        assertThat(data[0]).isEqualTo((byte) 0x42);
        assertThat(data[(int) (4 * M)]).isEqualTo((byte) 0x41);
        assertThat(data[(int) (64 * K)]).isEqualTo((byte) 0x32);
    }

    /**
     * How many of the sweep's writes (chunk by chunk, pass 1 then pass 2) {@code data} shows as
     * done; fails if it is not a state the sweep passed through (a torn chunk, a gap).
     */
    private static int writesDone(byte[] data, int chunks, String name) {
        int[] version = new int[chunks];
        for (int c = 0; c < chunks; c++) {
            int off = c * 64 * 1024;
            byte b = data[off];
            version[c] = b == 0x32 ? 2 : b == 0x31 ? 1 : 0;
            for (int i = off; i < off + 64 * 1024; i++) { // before the sweep a chunk holds other bytes
                if (version[c] > 0 ? data[i] != b : data[i] == 0x31 || data[i] == 0x32) {
                    throw new AssertionError(name + ": chunk " + c + " is torn at byte " + i);
                }
            }
        }
        int done = 0;
        for (int c = 0; c < chunks; c++) {
            done += version[c];
            if (c > 0) {
                assertThat(version[c]).as("%s: chunk %d after chunk %d", name, c, c - 1)
                        .isBetween(version[0] - 1, version[c - 1]);
            }
        }
        return done;
    }
}
