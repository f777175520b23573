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
 * {@code blockdev-backup} driven over QMP while {@code qemu-io} writes through an NBD export of
 * the disk, blockjobd beside qemu-storage-daemon: the target must be the disk as it was when the
 * backup began, bitmaps must end as QEMU's do, and refused arguments get QEMU's messages.
 */
class BackupIT {
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

    private Path dirFor(Kind kind) throws Exception {
        return Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
    }

    /** A 32 MiB qcow2 disk with data, zeroes and holes. */
    private static Path disk(Path d, String name) {
        Path disk = d.resolve(name + ".qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "32M");
        Qemu.io(disk, "qcow2", "write -P 0x11 0 8M", "write -P 0x22 12M 4M", "write -z 20M 1M",
                "write -P 0x33 30M 64k");
        return disk;
    }

    /** A copy of {@code image} beside it, made before a daemon opens it: the disk at a point in time. */
    private static Path copyOf(Path image) {
        Path copy = image.resolveSibling("before.qcow2");
        Qemu.img("convert", "-O", "qcow2", image.toString(), copy.toString());
        return copy;
    }

    private static Path image(Path d, String name, String size) {
        Path p = d.resolve(name + ".qcow2");
        Qemu.img("create", "-f", "qcow2", p.toString(), size);
        return p;
    }

    private StorageDaemon start(Kind kind, Path d, List<String> options) throws Exception {
        StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), options);
        running.add(s);
        return s;
    }

    private static List<String> node(String name, Path file) {
        return List.of("--blockdev", "driver=file,node-name=f-" + name + ",filename=" + file,
                "--blockdev", "driver=qcow2,node-name=" + name + ",file=f-" + name);
    }

    private static Map<String, Object> qcow2(String name, Path file) {
        return map("driver", "qcow2", "node-name", name, "file", map("driver", "file", "filename", file.toString()));
    }

    /** A target whose every write fails with EIO (blkdebug), for failed backups. */
    private static Map<String, Object> failingTarget(String name, Path file) {
        return map("driver", "qcow2", "node-name", name, "file", map("driver", "blkdebug",
                "inject-error", List.of(map("event", "pwritev", "errno", 5)),
                "image", map("driver", "file", "filename", file.toString())));
    }

    private static JsonNode awaitEnd(StorageDaemon s, String job) {
        return s.qmp.awaitEvent("", e -> job.equals(e.path("device").asString(null))
                && (e.has("len") || e.has("error")), java.time.Duration.ofSeconds(120));
    }

    private static JsonNode completed(StorageDaemon s, String job) {
        JsonNode e = s.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> job.equals(d.path("device").asString(null)),
                java.time.Duration.ofSeconds(120));
        return e.get("data");
    }

    private static JsonNode bitmap(StorageDaemon s, String node, String name) throws Exception {
        for (JsonNode n : s.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals(node)) {
                for (JsonNode b : n.path("dirty-bitmaps")) {
                    if (name.equals(b.path("name").asString(null))) {
                        return b;
                    }
                }
            }
        }
        throw new AssertionError("no bitmap " + node + "/" + name);
    }

    private static String sha(StorageDaemon s, String node, String name) throws Exception {
        return s.qmp.ok("x-debug-block-dirty-bitmap-sha256", map("node", node, "name", name)).get("sha256").asString();
    }

    /**
     * A full backup while a client overwrites data, zeroes and holes through the disk's export,
     * slowed by {@code speed} so that the writes land while the copy runs: the target is the
     * disk before the writes, on both daemons.
     */
    @Test
    void aFullBackupIsTheDiskAtItsStartWhileClientsWrite() throws Exception {
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path disk = disk(d, "disk");
            Path before = copyOf(disk);
            Path target = image(d, "target", "32M");
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(node("tgt", target));
            opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full",
                    "speed", 8 * MIB));
            Qemu.ioNbd(s.nbdUri("disk"),
                    "write -P 0x44 0 64k", "write -P 0x45 4M 1M", "write -P 0x46 7M 2M", // data, across data and hole
                    "write -P 0x47 20M 512k", "write -P 0x48 25M 64k", "write -P 0x49 31M 1M",
                    "write -P 0x4a 100k 3000", "discard 13M 1M", "write -P 0x4b 0 4k");
            JsonNode jobs = s.qmp.ok("query-block-jobs");
            assertThat(jobs).as("%s: the writes raced the copy", kind).hasSize(1);
            JsonNode done = completed(s, "b");
            assertThat(done.has("error")).as("%s: %s", kind, done).isFalse();
            assertThat(done.get("offset").asLong()).isEqualTo(done.get("len").asLong());
            s.quit();
            assertThat(Qemu.identical(target, "qcow2", before, "qcow2")).as("%s: target = disk at start", kind).isTrue();
            Qemu.assertClean(target);
            Qemu.assertClean(disk);
            Qemu.io(disk, "qcow2", "read -P 0x4b 0 4k", "read -P 0x44 4k 60k", "read -P 0x46 7M 2M",
                    "read -P 0x49 31M 1M");
        }
    }

    /**
     * Many writers over the same clusters at once, racing the background copy of those very
     * clusters (no speed limit, small clusters of data written from several connections).
     */
    @Test
    void writesRacingTheCopyOfTheSameClustersLoseNothing() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = d.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "64M");
        Qemu.io(disk, "qcow2", "write -P 0x5a 0 64M");
        Path before = copyOf(disk);
        Path target = image(d, "target", "64M");
        List<String> opts = new ArrayList<>(node("disk", disk));
        opts.addAll(node("tgt", target));
        opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full",
                "x-perf", map("max-workers", 4, "max-chunk", 65536)));
        List<Thread> writers = new ArrayList<>();
        List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int w = 0; w < 4; w++) {
            int seed = w;
            Thread t = Thread.ofVirtual().start(() -> {
                try {
                    List<String> cmds = new ArrayList<>();
                    for (int i = 0; i < 64; i++) {
                        long off = ((i * 7L + seed * 13L) % 1024) * 65536 + (seed * 4096L);
                        cmds.add("aio_write -P " + (0x60 + seed) + " " + off + " 8k");
                    }
                    cmds.add("aio_flush");
                    Qemu.ioNbd(s.nbdUri("disk"), cmds.toArray(String[]::new));
                } catch (Throwable e) {
                    failures.add(e);
                }
            });
            writers.add(t);
        }
        for (Thread t : writers) {
            t.join();
        }
        assertThat(failures).isEmpty();
        JsonNode done = completed(s, "b");
        assertThat(done.has("error")).as("%s", done).isFalse();
        s.quit();
        assertThat(Qemu.identical(target, "qcow2", before, "qcow2")).isTrue();
        Qemu.assertClean(target);
        Qemu.assertClean(disk);
    }

    /** Every argument QEMU's do_backup_common and backup_job_create refuse, refused with QEMU's words. */
    @Test
    void refusedArgumentsGetQemusMessages() throws Exception {
        Map<Kind, List<String>> replies = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            List<String> opts = new ArrayList<>(node("disk", disk(d, "disk")));
            opts.addAll(node("tgt", image(d, "target", "32M")));
            opts.addAll(node("small", image(d, "small", "16M")));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "b0"));
            List<Map<String, Object>> bad = List.of(
                    map("device", "disk", "target", "tgt", "sync", "bitmap"),
                    map("device", "disk", "target", "tgt", "sync", "incremental"),
                    map("device", "disk", "target", "tgt", "sync", "incremental", "bitmap", "b0", "bitmap-mode", "never"),
                    map("device", "disk", "target", "tgt", "sync", "full", "bitmap", "nosuch", "bitmap-mode", "on-success"),
                    map("device", "disk", "target", "tgt", "sync", "full", "bitmap", "b0"),
                    map("device", "disk", "target", "tgt", "sync", "none", "bitmap", "b0", "bitmap-mode", "always"),
                    map("device", "disk", "target", "tgt", "sync", "full", "bitmap", "b0", "bitmap-mode", "never"),
                    map("device", "disk", "target", "tgt", "sync", "top", "bitmap-mode", "always"),
                    map("device", "disk", "target", "disk", "sync", "full"),
                    map("device", "disk", "target", "small", "sync", "full"),
                    map("device", "nosuch", "target", "tgt", "sync", "full"),
                    map("device", "disk", "target", "nosuch", "sync", "full"),
                    map("device", "disk", "target", "tgt", "sync", "full", "x-perf", map("max-workers", 0)),
                    map("device", "disk", "target", "tgt", "sync", "full", "x-perf", map("max-chunk", -1)),
                    map("device", "disk", "target", "tgt", "sync", "full", "x-perf", map("max-chunk", 4096)),
                    map("device", "disk", "target", "tgt", "sync", "sideways"),
                    map("device", "disk", "target", "tgt"));
            List<String> r = new ArrayList<>();
            for (Map<String, Object> args : bad) {
                JsonNode e = s.qmp.error("blockdev-backup", args);
                r.add(e.get("class").asString() + ": " + e.get("desc").asString());
            }
            // Nothing of a refused backup stays behind: no job, no filter, the bitmap free.
            assertThat(s.qmp.ok("query-block-jobs")).isEmpty();
            JsonNode b0 = bitmap(s, "disk", "b0");
            assertThat(b0.get("busy").asBoolean()).isFalse();
            assertThat(b0.get("recording").asBoolean()).isTrue();
            replies.put(kind, r);
            s.quit();
        }
        assertThat(replies.get(Kind.BLOCKJOBD)).isEqualTo(replies.get(Kind.QEMU));
        assertThat(replies.get(Kind.BLOCKJOBD)).contains(
                "GenericError: must provide a valid bitmap name for 'incremental' sync mode",
                "GenericError: Bitmap sync mode must be given when providing a bitmap",
                "GenericError: Source and target image have different sizes");
    }

    /** One cell of QEMU's test 257: a sync mode, a bitmap mode, and whether the backup fails. */
    private record Cell(String sync, String mode, boolean fails) {
    }

    /**
     * QEMU's test 257 in small: for each sync mode and bitmap mode, a backup that succeeds and
     * one whose target fails every write; the bitmap afterwards (count and sha256, after more
     * writes too) must be QEMU's.
     */
    @Test
    void bitmapsEndAsQemusForEverySyncModeBitmapModeAndOutcome() throws Exception {
        List<Cell> cells = new ArrayList<>();
        for (String sync : List.of("bitmap", "full", "top")) {
            for (String mode : List.of("on-success", "never", "always")) {
                if (mode.equals("never") && !sync.equals("bitmap")) {
                    continue;
                }
                cells.add(new Cell(sync, mode, false));
                cells.add(new Cell(sync, mode, true));
            }
        }
        Map<Kind, List<String>> results = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path disk = d.resolve("disk.qcow2");
            Qemu.img("create", "-f", "qcow2", disk.toString(), "8M");
            Qemu.io(disk, "qcow2", "write -P 0x11 0 8M"); // all data: a failing target copies nothing
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            List<String> out = new ArrayList<>();
            int n = 0;
            for (Cell c : cells) {
                String b = "bm" + n;
                String t = "t" + n;
                Path tf = image(d, t, "8M");
                s.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", b));
                Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x21 0 64k", "write -P 0x22 1M 192k", "write -P 0x23 5000000 1");
                s.qmp.ok("blockdev-add", c.fails() ? failingTarget(t, tf) : qcow2(t, tf));
                s.qmp.ok("blockdev-backup", map("job-id", "j" + n, "device", "disk", "target", t, "sync", c.sync(),
                        "bitmap", b, "bitmap-mode", c.mode()));
                JsonNode done = completed(s, "j" + n);
                assertThat(done.has("error")).as("%s %s", kind, c).isEqualTo(c.fails());
                JsonNode info = bitmap(s, "disk", b);
                String after = c + " -> count " + info.get("count").asLong() + " busy " + info.get("busy").asBoolean()
                        + " recording " + info.get("recording").asBoolean() + " sha " + sha(s, "disk", b);
                Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x24 7M 64k");
                out.add(after + " then " + bitmap(s, "disk", b).get("count").asLong() + " " + sha(s, "disk", b));
                s.qmp.ok("blockdev-del", map("node-name", t));
                s.qmp.ok("block-dirty-bitmap-remove", map("node", "disk", "name", b));
                n++;
            }
            results.put(kind, out);
            s.quit();
        }
        assertThat(results.get(Kind.BLOCKJOBD)).isEqualTo(results.get(Kind.QEMU));
        // What QEMU's semantics imply, so that two wrong daemons cannot agree: a successful
        // on-success backup forgets what it copied; a failed one keeps everything.
        List<String> r = results.get(Kind.BLOCKJOBD);
        assertThat(r.get(0)).startsWith("Cell[sync=bitmap, mode=on-success, fails=false] -> count 0 ");
        assertThat(r.get(1)).startsWith("Cell[sync=bitmap, mode=on-success, fails=true] -> count " + 5 * 65536 + " ");
        assertThat(r.get(5)).startsWith("Cell[sync=bitmap, mode=always, fails=true] -> count " + 5 * 65536 + " ");
        assertThat(r.get(9)).startsWith("Cell[sync=full, mode=always, fails=true] -> count " + 8 * MIB + " ");
    }

    /** The disk as an export shows it now, copied to a raw file: a point in time to restore to. */
    private static Path pointInTime(StorageDaemon s, String export, Path file) {
        Qemu.img("convert", "-f", "raw", "-O", "raw", s.nbdUri(export), file.toString());
        return file;
    }

    /**
     * libvirt's and virtnbdbackup's chain: a full backup anchored by a bitmap added in the same
     * transaction, then incrementals, each an overlay of the one before. Restored with qemu-img,
     * each equals the disk at its backup's start; a failed incremental leaves the bitmap as it
     * was, and the retry captures everything.
     */
    @Test
    void incrementalChainsRestoreToEachPointAndAFailedIncrementalLosesNothing() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = disk(d, "disk");
        Path full = image(d, "full", "32M");
        List<String> opts = new ArrayList<>(node("disk", disk));
        opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        Path p0 = pointInTime(s, "disk", d.resolve("p0.raw"));
        s.qmp.ok("blockdev-add", qcow2("full", full));
        s.qmp.ok("transaction", map("actions", List.of(
                map("type", "block-dirty-bitmap-add", "data", map("node", "disk", "name", "since")),
                map("type", "blockdev-backup", "data", map("job-id", "b0", "device", "disk", "target", "full",
                        "sync", "full")))));
        assertThat(completed(s, "b0").has("error")).isFalse();
        s.qmp.ok("blockdev-del", map("node-name", "full"));

        Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x71 64k 128k", "write -z 1M 64k", "write -P 0x72 20M 4k",
                "discard 12M 1M");
        Path p1 = pointInTime(s, "disk", d.resolve("p1.raw"));
        Path inc1 = d.resolve("inc1.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", full.toString(), "-F", "qcow2", inc1.toString());
        s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "inc1", "backing", null,
                "file", map("driver", "file", "filename", inc1.toString())));
        s.qmp.ok("blockdev-backup", map("job-id", "b1", "device", "disk", "target", "inc1", "sync", "incremental",
                "bitmap", "since"));
        // While it runs the bitmap is frozen and busy; the client's writes still reach the disk.
        JsonNode done = completed(s, "b1");
        assertThat(done.has("error")).isFalse();
        assertThat(bitmap(s, "disk", "since").get("count").asLong()).isZero();
        s.qmp.ok("blockdev-del", map("node-name", "inc1"));

        Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x73 2M 64k", "write -P 0x74 31M 512k");
        long dirty = bitmap(s, "disk", "since").get("count").asLong();
        String shaBefore = sha(s, "disk", "since");
        Path p2 = pointInTime(s, "disk", d.resolve("p2.raw"));
        Path inc2 = d.resolve("inc2.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", inc1.toString(), "-F", "qcow2", inc2.toString());
        Map<String, Object> failing = failingTarget("inc2bad", inc2);
        failing.put("backing", null);
        s.qmp.ok("blockdev-add", failing);
        s.qmp.ok("blockdev-backup", map("job-id", "b2", "device", "disk", "target", "inc2bad", "sync", "incremental",
                "bitmap", "since"));
        assertThat(completed(s, "b2").get("error").asString()).isEqualTo("Input/output error");
        assertThat(bitmap(s, "disk", "since").get("count").asLong()).as("a failed incremental keeps its bits")
                .isEqualTo(dirty);
        assertThat(sha(s, "disk", "since")).isEqualTo(shaBefore);
        s.qmp.ok("blockdev-del", map("node-name", "inc2bad"));
        s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "inc2", "backing", null,
                "file", map("driver", "file", "filename", inc2.toString())));
        s.qmp.ok("blockdev-backup", map("job-id", "b3", "device", "disk", "target", "inc2", "sync", "incremental",
                "bitmap", "since"));
        assertThat(completed(s, "b3").has("error")).isFalse();
        s.quit();
        for (Path p : List.of(full, inc1, inc2, disk)) {
            Qemu.assertClean(p);
        }
        assertThat(Qemu.identical(full, "qcow2", p0, "raw")).as("full = the disk at its start").isTrue();
        assertThat(Qemu.identical(inc1, "qcow2", p1, "raw")).as("full + inc1 = the disk at inc1's start").isTrue();
        assertThat(Qemu.identical(inc2, "qcow2", p2, "raw")).as("the retry captured everything").isTrue();
        assertThat(Qemu.identical(inc1, "qcow2", p2, "raw")).as("the points differ: the test can fail").isFalse();
    }

    /**
     * {@code completion-mode: grouped} over two disks, one backup onto a failing target: both end
     * (one failed, the other cancelled) and both bitmaps keep their point in time, as QEMU's.
     */
    @Test
    void aGroupedTransactionFailsTogetherAndKeepsEveryBitmap() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            List<String> opts = new ArrayList<>(node("d1", disk(d, "d1")));
            opts.addAll(node("d2", disk(d, "d2")));
            opts.addAll(node("t1", image(d, "t1", "32M")));
            opts.addAll(List.of("--export", "type=nbd,id=e1,node-name=d1,name=e1,writable=on",
                    "--export", "type=nbd,id=e2,node-name=d2,name=e2,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-add", failingTarget("t2", image(d, "t2", "32M")));
            for (String disk : List.of("d1", "d2")) {
                s.qmp.ok("block-dirty-bitmap-add", map("node", disk, "name", "b"));
                Qemu.ioNbd(s.nbdUri("e" + disk.substring(1)), "write -P 0x61 1M 64k");
            }
            JsonNode refused = s.qmp.error("transaction", map("actions", List.of(
                    map("type", "block-dirty-bitmap-add", "data", map("node", "d1", "name", "x")),
                    map("type", "blockdev-backup", "data", map("job-id", "g1", "device", "d1", "target", "t1",
                            "sync", "full"))), "properties", map("completion-mode", "grouped")));
            List<String> out = new ArrayList<>(List.of(refused.get("desc").asString()));
            s.qmp.ok("transaction", map("actions", List.of(
                    map("type", "blockdev-backup", "data", map("job-id", "g1", "device", "d1", "target", "t1",
                            "sync", "full", "bitmap", "b", "bitmap-mode", "on-success", "speed", 1 << 20)),
                    map("type", "blockdev-backup", "data", map("job-id", "g2", "device", "d2", "target", "t2",
                            "sync", "full", "bitmap", "b", "bitmap-mode", "on-success"))),
                    "properties", map("completion-mode", "grouped")));
            Map<String, JsonNode> ends = new java.util.HashMap<>();
            while (ends.size() < 2) {
                JsonNode e = s.qmp.awaitEvent("", x -> x.has("len") || x.has("error"), java.time.Duration.ofSeconds(120));
                ends.put(e.get("data").get("device").asString(), e);
            }
            JsonNode e1 = ends.get("g1");
            JsonNode e2 = ends.get("g2");
            out.add("g1 " + e1.get("event").asString() + " " + e1.path("data").path("error").asString(""));
            out.add("g2 " + e2.get("event").asString() + " " + e2.path("data").path("error").asString(""));
            for (String disk : List.of("d1", "d2")) {
                JsonNode b = bitmap(s, disk, "b");
                out.add(disk + " count " + b.get("count").asLong() + " busy " + b.get("busy").asBoolean());
            }
            seen.put(kind, out);
            s.quit();
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU));
        assertThat(seen.get(Kind.BLOCKJOBD)).containsExactly(
                "Action 'block-dirty-bitmap-add' does not support Transaction property completion-mode = grouped",
                "g1 BLOCK_JOB_CANCELLED ", "g2 BLOCK_JOB_COMPLETED Input/output error",
                "d1 count 65536 busy false", "d2 count 65536 busy false");
    }

    private static Map<String, Object> exportOf(String id, String node, boolean writable) {
        return map("type", "nbd", "id", id, "node-name", node, "name", id, "writable", writable);
    }

    /**
     * Pull mode as QEMU 7.0+ builds it: copy-before-write above the disk with a scratch target,
     * snapshot-access above it, exported over NBD; the guest writes through the filter's export.
     * The snapshot export reads the disk at the fleecing point, on both daemons.
     */
    @Test
    void theSnapshotExportReadsTheDiskAtTheFleecingPointWhileTheGuestWrites() throws Exception {
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path disk = disk(d, "disk");
            Path before = copyOf(disk);
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(node("scratch", image(d, "scratch", "32M")));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-add", map("driver", "copy-before-write", "node-name", "cbw", "file", "disk",
                    "target", "scratch"));
            s.qmp.ok("blockdev-add", map("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
            s.qmp.ok("block-export-add", exportOf("guest", "cbw", true));
            s.qmp.ok("block-export-add", exportOf("fleece", "acc", false));
            List<String> writes = new ArrayList<>(List.of("write -P 0x81 0 64k", "write -P 0x82 4M 2M",
                    "write -P 0x83 10M 64k", "discard 13M 1M", "write -P 0x84 31M 1M"));
            if (kind == Kind.BLOCKJOBD) {
                writes.add("write -z 12M 512k"); // QEMU 7.2 loses the old data here; blockjobs must not
            }
            Qemu.ioNbd(s.nbdUri("guest"), writes.toArray(String[]::new));
            Qemu.Result cmp = Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", s.nbdUri("fleece"),
                    before.toString());
            assertThat(cmp.exit()).as("%s: fleece = disk at the fleecing point: %s", kind, cmp.out()).isZero();
            Qemu.ioNbd(s.nbdUri("guest"), "read -P 0x82 4M 2M");
            Qemu.Result fleeceWrite = Qemu.run("qemu-io", "-f", "raw", "-c", "write 0 4k", s.nbdUri("fleece"));
            assertThat(fleeceWrite.out() + fleeceWrite.err()).as("the snapshot is read-only").contains("Permission denied");
            s.qmp.ok("block-export-del", map("id", "fleece"));
            s.qmp.ok("block-export-del", map("id", "guest"));
            s.quit();
            Qemu.assertClean(disk);
        }
    }

    /**
     * Pull mode as before QEMU 6.2: {@code blockdev-backup sync=none} into a scratch overlay backed
     * by the disk, exported; the job ends cancelled.
     */
    @Test
    void aSyncNoneBackupIntoAnOverlayIsAFleeceAndEndsCancelled() throws Exception {
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path disk = disk(d, "disk");
            Path before = copyOf(disk);
            Path overlay = d.resolve("overlay.qcow2");
            Qemu.img("create", "-f", "qcow2", "-b", disk.toString(), "-F", "qcow2", overlay.toString());
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(List.of("--export", "type=nbd,id=guest,node-name=disk,name=guest,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "fl", "backing", "disk",
                    "file", map("driver", "file", "filename", overlay.toString())));
            s.qmp.ok("blockdev-backup", map("job-id", "fleece", "device", "disk", "target", "fl", "sync", "none"));
            s.qmp.ok("block-export-add", exportOf("fleece", "fl", false));
            Qemu.ioNbd(s.nbdUri("guest"), "write -P 0x91 0 64k", "write -P 0x92 4M 2M", "write -P 0x93 31M 1M",
                    "discard 13M 64k");
            Qemu.Result cmp = Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", s.nbdUri("fleece"),
                    before.toString());
            assertThat(cmp.exit()).as("%s: %s", kind, cmp.out()).isZero();
            s.qmp.ok("block-export-del", map("id", "fleece"));
            s.qmp.ok("block-job-cancel", map("device", "fleece"));
            JsonNode end = awaitEnd(s, "fleece");
            assertThat(end.get("event").asString()).as("%s", kind).isEqualTo("BLOCK_JOB_CANCELLED");
            s.quit();
            Qemu.assertClean(disk);
            Qemu.io(disk, "qcow2", "read -P 0x92 4M 2M");
        }
    }

    /**
     * {@code on-cbw-error}: with a target that fails, {@code break-guest-write} fails the guest's
     * write and keeps the snapshot; {@code break-snapshot} lets the write pass and breaks the
     * snapshot, whose reads then fail. The same on both daemons.
     */
    @Test
    void onCbwErrorBreaksTheGuestWriteOrTheSnapshot() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            List<String> opts = new ArrayList<>(node("disk", disk(d, "disk")));
            StorageDaemon s = start(kind, d, opts);
            List<String> out = new ArrayList<>();
            for (String mode : List.of("break-guest-write", "break-snapshot")) {
                String n = mode.equals("break-snapshot") ? "s" : "g";
                s.qmp.ok("blockdev-add", failingTarget("bad" + n, image(d, "bad" + n, "32M")));
                s.qmp.ok("blockdev-add", map("driver", "copy-before-write", "node-name", "cbw" + n, "file", "disk",
                        "target", "bad" + n, "on-cbw-error", mode));
                s.qmp.ok("blockdev-add", map("driver", "snapshot-access", "node-name", "acc" + n, "file", "cbw" + n));
                s.qmp.ok("block-export-add", exportOf("guest" + n, "cbw" + n, true));
                s.qmp.ok("block-export-add", exportOf("fleece" + n, "acc" + n, false));
                Qemu.Result w = Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0xa1 0 64k", s.nbdUri("guest" + n));
                Qemu.Result r = Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 1M 64k",
                        s.nbdUri("fleece" + n));
                out.add(mode + ": guest write " + (w.out().contains("failed") ? "failed" : "ok")
                        + ", snapshot read " + (r.out().contains("failed") ? "failed" : "ok"));
                for (String id : List.of("fleece" + n, "guest" + n)) {
                    s.qmp.ok("block-export-del", map("id", id));
                    s.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> id.equals(e.path("id").asString(null)));
                }
                for (String node : List.of("acc" + n, "cbw" + n, "bad" + n)) {
                    s.qmp.ok("blockdev-del", map("node-name", node));
                }
            }
            seen.put(kind, out);
            s.quit();
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU));
        assertThat(seen.get(Kind.BLOCKJOBD)).containsExactly(
                "break-guest-write: guest write failed, snapshot read ok",
                "break-snapshot: guest write ok, snapshot read failed");
    }

    /** SIGKILL in the middle of a backup: the disk and the target stay readable and clean. */
    @Test
    void aKilledDaemonLeavesTheDiskIntact() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = disk(d, "disk");
        Path before = copyOf(disk);
        Path target = image(d, "target", "32M");
        List<String> opts = new ArrayList<>(node("disk", disk));
        opts.addAll(node("tgt", target));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full",
                "speed", 4 * MIB));
        s.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> "running".equals(e.path("status").asString(null)));
        s.killHard();
        Qemu.assertNoCorruption(disk);
        Qemu.assertNoCorruption(target);
        assertThat(Qemu.identical(disk, "qcow2", before, "qcow2")).isTrue();
    }

    /**
     * A pull-mode incremental built from real tools, as libvirt and virtnbdbackup do it: the
     * disk's bitmap is copied (disabled) at the fleecing point and exported with the snapshot;
     * {@code nbdinfo --map=qemu:dirty-bitmap:NAME} gives the dirty extents, {@code qemu-img dd}
     * reads each from the snapshot and {@code qemu-io} writes it into an overlay of the last
     * backup, while the guest keeps writing. The overlay is the disk at the fleecing point.
     */
    @Test
    void aPullModeClientCopiesTheDirtyExtentsOfTheSnapshot() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = disk(d, "disk");
        Path full = d.resolve("full.qcow2");
        Qemu.img("convert", "-O", "qcow2", disk.toString(), full.toString()); // the last backup
        List<String> opts = new ArrayList<>(node("disk", disk));
        opts.addAll(node("scratch", image(d, "scratch", "32M")));
        opts.addAll(List.of("--export", "type=nbd,id=guest0,node-name=disk,name=guest0,writable=on"));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        s.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "since-full"));
        Qemu.ioNbd(s.nbdUri("guest0"), "write -P 0xb1 64k 64k", "write -P 0xb2 3M 200k", "write -z 12M 1M",
                "write -P 0xb3 31M 4k");
        s.qmp.ok("block-export-del", map("id", "guest0"));
        s.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> "guest0".equals(e.path("id").asString(null)));
        Path point = pointInTimeOfFile(s, d);
        // The fleecing point: the bitmap's copy and the filter, before the guest writes again.
        s.qmp.ok("transaction", map("actions", List.of(
                map("type", "block-dirty-bitmap-add", "data", map("node", "disk", "name", "pull", "disabled", true)),
                map("type", "block-dirty-bitmap-merge", "data", map("node", "disk", "target", "pull",
                        "bitmaps", List.of("since-full"))))));
        s.qmp.ok("blockdev-add", map("driver", "copy-before-write", "node-name", "cbw", "file", "disk",
                "target", "scratch"));
        s.qmp.ok("blockdev-add", map("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
        s.qmp.ok("block-export-add", exportOf("guest", "cbw", true));
        s.qmp.ok("block-export-add", map("type", "nbd", "id", "fleece", "node-name", "acc", "name", "fleece",
                "bitmaps", List.of(map("node", "disk", "name", "pull"))));
        Qemu.ioNbd(s.nbdUri("guest"), "write -P 0xc1 64k 64k", "write -P 0xc2 5M 1M", "write -P 0xc3 3M 4k");

        Qemu.Result map = Qemu.run("nbdinfo", "--map=qemu:dirty-bitmap:pull", "--json", s.nbdUri("fleece")).ok();
        String socket = s.nbdUri("fleece").substring(s.nbdUri("fleece").indexOf("socket=") + "socket=".length());
        Path inc = d.resolve("inc.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", full.toString(), "-F", "qcow2", inc.toString());
        long dirtyBytes = 0;
        int n = 0;
        for (JsonNode extent : Qemu.JSON.readTree(map.out())) {
            if ((extent.get("type").asInt() & 1) == 0) {
                continue; // clean since the last backup
            }
            long off = extent.get("offset").asLong();
            long len = extent.get("length").asLong();
            Path piece = d.resolve("piece" + n++);
            Qemu.img("convert", "--image-opts", "-O", "raw", "driver=raw,offset=" + off + ",size=" + len
                    + ",file.driver=nbd,file.export=fleece,file.server.type=unix,file.server.path=" + socket, piece.toString());
            Qemu.io(inc, "qcow2", "write -s " + piece + " " + off + " " + len);
            dirtyBytes += len;
        }
        assertThat(dirtyBytes).as("the bitmap's dirty extents: 1 + 4 + 16 + 1 granules").isEqualTo(22 * 65536L);
        s.qmp.ok("block-export-del", map("id", "fleece"));
        s.qmp.ok("block-export-del", map("id", "guest"));
        s.quit();
        Qemu.assertClean(inc);
        assertThat(Qemu.identical(inc, "qcow2", point, "raw")).as("full + pulled extents = the fleecing point").isTrue();
        assertThat(Qemu.identical(disk, "qcow2", point, "raw")).as("the guest wrote after it").isFalse();
    }

    /** The disk's contents now, read through a temporary read-only export. */
    private static Path pointInTimeOfFile(StorageDaemon s, Path d) throws Exception {
        s.qmp.ok("block-export-add", exportOf("now", "disk", false));
        Path p = pointInTime(s, "now", d.resolve("point.raw"));
        s.qmp.ok("block-export-del", map("id", "now"));
        s.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> "now".equals(e.path("id").asString(null)));
        return p;
    }

    /**
     * {@code compress: true}: the target's clusters are stored compressed, as QEMU's are, and the
     * target is still the disk at the backup's start; a raw target is refused with QEMU's words.
     */
    @Test
    void aCompressedBackupIsCompressedAndExact() throws Exception {
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path disk = disk(d, "disk");
            Path before = copyOf(disk);
            Path target = image(d, "target", "32M");
            Path raw = d.resolve("raw.img");
            Qemu.img("create", "-f", "raw", raw.toString(), "32M");
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(node("tgt", target));
            opts.addAll(List.of("--blockdev", "driver=file,node-name=rawt,filename=" + raw,
                    "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            JsonNode refused = s.qmp.error("blockdev-backup", map("device", "disk", "target", "rawt", "sync", "full",
                    "compress", true));
            assertThat(refused.get("desc").asString()).isEqualTo("Compression is not supported for this drive ");
            s.qmp.ok("blockdev-backup", map("job-id", "c", "device", "disk", "target", "tgt", "sync", "full",
                    "compress", true, "speed", 16 * MIB));
            Qemu.ioNbd(s.nbdUri("disk"), "write -P 0xd1 0 64k", "write -P 0xd2 5M 1M");
            assertThat(completed(s, "c").has("error")).isFalse();
            s.quit();
            Qemu.assertClean(target);
            assertThat(Qemu.identical(target, "qcow2", before, "qcow2")).as("%s", kind).isTrue();
            JsonNode check = Qemu.JSON.readTree(Qemu.check(target).out());
            // The disk's 8 MiB + 4 MiB + 64 KiB of one repeated byte: every data cluster compresses.
            assertThat(check.get("compressed-clusters").asLong()).as("%s", kind).isEqualTo(193);
        }
    }

    /**
     * The target's error policy: a write that fails once ({@code once}) under {@code stop} pauses
     * the job with its io-status, and {@code job-resume} retries it; a full target ({@code ENOSPC})
     * under the default {@code report} fails the backup, and the disk and its writers go on.
     */
    @Test
    void targetErrorsStopOrFailTheBackupNeverTheDisk() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = disk(d, "disk");
        Path before = copyOf(disk);
        List<String> opts = new ArrayList<>(node("disk", disk));
        opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        Path t1 = image(d, "t1", "32M");
        s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "t1", "file", map("driver", "blkdebug",
                "inject-error", List.of(map("event", "pwritev", "errno", 5, "once", true)),
                "image", map("driver", "file", "filename", t1.toString()))));
        s.qmp.ok("blockdev-backup", map("job-id", "st", "device", "disk", "target", "t1", "sync", "full",
                "on-target-error", "stop"));
        JsonNode error = s.qmp.awaitEvent("BLOCK_JOB_ERROR", e -> true).get("data");
        assertThat(error.toString()).isEqualTo("{\"device\":\"st\",\"operation\":\"write\",\"action\":\"stop\"}");
        s.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> "paused".equals(e.path("status").asString(null)));
        assertThat(s.qmp.ok("query-block-jobs").get(0).get("io-status").asString()).isEqualTo("failed");
        s.qmp.ok("job-resume", map("id", "st"));
        assertThat(completed(s, "st").has("error")).isFalse();
        s.qmp.ok("blockdev-del", map("node-name", "t1"));
        assertThat(Qemu.identical(t1, "qcow2", before, "qcow2")).as("the retried write landed").isTrue();

        Path t2 = image(d, "t2", "32M");
        s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "t2", "file", map("driver", "blkdebug",
                "inject-error", List.of(map("event", "pwritev", "errno", 28)),
                "image", map("driver", "file", "filename", t2.toString()))));
        s.qmp.ok("blockdev-backup", map("job-id", "full", "device", "disk", "target", "t2", "sync", "full"));
        assertThat(completed(s, "full").get("error").asString()).isEqualTo("No space left on device");
        Qemu.ioNbd(s.nbdUri("disk"), "write -P 0xe1 0 64k"); // the filter is gone: writes pass again
        s.quit();
        Qemu.assertClean(disk);
        Qemu.assertClean(t2);
        Qemu.io(disk, "qcow2", "read -P 0xe1 0 64k", "read -P 0x11 64k 8128k", "read -P 0x22 12M 4M");
    }

    /** {@code discard-source} (QEMU 9.1): what was copied is discarded from the source. */
    @Test
    void discardSourceDiscardsWhatWasCopied() throws Exception {
        Path d = dirFor(Kind.BLOCKJOBD);
        Path disk = d.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "32M");
        Qemu.io(disk, "qcow2", "write -P 0x11 0 8M");
        Path before = copyOf(disk);
        Path target = image(d, "target", "32M");
        List<String> opts = new ArrayList<>(List.of("--blockdev", "driver=file,node-name=f-disk,filename=" + disk,
                "--blockdev", "driver=qcow2,node-name=disk,file=f-disk,discard=unmap"));
        opts.addAll(node("tgt", target));
        StorageDaemon s = start(Kind.BLOCKJOBD, d, opts);
        s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full",
                "discard-source", true));
        assertThat(completed(s, "b").has("error")).isFalse();
        s.quit();
        assertThat(Qemu.identical(target, "qcow2", before, "qcow2")).isTrue();
        long allocated = 0;
        for (JsonNode m : Qemu.map(disk)) {
            if (m.get("data").asBoolean()) {
                allocated += m.get("length").asLong();
            }
        }
        assertThat(allocated).as("the source's data was discarded once copied").isZero();
        Qemu.assertClean(disk);
    }

    /**
     * {@code drive-backup}: the target file is created as QEMU creates it (alone for {@code full},
     * over the device's backing file for {@code top}) or opened ({@code mode: existing}); each
     * restores to the disk at the backup's start, and the headers are QEMU's.
     */
    @Test
    void driveBackupCreatesItsTargetAsQemuDoes() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path base = disk(d, "base");
            Path top = d.resolve("top.qcow2");
            Qemu.img("create", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
            Qemu.io(top, "qcow2", "write -P 0x99 1M 2M", "write -z 12M 64k");
            Path before = copyOf(top);
            Path existing = image(d, "existing", "32M");
            List<String> opts = new ArrayList<>(List.of(
                    "--blockdev", "driver=file,node-name=f-base,filename=" + base,
                    "--blockdev", "driver=qcow2,node-name=base,file=f-base,read-only=on",
                    "--blockdev", "driver=file,node-name=f-top,filename=" + top,
                    "--blockdev", "driver=qcow2,node-name=top,file=f-top,backing=base",
                    "--export", "type=nbd,id=e,node-name=top,name=top,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            List<String> out = new ArrayList<>();
            Path full = d.resolve("full.qcow2");
            Path topOnly = d.resolve("top-only.qcow2");
            s.qmp.ok("drive-backup", map("job-id", "df", "device", "top", "target", full.toString(), "sync", "full"));
            assertThat(completed(s, "df").has("error")).isFalse();
            s.qmp.ok("transaction", map("actions", List.of(map("type", "drive-backup", "data", map("job-id", "dt",
                    "device", "top", "target", topOnly.toString(), "sync", "top", "speed", 4 * MIB)))));
            Qemu.ioNbd(s.nbdUri("top"), "write -P 0x9a 1M 64k", "write -P 0x9b 20M 64k"); // during the copy
            assertThat(completed(s, "dt").has("error")).isFalse();
            s.qmp.ok("drive-backup", map("job-id", "dx", "device", "top", "target", existing.toString(),
                    "mode", "existing", "format", "qcow2", "sync", "full"));
            assertThat(completed(s, "dx").has("error")).isFalse();
            out.add(s.qmp.error("drive-backup", map("device", "top", "target", d.resolve("x.qcow2").toString(),
                    "format", "vmdk-ish", "sync", "full")).get("desc").asString().replace(d.toString(), "DIR"));
            s.quit();
            for (Path p : List.of(full, topOnly, existing)) {
                Qemu.assertClean(p);
                JsonNode info = Qemu.info(p);
                out.add(p.getFileName() + ": " + info.get("format").asString() + " " + info.get("virtual-size").asLong()
                        + " backing " + info.path("backing-filename").asString("-").replace(d.toString(), "DIR")
                        + " " + info.path("backing-filename-format").asString("-"));
            }
            assertThat(Qemu.identical(full, "qcow2", before, "qcow2")).as("%s full", kind).isTrue();
            assertThat(Qemu.identical(topOnly, "qcow2", before, "qcow2")).as("%s top over base", kind).isTrue();
            seen.put(kind, out);
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU));
        assertThat(seen.get(Kind.BLOCKJOBD)).contains("top-only.qcow2: qcow2 33554432 backing DIR/base.qcow2 qcow2",
                "full.qcow2: qcow2 33554432 backing - -");
    }

    /**
     * A target on a real full file system (an 8 MiB tmpfs, mounted for the test; it needs root,
     * as CI has): the backup fails with ENOSPC on both daemons, the disk is untouched and its
     * writers go on, and the target is readable without corruption.
     */
    @Test
    void aTargetOnAFullFileSystemFailsTheBackupNeverTheDisk() throws Exception {
        Map<Kind, String> errors = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            Path small = Files.createDirectories(d.resolve("small-fs"));
            Qemu.Result mount = Qemu.run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small.toString());
            org.junit.jupiter.api.Assumptions.assumeTrue(mount.exit() == 0, "cannot mount a tmpfs: " + mount.err());
            try {
                Path disk = disk(d, "disk");
                Path before = copyOf(disk);
                Path target = image(small, "target", "32M");
                List<String> opts = new ArrayList<>(node("disk", disk));
                opts.addAll(node("tgt", target));
                opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
                StorageDaemon s = start(kind, d, opts);
                s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full"));
                errors.put(kind, completed(s, "b").path("error").asString("none"));
                Qemu.ioNbd(s.nbdUri("disk"), "write -P 0xf1 0 64k");
                s.quit();
                Qemu.assertClean(disk);
                Qemu.io(disk, "qcow2", "read -P 0xf1 0 64k", "read -P 0x11 64k 8128k");
                Qemu.assertNoCorruption(target);
            } finally {
                Qemu.run("umount", small.toString());
            }
        }
        assertThat(errors.get(Kind.BLOCKJOBD)).isEqualTo(errors.get(Kind.QEMU)).isEqualTo("No space left on device");
    }

    /**
     * {@code cbw-timeout} (QEMU 7.1): a copy-before-write slower than the timeout (the target
     * throttled to 2 MiB/s, a 4 MiB guest write) breaks the snapshot under {@code break-snapshot};
     * the guest's write succeeds, and snapshot reads fail from then on, on both daemons.
     */
    @Test
    void aCopyBeforeWriteSlowerThanCbwTimeoutBreaksTheSnapshot() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = dirFor(kind);
            List<String> opts = new ArrayList<>(node("disk", disk(d, "disk")));
            opts.addAll(node("scratch", image(d, "scratch", "32M")));
            opts.addAll(List.of("--object", "throttle-group,id=tg,limits.bps-write=" + 2 * MIB,
                    "--blockdev", "driver=throttle,node-name=slow,throttle-group=tg,file=scratch"));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-add", map("driver", "copy-before-write", "node-name", "cbw", "file", "disk",
                    "target", "slow", "on-cbw-error", "break-snapshot", "cbw-timeout", 1));
            s.qmp.ok("blockdev-add", map("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
            s.qmp.ok("block-export-add", exportOf("guest", "cbw", true));
            s.qmp.ok("block-export-add", exportOf("fleece", "acc", false));
            Qemu.Result before = Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 6M 64k", s.nbdUri("fleece"));
            Qemu.Result w = Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0xa2 0 4M", s.nbdUri("guest"));
            Qemu.Result after = Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 6M 64k", s.nbdUri("fleece"));
            seen.put(kind, List.of("snapshot read before: " + (before.out().contains("failed") ? "failed" : "ok"),
                    "guest write: " + (w.out().contains("failed") ? "failed" : "ok"),
                    "snapshot read after: " + (after.out().contains("failed") ? "failed" : "ok")));
            s.close(); // the timed-out copy may still be writing to the slow target
            running.remove(s);
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU))
                .containsExactly("snapshot read before: ok", "guest write: ok", "snapshot read after: failed");
    }
}
