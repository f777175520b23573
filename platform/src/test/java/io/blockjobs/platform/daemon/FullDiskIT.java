package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import tools.jackson.databind.JsonNode;

/**
 * Images on a real full file system (an 8 MiB tmpfs mounted for the test: it needs root, as CI
 * has), blockjobd beside qemu-storage-daemon: writes that fail with ENOSPC, through an NBD export
 * or from a job paused on the error and resumed, give back every cluster they took. After a clean
 * stop {@code qemu-img check} finds no leak, also with the file lengthened (so that clusters still
 * counted past its end would count as leaks), and what was acknowledged reads back.
 */
class FullDiskIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    private final List<StorageDaemon> running = new ArrayList<>();
    private final List<Path> mounts = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : running) {
            d.close();
        }
        for (Path m : mounts) {
            Qemu.run("umount", m.toString());
        }
    }

    /** An 8 MiB tmpfs at {@code d/small-fs}; the test is skipped where it cannot be mounted. */
    private Path smallFileSystem(Path d) throws Exception {
        Path small = Files.createDirectories(d.resolve("small-fs"));
        Qemu.Result mount = Qemu.run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small.toString());
        Assumptions.assumeTrue(mount.exit() == 0, "cannot mount a tmpfs: " + mount.err());
        mounts.add(small);
        return small;
    }

    /** Fills the file system of {@code small} with a file {@code fill}, all but {@code free} bytes. */
    private static Path fill(Path small, long free) throws Exception {
        Path filler = small.resolve("fill");
        Qemu.run("dd", "if=/dev/zero", "of=" + filler, "bs=64k"); // ends with ENOSPC
        try (RandomAccessFile f = new RandomAccessFile(filler.toFile(), "rw")) {
            f.setLength(f.length() - free);
        }
        assertThat(small.toFile().getUsableSpace()).as("%s is full", small).isEqualTo(free);
        return filler;
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

    /**
     * {@code qemu-img check} of {@code image} and of a copy lengthened by 64 MiB (in {@code d}):
     * both must find nothing, not even a leak.
     */
    private static void assertNoLeak(Path image, Path d) throws Exception {
        Qemu.assertClean(image);
        Path longer = d.resolve("lengthened-" + image.getFileName());
        Files.copy(image, longer);
        try (RandomAccessFile f = new RandomAccessFile(longer.toFile(), "rw")) {
            f.setLength(f.length() + 64 * MIB);
        }
        Qemu.assertClean(longer);
    }

    /**
     * 21 allocating writes of 4 KiB clusters on a full disk (11 in ranges with no L2 table yet,
     * 10 in a range that has one; a whole cluster or part of one, the rest copied on write) fail
     * with ENOSPC, as on QEMU; once space is freed, new writes succeed and land after what the
     * failed ones took. After a clean stop nothing leaked and every acknowledged write reads back.
     */
    @Test
    void failedWritesOnAFullDiskLeakNoCluster() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            Path small = smallFileSystem(d);
            Path disk = small.resolve("disk.qcow2");
            Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=4k", disk.toString(), "64M");
            Qemu.io(disk, "qcow2", "write -P 0x11 0 1M");
            Path filler = fill(small, 0);
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(List.of("--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
            StorageDaemon s = start(kind, d, opts);
            String uri = s.nbdUri("disk");
            List<String> results = new ArrayList<>();
            for (int i = 0; i < 11; i++) { // L1 ranges of 2 MiB with no table yet
                String w = i % 2 == 0 ? "write -P 0x5a " + (8 * MIB + i * 3 * MIB) + " 4k"
                        : "write -P 0x5b " + (8 * MIB + i * 3 * MIB + 512) + " 512";
                results.add(lastLine(Qemu.run("qemu-io", "-f", "raw", "-c", w, uri)));
            }
            for (int i = 0; i < 10; i++) { // unallocated clusters in the first range, whose table exists
                String w = i % 2 == 0 ? "write -P 0x5c " + (MIB + i * 64 * 1024) + " 4k"
                        : "write -P 0x5d " + (MIB + i * 64 * 1024 + 100) + " 1000";
                results.add(lastLine(Qemu.run("qemu-io", "-f", "raw", "-c", w, uri)));
            }
            seen.put(kind, results);
            Qemu.ioNbd(uri, "read -P 0x11 0 1M"); // acknowledged before the disk filled
            Files.delete(filler);
            Qemu.ioNbd(uri, "write -P 0x22 40M 64k", "write -P 0x23 " + (2 * MIB) + " 4k");
            s.quit();
            assertNoLeak(disk, d);
            Qemu.io(disk, "qcow2", "read -P 0x11 0 1M", "read -P 0 1M 1M", "read -P 0x23 2M 4k",
                    "read -P 0 8M 32M", "read -P 0x22 40M 64k");
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU))
                .hasSize(21).allMatch(r -> r.equals("write failed: No space left on device"));
    }

    /**
     * A backup to a target on a disk that fills (at once, or after a few compressed clusters)
     * under {@code on-target-error=enospc} pauses with io-status {@code nospace}; resumed twice
     * while the disk is still full it pauses again each time; once space is freed it is resumed
     * and completes. The target is the disk, and neither the retries nor the failed writes leaked
     * a cluster of it.
     */
    @ParameterizedTest(name = "compress={0}, {1} KiB free")
    @CsvSource({"false, 0", "true, 40"})
    void aJobPausedOnAFullDiskAndResumedLeaksNoCluster(boolean compress, int freeKib) throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            Path disk = d.resolve("disk.qcow2");
            Qemu.img("create", "-f", "qcow2", disk.toString(), "32M");
            Qemu.io(disk, "qcow2", "write -P 0x31 0 2M", "write -P 0x32 9M 1M", "write -P 0x33 30M 64k");
            Path small = smallFileSystem(d);
            Path target = small.resolve("target.qcow2");
            Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=4k", target.toString(), "32M");
            Path filler = fill(small, freeKib * 1024L);
            List<String> opts = new ArrayList<>(node("disk", disk));
            opts.addAll(node("tgt", target));
            StorageDaemon s = start(kind, d, opts);
            s.qmp.ok("blockdev-backup", map("job-id", "b", "device", "disk", "target", "tgt", "sync", "full",
                    "compress", compress, "on-target-error", "enospc"));
            List<String> events = new ArrayList<>();
            for (int round = 0; round < 3; round++) {
                JsonNode error = s.qmp.awaitEvent("BLOCK_JOB_ERROR", e -> true).get("data");
                events.add(error.toString());
                s.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> "paused".equals(e.path("status").asString(null)));
                events.add("io-status " + s.qmp.ok("query-block-jobs").get(0).get("io-status").asString());
                if (round == 2) {
                    Files.delete(filler);
                }
                s.qmp.ok("job-resume", map("id", "b"));
            }
            JsonNode done = s.qmp.awaitEvent("BLOCK_JOB_COMPLETED", e -> "b".equals(e.path("device").asString(null)),
                    Duration.ofSeconds(120)).get("data");
            events.add("completed, error: " + done.path("error").asString("none"));
            seen.put(kind, events);
            s.quit();
            assertNoLeak(target, d);
            if (kind == Kind.BLOCKJOBD || !compress) {
                assertThat(Qemu.identical(target, "qcow2", disk, "qcow2")).as("%s: the target is the disk", kind).isTrue();
            }
        }
        List<String> ours = seen.get(Kind.BLOCKJOBD);
        List<String> qemu = seen.get(Kind.QEMU);
        assertThat(ours).contains("io-status nospace").endsWith("completed, error: none");
        if (compress) {
            // QEMU 7.2 links a compressed cluster before its data is written
            // (qcow2_co_pwritev_compressed_task): one whose write failed is left pointing at
            // garbage, so its retry fails with EIO and its target reads EIO there. blockjobd
            // writes the data first. The pauses are the same.
            assertThat(ours.subList(0, ours.size() - 1)).isEqualTo(qemu.subList(0, qemu.size() - 1));
        } else {
            assertThat(ours).isEqualTo(qemu);
        }
    }

    private static String lastLine(Qemu.Result r) {
        String[] lines = (r.out() + r.err()).strip().split("\n");
        return lines[lines.length - 1].strip();
    }
}
