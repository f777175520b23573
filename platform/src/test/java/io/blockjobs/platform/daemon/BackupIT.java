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
            Path before = d.resolve("before.qcow2");
            Qemu.img("convert", "-O", "qcow2", disk.toString(), before.toString());
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
        Path before = d.resolve("before.qcow2");
        Qemu.img("convert", "-O", "qcow2", disk.toString(), before.toString());
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
}
