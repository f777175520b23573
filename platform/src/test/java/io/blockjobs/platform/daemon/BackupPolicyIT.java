package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.temporal.ChronoUnit;
import java.time.temporal.IsoFields;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.TreeSet;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * The shipped backup policy ({@code scripts/backup-policy.js}), restore ({@code scripts/restore.js})
 * and the backup store they use, through the real daemon on real qcow2 disks that a client writes
 * through NBD between runs. The policy's clock is its {@code now} argument, so weeks of nightly
 * runs take a minute; every point in time is checked with {@code qemu-img compare} against what
 * the client read through the export at that instant.
 */
class BackupPolicyIT {
    private static final long MIB = 1 << 20;
    private static final long DISK = 8 * MIB;
    private static final Instant DAY0 = Instant.parse("2026-11-02T02:00:00Z"); // a Monday

    @TempDir
    Path dir;
    Path store;
    final Map<String, Path> disks = new LinkedHashMap<>();
    DaemonProcess daemon;
    QmpClient qmp;
    List<String> extra = List.of();

    @AfterEach
    void stop() throws Exception {
        stopDaemon();
        for (Path p : disks.values()) {
            Qemu.assertNoCorruption(p);
        }
    }

    // ---- the daemon and its disks ---------------------------------------------------------------

    private Path disk(String node) {
        Path p = dir.resolve(node + ".qcow2");
        Qemu.img("create", "-f", "qcow2", p.toString(), String.valueOf(DISK));
        disks.put(node, p);
        return p;
    }

    private void startDaemon() throws Exception {
        List<String> args = new ArrayList<>();
        for (Map.Entry<String, Path> d : disks.entrySet()) {
            args.addAll(List.of("--blockdev", "driver=qcow2,node-name=" + d.getKey() + ",file.driver=file,file.filename="
                    + d.getValue(), "--export", "type=nbd,id=e-" + d.getKey() + ",node-name=" + d.getKey() + ",name="
                    + d.getKey() + ",writable=on"));
        }
        args.addAll(List.of("--backup-dir", store.toString()));
        args.addAll(extra);
        daemon = DaemonProcess.startWithMonitor(dir, args);
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    private void stopDaemon() throws Exception {
        if (qmp != null) {
            qmp.close();
            qmp = null;
        }
        if (daemon != null) {
            daemon.close();
            daemon = null;
        }
    }

    /** The blockjobs client, with --socket to the daemon. */
    private Qemu.Result client(String... args) {
        List<String> cmd = new ArrayList<>(List.of(DaemonProcess.blockjobd().resolveSibling("blockjobs").toString(),
                "--socket", daemon.qmpSocket.toString()));
        cmd.addAll(List.of(args));
        return Qemu.run(cmd.toArray(String[]::new));
    }

    /** A client's writes through the disk's NBD export: a few patterns at seeded offsets. */
    private void clientWrites(String node, long seed, int count) {
        SplittableRandom r = new SplittableRandom(seed);
        List<String> cmds = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            long off = r.nextLong(DISK / (64 * 1024) - 4) * 64 * 1024; // room for the longest write
            cmds.add("write -P " + (1 + r.nextInt(254)) + " " + off + " " + (64 * 1024 * (1 + r.nextInt(4))));
        }
        Qemu.ioNbd(daemon.nbdUri(node), cmds.toArray(String[]::new));
    }

    /** The disk as a client reads it through the export now. */
    private Path readDisk(String node, String name) {
        Path raw = dir.resolve(name + ".raw");
        Qemu.img("convert", "-f", "raw", "-O", "raw", daemon.nbdUri(node), raw.toString());
        return raw;
    }

    /** Runs a shipped workflow to its end; returns WORKFLOW_FINISHED's data. */
    private JsonNode run(String script, Map<String, Object> args) throws Exception {
        String id = qmp.ok("workflow-run", map("script", script, "args", args)).get("id").asString();
        return qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id),
                java.time.Duration.ofMinutes(3)).get("data");
    }

    private JsonNode backup(Map<String, Object> args) throws Exception {
        JsonNode end = run("backup-policy.js", args);
        assertThat(end.get("state").asString()).as("backup-policy.js %s: %s", args, end).isEqualTo("completed");
        return end.get("result");
    }

    private static String at(int day) {
        return DAY0.plus(day, ChronoUnit.DAYS).toString();
    }

    private JsonNode bitmaps(String node) throws Exception {
        for (JsonNode n : qmp.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(node)) {
                return n.path("dirty-bitmaps");
            }
        }
        throw new AssertionError("no node " + node);
    }

    private JsonNode bitmap(String node, String name) throws Exception {
        for (JsonNode b : bitmaps(node)) {
            if (b.get("name").asString().equals(name)) {
                return b;
            }
        }
        return null;
    }

    private Set<String> storeImages() throws Exception {
        Set<String> names = new TreeSet<>();
        for (JsonNode f : qmp.ok("x-backup-store-list").get("files")) {
            if (!f.get("type").asString().equals("manifest")) {
                names.add(f.get("name").asString());
            }
        }
        return names;
    }

    private static String only(JsonNode result, String disk, String field) {
        for (JsonNode b : result.get("backups")) {
            if (b.get("disk").asString().equals(disk)) {
                return b.get(field).isNull() ? null : b.get(field).asString();
            }
        }
        throw new AssertionError("no backup of " + disk + " in " + result);
    }

    // ---- weeks of nightly backups ---------------------------------------------------------------

    /**
     * Three weeks of nightly runs ({@code mode=auto}, a new chain every ISO week, keep-daily=3,
     * keep-weekly=1) on two disks, the second added on the fourth night, with client writes
     * between runs: the modes are as the rules say (a full each Monday and for the new disk, an
     * incremental otherwise), every kept point in time reads exactly as the disk did, the files
     * left are exactly those PBS's rules keep plus what they build on, and restore.js rebuilds
     * kept points into standalone images.
     */
    @Test
    void threeWeeksOfNightlyBackupsKeepExactlyWhatTheRulesSayAndEveryPointRestores() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        disk("disk1");
        startDaemon();
        int days = 21;
        Map<String, Map<String, Path>> truth = new HashMap<>(); // disk -> backup id -> the disk at that instant
        Map<String, Map<String, String>> parents = new HashMap<>();
        Map<String, Map<String, String>> files = new HashMap<>();
        for (int day = 0; day < days; day++) {
            List<String> today = day < 3 ? List.of("disk0") : List.of("disk0", "disk1");
            for (String d : today) {
                clientWrites(d, day * 31L + d.hashCode(), 3);
            }
            Map<String, Path> before = new HashMap<>();
            for (String d : today) {
                before.put(d, readDisk(d, d + "-day" + day));
            }
            JsonNode result = backup(map("disks", String.join(",", today), "mode", "auto", "fullEvery", "week",
                    "keep-daily", "3", "keep-weekly", "1", "now", at(day)));
            for (String d : today) {
                String mode = only(result, d, "mode");
                boolean monday = day % 7 == 0;
                boolean first = d.equals("disk1") && day == 3;
                assertThat(mode).as("%s on day %d", d, day).isEqualTo(monday || first ? "full" : "inc");
                if (first) {
                    assertThat(only(result, d, "reason")).isEqualTo("no chain yet");
                }
                String id = only(result, d, "id");
                truth.computeIfAbsent(d, k -> new HashMap<>()).put(id, before.get(d));
                files.computeIfAbsent(d, k -> new HashMap<>()).put(id, only(result, d, "file"));
            }
            assertThat(only(result, "disk0", "id")).as("one instant for all disks").isEqualTo(
                    only(result, today.get(today.size() - 1), "id"));
        }
        // What each backup builds on, from the manifests the policy wrote.
        for (JsonNode f : qmp.ok("x-backup-store-list").get("files")) {
            if (f.get("type").asString().equals("manifest")) {
                JsonNode m = Qemu.JSON.readTree(qmp.ok("x-backup-store-read", map("name", f.get("name").asString()))
                        .get("data").asString());
                for (JsonNode b : m.get("backups")) {
                    parents.computeIfAbsent(m.get("disk").asString(), k -> new HashMap<>())
                            .put(b.get("id").asString(), b.get("parent").isNull() ? null : b.get("parent").asString());
                }
            }
        }
        Set<String> expectedFiles = new TreeSet<>();
        for (String d : disks.keySet()) {
            Set<String> keep = pbsKeepDailyWeekly(truth.get(d).keySet(), 3, 1);
            // ...and whatever a kept backup builds on, down to its chain's full
            for (String id : new ArrayList<>(keep)) {
                for (String up = parents.get(d).get(id); up != null; up = parents.get(d).get(up)) {
                    keep.add(up);
                }
            }
            assertThat(parents.get(d).keySet()).as("%s: the manifests list exactly the kept backups", d)
                    .containsExactlyInAnyOrderElementsOf(keep);
            for (String id : keep) {
                expectedFiles.add(files.get(d).get(id));
            }
        }
        assertThat(storeImages()).as("the images left in the store").isEqualTo(expectedFiles);
        assertThat(expectedFiles.size()).as("retention removed a whole week").isLessThan(days + days - 3);
        stopDaemon(); // qemu-img may open the disks now

        for (String d : disks.keySet()) {
            for (String id : parents.get(d).keySet()) {
                Path file = store.resolve(files.get(d).get(id));
                Qemu.assertClean(file);
                assertThat(Qemu.identical(truth.get(d).get(id), "raw", file, "qcow2"))
                        .as("%s at %s reads as the disk did then", d, id).isTrue();
            }
        }

        // restore.js: the oldest and the newest kept point of disk0, into new standalone images
        startDaemon();
        List<String> kept = new ArrayList<>(new TreeSet<>(parents.get("disk0").keySet()));
        for (String id : List.of(kept.get(0), kept.get(kept.size() - 1))) {
            Path target = dir.resolve("restored-" + id + ".qcow2");
            JsonNode end = run("restore.js", map("disk", "disk0", "backup", id, "target", target.toString()));
            assertThat(end.get("state").asString()).as("%s", end).isEqualTo("completed");
            assertThat(Qemu.info(target).has("backing-filename")).isFalse();
            Qemu.assertClean(target);
            assertThat(Qemu.identical(truth.get("disk0").get(id), "raw", target, "qcow2")).as("restored %s", id).isTrue();
        }
        // ...and the same through the client, as an operator would
        String newest = kept.get(kept.size() - 1);
        Path viaClient = dir.resolve("restored-by-client.qcow2");
        Qemu.Result restored = client("restore", "--disk", "disk0", "--backup", newest, "--target", viaClient.toString());
        assertThat(restored.exit()).as("%s%n%s", restored.out(), restored.err()).isZero();
        assertThat(restored.out()).contains("restored disk0 as of");
        assertThat(Qemu.identical(truth.get("disk0").get(newest), "raw", viaClient, "qcow2")).isTrue();
        JsonNode refused = run("restore.js", map("disk", "disk0", "backup", kept.get(0),
                "target", dir.resolve("restored-" + kept.get(0) + ".qcow2").toString()));
        assertThat(refused.at("/error/desc").asString()).contains("already exists");
    }

    /**
     * A live restore: the restored disk is served over NBD at once, reading as the backup's point
     * in time while block-stream is still pulling its data in; afterwards the image stands alone.
     */
    @Test
    void aLiveRestoreServesThePointInTimeWhileItStreamsIn() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        startDaemon();
        clientWrites("disk0", 7, 6);
        backup(map("disks", "disk0", "now", at(0)));
        clientWrites("disk0", 8, 6);
        Path then = readDisk("disk0", "then");
        JsonNode inc = backup(map("disks", "disk0", "now", at(1)));
        clientWrites("disk0", 9, 6); // the disk moves on; the restore must not see it

        Path target = dir.resolve("live.qcow2");
        String wf = qmp.ok("workflow-run", map("script", "restore.js", "args", map("disk", "disk0",
                "backup", only(inc, "disk0", "id"), "target", target.toString(), "export", "restored", "live", "true",
                "speed", String.valueOf(MIB)))).get("id").asString();
        qmp.awaitEvent("WORKFLOW_LOG", d -> d.get("id").asString().equals(wf)
                && d.get("message").asString().contains("is exported as restored"));
        Path during = dir.resolve("during.raw");
        Qemu.img("convert", "-f", "raw", "-O", "raw", daemon.nbdUri("restored"), during.toString());
        JsonNode streaming = null;
        for (JsonNode j : qmp.ok("query-block-jobs")) {
            streaming = j;
        }
        assertThat(streaming).as("the stream was still running while the export was read").isNotNull();
        assertThat(Qemu.identical(then, "raw", during, "raw")).as("served as of the backup while streaming").isTrue();
        JsonNode end = qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(wf),
                java.time.Duration.ofMinutes(2)).get("data");
        assertThat(end.get("state").asString()).as("%s", end).isEqualTo("completed");
        assertThat(end.at("/result/live").asBoolean()).isTrue();
        qmp.ok("block-export-del", map("id", "restored"));
        stopDaemon();
        assertThat(Qemu.info(target).has("backing-filename")).as("standalone after the stream").isFalse();
        assertThat(Qemu.identical(then, "raw", target, "qcow2")).isTrue();
        Qemu.assertClean(target);
    }

    /**
     * PBS's keep-daily then keep-weekly, written here from its documentation (UTC, newest first,
     * periods already covered skipped, N periods each), independently of the script's code.
     */
    private static Set<String> pbsKeepDailyWeekly(Set<String> ids, int daily, int weekly) {
        TreeMap<Instant, String> byTime = new TreeMap<>();
        for (String id : ids) {
            byTime.put(Instant.from(java.time.format.DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmssX")
                    .parse(id)), id);
        }
        Map<String, String> mark = new HashMap<>();
        List<java.util.function.Function<ZonedDateTime, String>> keys = List.of(
                t -> t.toLocalDate().toString(),
                t -> t.get(IsoFields.WEEK_BASED_YEAR) + "-W" + t.get(IsoFields.WEEK_OF_WEEK_BASED_YEAR));
        int[] counts = {daily, weekly};
        for (int o = 0; o < 2; o++) {
            var key = keys.get(o);
            Set<String> covered = new HashSet<>();
            for (var e : byTime.descendingMap().entrySet()) {
                if ("keep".equals(mark.get(e.getValue()))) {
                    covered.add(key.apply(e.getKey().atZone(ZoneOffset.UTC)));
                }
            }
            Set<String> chosen = new HashSet<>();
            for (var e : byTime.descendingMap().entrySet()) {
                if (mark.containsKey(e.getValue())) {
                    continue;
                }
                String k = key.apply(e.getKey().atZone(ZoneOffset.UTC));
                if (covered.contains(k)) {
                    continue;
                }
                if (chosen.add(k)) {
                    if (chosen.size() > counts[o]) {
                        break;
                    }
                    mark.put(e.getValue(), "keep");
                } else {
                    mark.put(e.getValue(), "remove");
                }
            }
        }
        Set<String> keep = new HashSet<>();
        mark.forEach((id, m) -> {
            if (m.equals("keep")) {
                keep.add(id);
            }
        });
        return keep;
    }

    // ---- faults ---------------------------------------------------------------------------------

    /**
     * The daemon killed in the middle of an incremental: the checkpoint it loaded from the image
     * is inconsistent after the crash, so the next run says so and takes a full backup, after
     * removing the partial file the killed run left; the new full reads as the disk.
     */
    @Test
    void aKilledBackupIsCleanedUpAndTheNextRunFallsBackToAFullAndSaysWhy() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        startDaemon();
        clientWrites("disk0", 1, 4);
        assertThat(only(backup(map("disks", "disk0", "now", at(0))), "disk0", "mode")).isEqualTo("full");
        stopDaemon();
        startDaemon(); // the checkpoint is now stored in the image and loaded from it
        Qemu.ioNbd(daemon.nbdUri("disk0"), "write -P 0x5a 0 4M");
        qmp.ok("workflow-run", map("script", "backup-policy.js", "args",
                map("disks", "disk0", "now", at(1), "speed", "131072")));
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("id").asString().equals("bj-backup-disk0")
                && d.get("status").asString().equals("running"));
        assertThat(storeImages()).anyMatch(n -> n.endsWith(".inc.qcow2"));
        daemon.killHard();
        qmp.close();
        qmp = null;
        daemon = null;
        Qemu.assertNoCorruption(disks.get("disk0"));

        startDaemon();
        assertThat(bitmap("disk0", "bj-" + at(0).replaceAll("[-:]", ""))).isNotNull();
        Path now = readDisk("disk0", "after-kill");
        JsonNode result = backup(map("disks", "disk0", "now", at(2)));
        assertThat(only(result, "disk0", "mode")).isEqualTo("full");
        assertThat(only(result, "disk0", "reason")).contains("inconsistent");
        assertThat(storeImages()).as("the partial incremental is gone").noneMatch(n -> n.endsWith(".inc.qcow2"));
        String file = only(result, "disk0", "file");
        stopDaemon();
        assertThat(Qemu.identical(now, "raw", store.resolve(file), "qcow2")).isTrue();
        Qemu.assertClean(store.resolve(file));
    }

    /**
     * A backup file deleted by hand breaks its chain: {@code blockjobs backups} shows it, the chain
     * check catches it, and a full follows.
     */
    @Test
    void aBackupDeletedByHandIsCaughtByTheChainCheck() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        startDaemon();
        clientWrites("disk0", 2, 4);
        JsonNode full = backup(map("disks", "disk0", "now", at(0)));
        JsonNode run = null;
        for (JsonNode w : qmp.ok("query-workflows")) {
            run = w;
        }
        assertThat(run.get("jobs").toString()).as("the transaction's job is the run's, for run's progress bars")
                .contains("\"bj-backup-disk0\"");
        clientWrites("disk0", 3, 2);
        JsonNode inc = backup(map("disks", "disk0", "now", at(1)));
        assertThat(only(inc, "disk0", "mode")).isEqualTo("inc");
        Qemu.Result listed = client("--json", "backups");
        assertThat(listed.exit()).as(listed.err()).isZero();
        JsonNode chains = Qemu.JSON.readTree(listed.out());
        assertThat(chains).hasSize(1);
        assertThat(chains.get(0).get("complete").asBoolean()).isTrue();
        assertThat(chains.get(0).get("backups").findValuesAsString("mode")).containsExactly("full", "inc");
        assertThat(chains.get(0).get("backups").findValuesAsString("id")).containsExactly(
                only(full, "disk0", "id"), only(inc, "disk0", "id"));

        Files.delete(store.resolve(only(inc, "disk0", "file")));
        Qemu.Result broken = client("backups", store.toString()); // the folder itself, as a table
        assertThat(broken.exit()).as("an incomplete chain").isEqualTo(1);
        assertThat(broken.out()).contains("DISK").contains(only(full, "disk0", "id"))
                .contains("no: " + only(inc, "disk0", "file") + ": missing");
        clientWrites("disk0", 4, 2);
        Path now = readDisk("disk0", "now");
        JsonNode next = backup(map("disks", "disk0", "mode", "inc", "now", at(2)));
        assertThat(only(next, "disk0", "mode")).isEqualTo("full");
        assertThat(only(next, "disk0", "reason")).contains(only(inc, "disk0", "file")).contains("missing from the store");
        String file = only(next, "disk0", "file");
        stopDaemon();
        assertThat(Qemu.identical(now, "raw", store.resolve(file), "qcow2")).isTrue();
    }

    /**
     * verify.js re-reads every backup: with the policy's {@code verify} all is well; after one
     * byte of the full backup's data is changed on disk, the full fails its SHA-256 check and the
     * incremental over it is reported as building on a failed backup.
     */
    @Test
    void verifyCatchesABackupChangedOnDiskAndWhatBuildsOnIt() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        startDaemon();
        clientWrites("disk0", 5, 4);
        JsonNode full = backup(map("disks", "disk0", "now", at(0), "verify", "true"));
        assertThat(full.at("/verified/0/ok").asBoolean()).isTrue();
        clientWrites("disk0", 6, 2);
        JsonNode inc = backup(map("disks", "disk0", "now", at(1), "verify", "true"));
        assertThat(inc.at("/verified/0/ok").asBoolean()).isTrue();

        Path fullFile = store.resolve(only(full, "disk0", "file"));
        try (var c = java.nio.channels.FileChannel.open(fullFile, java.nio.file.StandardOpenOption.WRITE,
                java.nio.file.StandardOpenOption.READ)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(1);
            long at = c.size() - 4096; // data, not metadata: the image still opens
            c.read(b, at);
            b.put(0, (byte) (b.get(0) ^ 0xff)).rewind();
            c.write(b, at);
        }
        JsonNode end = run("verify.js", map("disk", "disk0"));
        assertThat(end.get("state").asString()).isEqualTo("failed");
        String desc = end.at("/error/desc").asString();
        assertThat(desc).contains("2 backup(s) failed verification")
                .contains(only(full, "disk0", "file") + " (SHA-256 ")
                .contains(only(inc, "disk0", "file") + " (it builds on backup " + only(full, "disk0", "id") + ", which failed)");
    }

    /**
     * The backup folder full (a small tmpfs): the run fails with the file system's error, leaves no
     * file and the checkpoint where it was (the older backups untouched); with room again the next
     * incremental captures everything since the last good backup.
     */
    @Test
    void aFullBackupFolderFailsTheRunAndLosesNothing() throws Exception {
        store = dir.resolve("small");
        Files.createDirectories(store);
        Qemu.Result mount = Qemu.run("mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", store.toString());
        Assumptions.assumeTrue(mount.exit() == 0, "cannot mount a tmpfs: " + mount.err());
        try {
            disk("disk0");
            startDaemon();
            Qemu.ioNbd(daemon.nbdUri("disk0"), "write -P 0x11 0 2M");
            JsonNode full = backup(map("disks", "disk0", "now", at(0)));
            String checkpoint = "bj-" + at(0).replaceAll("[-:]", "");
            Set<String> before = storeImages();
            String manifest = qmp.ok("x-backup-store-read", map("name", "disk0/" + only(full, "disk0", "id")
                    + "/manifest.json")).get("data").asString();

            Qemu.ioNbd(daemon.nbdUri("disk0"), "write -P 0x22 2M 6M");
            JsonNode failed = run("backup-policy.js", map("disks", "disk0", "now", at(1)));
            assertThat(failed.get("state").asString()).isEqualTo("failed");
            assertThat(failed.at("/error/desc").asString()).contains("backup of disk0 failed").contains("No space left");
            assertThat(storeImages()).isEqualTo(before);
            assertThat(qmp.ok("x-backup-store-read", map("name", "disk0/" + only(full, "disk0", "id")
                    + "/manifest.json")).get("data").asString()).isEqualTo(manifest);
            JsonNode cp = bitmap("disk0", checkpoint);
            assertThat(cp.get("recording").asBoolean()).isTrue();
            assertThat(cp.get("count").asLong()).isGreaterThanOrEqualTo(6 * MIB);
            assertThat(bitmap("disk0", "bj-" + at(1).replaceAll("[-:]", ""))).isNull();

            assertThat(Qemu.run("mount", "-o", "remount,size=64m", store.toString()).exit()).isZero();
            Path now = readDisk("disk0", "now");
            JsonNode inc = backup(map("disks", "disk0", "now", at(2)));
            assertThat(only(inc, "disk0", "mode")).isEqualTo("inc");
            String file = only(inc, "disk0", "file");
            stopDaemon();
            assertThat(Qemu.identical(now, "raw", store.resolve(file), "qcow2")).isTrue();
            Qemu.assertClean(store.resolve(file));
        } finally {
            stopDaemon();
            Qemu.run("umount", store.toString());
        }
    }

    /** dry-run says what it would back up and prune, and changes nothing: no file, no bitmap. */
    @Test
    void aDryRunChangesNothing() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        startDaemon();
        for (int day = 0; day < 3; day++) {
            clientWrites("disk0", day, 2);
            backup(map("disks", "disk0", "now", at(day)));
        }
        Set<String> before = storeImages();
        JsonNode bitmaps = bitmaps("disk0");
        JsonNode dry = backup(map("disks", "disk0", "now", at(3), "mode", "full", "keep-last", "1", "dry-run", "true"));
        assertThat(dry.get("dryRun").asBoolean()).isTrue();
        assertThat(only(dry, "disk0", "mode")).isEqualTo("full");
        assertThat(dry.get("pruned")).hasSize(3); // a new full and keep-last=1: the old chain would go
        assertThat(storeImages()).isEqualTo(before);
        assertThat(bitmaps("disk0")).isEqualTo(bitmaps);
    }

    /**
     * A nightly schedule made over QMP survives a restart when the daemon keeps a schedule file:
     * query-workflow-schedules shows its last run, that run's result and the next run, before and
     * after, and it goes on running.
     */
    @Test
    void aScheduleMadeOverQmpSurvivesARestartWithItsLastResult() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        Path schedules = dir.resolve("schedules.json");
        extra = List.of("--schedule-file", schedules.toString());
        startDaemon();
        qmp.ok("workflow-schedule", map("name", "nightly", "script", "backup-policy.js", "schedule", "*/3 * * * * *",
                "args", map("disks", "disk0", "keep-last", 2)));
        JsonNode first = qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals("nightly-1")).get("data");
        assertThat(first.get("state").asString()).as("%s", first).isEqualTo("completed");
        // Nightly from now on (no run may be going when the daemon stops); the schedule keeps its history.
        qmp.ok("workflow-schedule", map("name", "nightly", "script", "backup-policy.js", "schedule", "0 3 * * *",
                "args", map("disks", "disk0", "keep-last", 2)));
        JsonNode before = qmp.ok("query-workflow-schedules").get(0);
        assertThat(before.get("schedule").asString()).isEqualTo("0 3 * * *");
        String lastRun = before.get("last-run").asString();
        assertThat(lastRun).startsWith("nightly-");
        awaitNotRunning(lastRun);
        before = qmp.ok("query-workflow-schedules").get(0);
        assertThat(before.get("last-result").asString()).isEqualTo("completed");
        stopDaemon();
        assertThat(Files.readString(schedules)).contains("\"nightly\"").contains("backup-policy.js");

        startDaemon();
        JsonNode after = qmp.ok("query-workflow-schedules").get(0);
        assertThat(after.get("name").asString()).isEqualTo("nightly");
        assertThat(after.get("script").asString()).isEqualTo("backup-policy.js");
        assertThat(after.get("next-run").asString()).isEqualTo(before.get("next-run").asString());
        assertThat(after.get("last-run").asString()).isEqualTo(lastRun);
        assertThat(after.get("last-result").asString()).isEqualTo("completed");
        assertThat(after.get("last-started").asString()).isEqualTo(before.get("last-started").asString());
        assertThat(after.get("runs").asLong()).isEqualTo(before.get("runs").asLong());
        // ...then back to every three seconds: the restored schedule runs, and its result shows
        qmp.ok("workflow-schedule", map("name", "nightly", "script", "backup-policy.js", "schedule", "*/3 * * * * *",
                "args", map("disks", "disk0", "keep-last", 2)));
        String nextId = "nightly-" + (after.get("runs").asLong() + 1);
        JsonNode next = qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(nextId)).get("data");
        assertThat(next.get("state").asString()).as("%s", next).isEqualTo("completed");
        JsonNode shown = qmp.ok("query-workflow-schedules").get(0);
        assertThat(shown.get("last-run").asString()).isEqualTo(next.get("id").asString());
        assertThat(shown.get("last-result").asString()).isEqualTo("completed");
        assertThat(shown.has("last-started")).isTrue();
        assertThat(shown.has("next-run")).isTrue();
        qmp.ok("workflow-unschedule", map("name", "nightly"));
        stopDaemon();
        startDaemon();
        assertThat(qmp.ok("query-workflow-schedules")).isEmpty();
    }

    /** Waits for a workflow run to end (it may have ended already). */
    private void awaitNotRunning(String id) throws Exception {
        for (JsonNode w : qmp.ok("query-workflows")) {
            if (w.get("id").asString().equals(id) && w.get("state").asString().equals("running")) {
                qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id));
            }
        }
    }

    // ---- the store's refusals -------------------------------------------------------------------

    @Test
    void theStoreRefusesPathsOutsideItSymlinksOutAndImagesInUse() throws Exception {
        store = dir.resolve("store");
        disk("disk0");
        Path outside = Files.createDirectories(dir.resolve("outside"));
        startDaemon();
        assertThat(qmp.ok("x-query-backup-store").get("dir").asString()).isEqualTo(store.toRealPath().toString());
        assertThat(qmp.error("x-backup-store-create", map("name", "../escape.qcow2", "size", MIB)).get("desc").asString())
                .isEqualTo("../escape.qcow2: '..' would lead outside the backup store " + store.toRealPath());
        assertThat(qmp.error("x-backup-store-create", map("name", "a/../../escape.qcow2", "size", MIB))
                .get("desc").asString()).contains("'..' would lead outside the backup store");
        assertThat(qmp.error("x-backup-store-create", map("name", outside + "/x.qcow2", "size", MIB))
                .get("desc").asString()).contains("absolute paths are refused");
        Files.createSymbolicLink(store.resolve("link"), outside);
        assertThat(qmp.error("x-backup-store-create", map("name", "link/x.qcow2", "size", MIB)).get("desc").asString())
                .isEqualTo("link/x.qcow2: 'link' is a symbolic link, which the backup store does not follow");
        assertThat(qmp.error("x-backup-store-write", map("name", "link/m.json", "data", "{}")).get("desc").asString())
                .contains("symbolic link");
        assertThat(qmp.error("x-backup-store-read", map("name", "../disk0.qcow2")).get("desc").asString())
                .contains("'..' would lead outside");
        try (var s = Files.list(outside)) {
            assertThat(s).as("nothing was written outside the store").isEmpty();
        }

        JsonNode full = qmp.ok("x-backup-store-create", map("name", "d/full.qcow2", "size", DISK));
        qmp.ok("x-backup-store-create", map("name", "d/inc.qcow2", "size", DISK, "backing", "d/full.qcow2"));
        assertThat(qmp.error("x-backup-store-create", map("name", "d/full.qcow2", "size", DISK)).get("desc").asString())
                .contains("already exists");
        assertThat(qmp.error("x-backup-store-delete", map("name", "d/full.qcow2")).get("desc").asString())
                .isEqualTo("d/full.qcow2: is the backing file of 'd/inc.qcow2' in the backup store; delete that image first");
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "b0", "file",
                map("driver", "file", "filename", store.resolve("d/inc.qcow2").toString())));
        assertThat(qmp.error("x-backup-store-delete", map("name", "d/inc.qcow2")).get("desc").asString())
                .isEqualTo("d/inc.qcow2: is in use by node 'b0'; blockdev-del it first");
        JsonNode listing = qmp.ok("x-backup-store-list").get("files");
        assertThat(listing.findValuesAsString("name")).containsExactly("d/full.qcow2", "d/inc.qcow2");
        assertThat(listing.get(1).get("backing").asString()).isEqualTo("d/full.qcow2");
        assertThat(listing.get(1).get("partial").asBoolean()).isTrue();
        qmp.ok("blockdev-del", map("node-name", "b0"));
        JsonNode sealed = qmp.ok("x-backup-store-seal", map("name", "d/inc.qcow2"));
        assertThat(sealed.get("size").asLong()).isEqualTo(Files.size(store.resolve("d/inc.qcow2")));
        assertThat(qmp.ok("x-backup-store-list").get("files").get(1).get("partial").asBoolean()).isFalse();
        qmp.ok("x-backup-store-delete", map("name", "d/inc.qcow2"));
        qmp.ok("x-backup-store-delete", map("name", "d/full.qcow2"));
        assertThat(Files.exists(store.resolve("d"))).as("the empty folder goes too").isFalse();
        assertThat(full.get("filename").asString()).startsWith(store.toRealPath().toString());
        assertThat(qmp.ok("query-qmp-schema").findValuesAsString("name")).contains("x-backup-store-create",
                "x-backup-store-list", "x-backup-store-delete");
    }
}
