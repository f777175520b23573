package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.BlockStats;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.testkit.Qemu;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Allocating writes of several clusters: one run of host clusters, one data write, one write of
 * their L2 entries, and metadata written in whole slices of the file's request alignment (no
 * read-modify-write under {@code cache.direct=on}). Counted on the file node's statistics; the
 * contents checked against a model with {@code qemu-img compare} and {@code qemu-img check}.
 */
class Qcow2AllocatingWriteTest {

    @TempDir
    Path dir;

    private static String cache(boolean direct) {
        return "\"cache\": {\"direct\": " + direct + "}";
    }

    /** {@code top} (qcow2, on file node {@code f}) over {@code base} if given; a writable user of it. */
    private Edge open(DriverGraph g, Path top, Path base, boolean direct) {
        if (base != null) {
            g.add("""
                    {"driver": "qcow2", "node-name": "base", %s, "read-only": true,
                     "file": {"driver": "file", "node-name": "fb", "filename": "%s"}}""".formatted(cache(direct), base));
        }
        g.add("""
                {"driver": "qcow2", "node-name": "top", %s, "backing": %s,
                 "file": {"driver": "file", "node-name": "f", "filename": "%s"}}"""
                .formatted(cache(direct), base == null ? "null" : "\"base\"", top));
        return g.user("top");
    }

    private static ByteBuffer data(int length, int seed) {
        byte[] b = new byte[length];
        new SplittableRandom(seed).nextBytes(b);
        return ByteBuffer.wrap(b);
    }

    /** Requests the file node ran between two snapshots. */
    record Requests(long reads, long writes, long flushes) {
        static Requests between(BlockStats.Snapshot a, BlockStats.Snapshot b) {
            return new Requests(b.rdOperations() - a.rdOperations(), b.wrOperations() - a.wrOperations(),
                    b.flushOperations() - a.flushOperations());
        }
    }

    /**
     * A job's 512 KiB write into an empty layer (64 KiB clusters) costs a few host requests, not
     * one data write and one L2 write per cluster (and refcount writes) as it did: one data write
     * once the L2 table and the pool are there, its L2 entries left in the table cache; the first
     * write adds the table (its zeroes, a flush, the L1 entry) and pool refills (a refcount slice
     * each, not flushed: no writer waits). The flush after them makes the counts durable, writes
     * the table's changed slice once, and flushes.
     *
     * <p>Between the image and its file sits a {@code blkdebug} node with {@code align=4096}, as
     * O_DIRECT's alignment: a metadata write smaller than that would be a read-modify-write
     * there, and its read would show on the file node {@code f}.
     */
    @ParameterizedTest(name = "cache.direct={0}")
    @ValueSource(booleans = {true, false})
    void a512KiBAllocatingWriteIsAFewHostRequests(boolean direct) throws Exception {
        Path image = dir.resolve("empty.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(64L << 20));
        int chunk = 512 << 10;
        List<Requests> perWrite = new ArrayList<>();
        try (DriverGraph g = new DriverGraph()) {
            g.add("""
                    {"driver": "qcow2", "node-name": "top", %s, "backing": null,
                     "file": {"driver": "blkdebug", "node-name": "bd", "align": 4096,
                              "image": {"driver": "file", "node-name": "f", "filename": "%s"}}}"""
                    .formatted(cache(direct), image));
            Edge disk = g.user("top");
            GraphNode f = g.graph.require("f");
            assertThat(g.graph.require("bd").limits().requestAlignment()).isEqualTo(4096);
            assertThat(f.options().cacheDirect()).isEqualTo(direct);
            for (int i = 0; i < 6; i++) {
                BlockStats.Snapshot before = f.stats().snapshot();
                disk.write((long) i * chunk, data(chunk, i));
                perWrite.add(Requests.between(before, f.stats().snapshot()));
            }
            System.out.printf("512 KiB allocating writes, cache.direct=%s: host requests per write %s%n", direct, perWrite);
            Requests first = perWrite.get(0);
            // One read: the refcount block, into memory the first time it is used (no read-modify-write).
            assertThat(first.reads()).as("%s", first).isLessThanOrEqualTo(1);
            assertThat(first.writes()).as("first write, with the L2 table: %s", first).isLessThanOrEqualTo(6);
            assertThat(first.flushes()).as("%s", first).isLessThanOrEqualTo(3);
            for (Requests r : perWrite.subList(1, perWrite.size())) {
                assertThat(r.reads()).as("no read-modify-write of metadata: %s", perWrite).isZero();
                // One data write; a pool refill adds a refcount write, whose flush waits for the table's write.
                assertThat(r.writes()).as("%s", perWrite).isLessThanOrEqualTo(2);
                assertThat(r.flushes()).as("no writer waits for a flush: %s", perWrite).isZero();
            }
            long plain = perWrite.subList(1, perWrite.size()).stream().filter(r -> r.writes() == 1).count();
            assertThat(plain).as("most writes are just their data: %s", perWrite).isGreaterThanOrEqualTo(3);
            BlockStats.Snapshot before = f.stats().snapshot();
            disk.flush();
            Requests flush = Requests.between(before, f.stats().snapshot());
            System.out.printf("then a flush, cache.direct=%s: %s%n", direct, flush);
            assertThat(flush).as("the flush: the refills' counts made durable, the L2 slice of the 48 entries, then the"
                    + " file's flush").isEqualTo(new Requests(0, 1, 2));
        }
        Qemu.assertClean(image);
        byte[] expected = new byte[64 << 20];
        for (int i = 0; i < 6; i++) {
            data(chunk, i).get(0, expected, i * chunk, chunk);
        }
        Path raw = dir.resolve("expected.raw");
        Files.write(raw, expected);
        assertThat(Qemu.identical(image, "qcow2", raw, "raw")).as("qemu-img compare").isTrue();
        // The clusters of each write follow each other on the host: one extent per write at most.
        assertThat(Qemu.map(image).size()).as("qemu-img map: %s", Qemu.map(image)).isLessThanOrEqualTo(3);
    }

    /**
     * A run whose write fails (here its copy-on-write read of the backing file) gives its clusters
     * back: retried writes (on-error=enospc) must not leak a run each. Counted with the file
     * lengthened, so that clusters counted past its end count as leaks too.
     */
    @ParameterizedTest(name = "cache.direct={0}")
    @ValueSource(booleans = {true, false})
    void aFailedRunLeaksNothing(boolean direct) throws Exception {
        long size = 64L << 20;
        Path base = dir.resolve("base.raw");
        Images.createRaw(base, size);
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(size).withBacking(base.toString(), "raw"));
        try (DriverGraph g = new DriverGraph()) {
            g.add("""
                    {"driver": "blkdebug", "node-name": "bb", "read-only": true,
                     "inject-error": [{"event": "none", "iotype": "read", "errno": 5}],
                     "image": {"driver": "file", "filename": "%s", %s}}""".formatted(base, cache(direct)));
            g.add("""
                    {"driver": "qcow2", "node-name": "top", %s, "backing": "bb",
                     "file": {"driver": "file", "node-name": "f", "filename": "%s"}}""".formatted(cache(direct), top));
            Edge disk = g.user("top");
            for (int i = 0; i < 3; i++) { // a partial first cluster: its old contents come from the backing file
                long at = (1L << 20) * i + 4096;
                assertThatThrownBy(() -> disk.write(at, data(512 << 10, 1))).isInstanceOf(IOException.class);
            }
            for (int i = 0; i < 3; i++) { // whole clusters need no read
                disk.write((8L << 20) + (1L << 20) * i, data(512 << 10, 2 + i));
            }
        }
        Path longer = dir.resolve("longer.qcow2");
        Files.copy(top, longer);
        try (var f = new java.io.RandomAccessFile(longer.toFile(), "rw")) {
            f.setLength(f.length() + (1024L << 16));
        }
        Qemu.Result r = Qemu.check(longer);
        assertThat(r.exit()).as("qemu-img check, lengthened: %s", r.out()).isZero();
        Qemu.assertClean(top);
    }

    /**
     * Seeded writes of up to 40 clusters at any offset (partial first and last clusters), write
     * zeroes, discards and copy-on-read writes, over a backing file or none, direct or not: the
     * image reads as the model, {@code qemu-img compare} agrees, {@code qemu-img check} is clean.
     */
    @ParameterizedTest(name = "{0}-byte clusters, backing {1}, direct {2}, seed {3}")
    @CsvSource({
        "65536, true, true, 1", "65536, false, false, 2", "65536, true, false, 3",
        "4096, true, true, 4", "4096, false, true, 5",
        "512, true, true, 6", "512, true, false, 7", "2097152, true, true, 8"})
    void randomAllocatingWritesMatchTheModel(int clusterSize, boolean withBacking, boolean direct, long seed)
            throws Exception {
        SplittableRandom r = new SplittableRandom(seed);
        int size = Math.max(8 << 20, 16 * clusterSize) + 25 * 512; // not a whole number of clusters
        byte[] model = new byte[size];
        Path base = null;
        if (withBacking) {
            base = dir.resolve("base.qcow2");
            Qemu.img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", base.toString(), String.valueOf(size));
            int half = size / 2 & -512;
            int threeQuarters = size / 4 * 3 & -512;
            Qemu.io(base, "qcow2", "write -P 0x5a 0 " + half, "write -P 0xa5 " + threeQuarters + " 65536");
            Arrays.fill(model, 0, half, (byte) 0x5a);
            Arrays.fill(model, threeQuarters, threeQuarters + 65536, (byte) 0xa5);
        }
        Path top = dir.resolve("top.qcow2");
        Qcow2CreateOptions o = Qcow2CreateOptions.of(size).withClusterSize(clusterSize);
        Images.createQcow2(top, withBacking ? o.withBacking(base.toString(), "qcow2") : o);
        try (DriverGraph g = new DriverGraph()) {
            Edge disk = open(g, top, base, direct);
            for (int op = 0; op < 150; op++) {
                int length = 1 + r.nextInt(40 * clusterSize > 4 << 20 ? 4 << 20 : 40 * clusterSize);
                int offset = r.nextBoolean() ? r.nextInt(size / clusterSize) * clusterSize : r.nextInt(size);
                length = Math.min(length, size - offset);
                if (length == 0) {
                    continue;
                }
                int kind = r.nextInt(10);
                if (kind < 6) {
                    ByteBuffer d = data(length, r.nextInt());
                    disk.write(offset, d.duplicate());
                    d.get(0, model, offset, length);
                } else if (kind < 7) {
                    disk.writeZeroes(offset, length, r.nextBoolean());
                    Arrays.fill(model, offset, offset + length, (byte) 0);
                } else if (kind < 8) {
                    disk.discard(offset, length); // reads unchanged or zero: take what it reads now
                    ByteBuffer now = ByteBuffer.allocate(length);
                    disk.read(offset, now);
                    now.get(0, model, offset, length);
                } else {
                    // Copy-on-read: what reads there now, written where the image holds nothing.
                    ByteBuffer now = ByteBuffer.allocate(length);
                    disk.read(offset, now);
                    assertThat(now.array()).isEqualTo(Arrays.copyOfRange(model, offset, offset + length));
                    disk.writeUnallocated(offset, now.flip());
                }
                if (op % 25 == 24) {
                    ByteBuffer all = ByteBuffer.allocate(size);
                    disk.read(0, all);
                    assertThat(Arrays.mismatch(all.array(), model)).as("first difference after op %d", op).isEqualTo(-1);
                }
            }
        }
        Qemu.assertClean(top);
        Path raw = dir.resolve("expected.raw");
        Files.write(raw, model);
        assertThat(Qemu.identical(top, "qcow2", raw, "raw")).as("qemu-img compare").isTrue();
    }

    /**
     * Writers in flight at once, each in its own region whose ends share clusters with the
     * neighbours' (so a run's partial first or last cluster is copied while a neighbour writes
     * its part of it), multi-cluster writes over a backing file: nothing is lost, the image is clean.
     */
    @ParameterizedTest(name = "{0}-byte clusters, direct {1}")
    @CsvSource({"65536, true", "4096, false", "65536, false"})
    void concurrentRunsLoseNothing(int clusterSize, boolean direct) throws Exception {
        int size = 32 << 20;
        int threads = 8;
        int region = size / threads - 12288; // regions do not line up with clusters
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), String.valueOf(size));
        Qemu.io(base, "qcow2", "write -P 0x5a 0 " + size);
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(size).withClusterSize(clusterSize).withBacking(base.toString(), "qcow2"));
        byte[] model = new byte[size];
        Arrays.fill(model, (byte) 0x5a);
        try (DriverGraph g = new DriverGraph();
             ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            Edge disk = open(g, top, base, direct);
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int start = t * (size / threads) + 6000;
                int thread = t;
                futures.add(pool.submit(() -> {
                    SplittableRandom r = new SplittableRandom(thread * 31L + clusterSize);
                    for (int op = 0; op < 60; op++) {
                        int length = 1 + r.nextInt(Math.min(region, 12 * clusterSize));
                        int at = start + r.nextInt(region - length + 1);
                        ByteBuffer d = data(length, r.nextInt());
                        disk.write(at, d.duplicate());
                        synchronized (model) {
                            d.get(0, model, at, length);
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : futures) {
                f.get();
            }
            ByteBuffer all = ByteBuffer.allocate(size);
            disk.read(0, all);
            assertThat(Arrays.mismatch(all.array(), model)).as("first difference").isEqualTo(-1);
        }
        Qemu.assertClean(top);
        Path raw = dir.resolve("expected.raw");
        Files.write(raw, model);
        assertThat(Qemu.identical(top, "qcow2", raw, "raw")).as("qemu-img compare").isTrue();
    }

    /**
     * Allocating writes in flight at once into one L2 table, whose entries wait in the table cache
     * and share its writes, are each in the file once a flush that began after they returned has
     * returned: a copy of the file taken then, with the node still open (what a SIGKILL leaves),
     * holds every write that returned before the flush, and the others at most. A flush runs
     * while the writers race, and one after.
     */
    @ParameterizedTest(name = "cache.direct={0}")
    @ValueSource(booleans = {true, false})
    void concurrentAllocationsShareL2WritesAndEachIsInTheFileAfterAFlush(boolean direct) throws Exception {
        int cluster = 65536;
        int clusters = 512; // all in the first L2 table
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(64L << 20));
        byte[] model = new byte[clusters * cluster];
        Path copy = dir.resolve("copy.qcow2");
        try (DriverGraph g = new DriverGraph();
             ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            Edge disk = open(g, top, null, direct);
            ByteBuffer first = data(cluster, 0);
            disk.write(0, first.duplicate()); // the table exists before the race
            first.get(0, model, 0, cluster);
            java.util.concurrent.atomic.AtomicIntegerArray returned = new java.util.concurrent.atomic.AtomicIntegerArray(clusters);
            returned.set(0, 1);
            java.util.concurrent.CountDownLatch halfway = new java.util.concurrent.CountDownLatch(16 * 8);
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < 16; t++) {
                int thread = t;
                futures.add(pool.submit(() -> {
                    for (int c = 1 + thread; c < clusters; c += 16) { // each thread its own clusters
                        ByteBuffer d = data(cluster, c);
                        disk.write((long) c * cluster, d.duplicate());
                        d.get(0, model, c * cluster, cluster);
                        returned.set(c, 1);
                        halfway.countDown();
                    }
                    return null;
                }));
            }
            halfway.await(); // a quarter of the writes have returned, and the writers go on
            int[] before = new int[clusters];
            for (int c = 0; c < clusters; c++) {
                before[c] = returned.get(c);
            }
            disk.flush();
            Files.copy(top, copy);
            assertCopyHolds(copy, before, model, cluster, "the copy after a flush while they write");
            for (Future<?> f : futures) {
                f.get();
            }
            disk.flush();
            Files.copy(top, copy, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
        Path raw = dir.resolve("expected.raw");
        byte[] whole = java.util.Arrays.copyOf(model, 64 << 20);
        Files.write(raw, whole);
        Qemu.assertNoCorruption(copy);
        assertThat(Qemu.identical(copy, "qcow2", raw, "raw")).as("qemu-img compare of the copy taken while open").isTrue();
        Qemu.assertClean(top);
    }

    /**
     * The copy holds, cluster by cluster, what {@code model} holds where {@code returned} says the
     * write had returned, and elsewhere that or zeroes (a write in flight).
     */
    private void assertCopyHolds(Path copy, int[] returned, byte[] model, int cluster, String what) throws Exception {
        Qemu.assertNoCorruption(copy);
        byte[] view = Qemu.readAll(copy, dir);
        byte[] zeroes = new byte[cluster];
        for (int c = 0; c < returned.length; c++) {
            int from = c * cluster;
            boolean written = java.util.Arrays.equals(view, from, from + cluster, model, from, from + cluster);
            boolean empty = java.util.Arrays.equals(view, from, from + cluster, zeroes, 0, cluster);
            assertThat(written || returned[c] == 0 && empty).as("%s: cluster %d (returned before the flush: %s)",
                    what, c, returned[c] == 1).isTrue();
        }
    }

    /**
     * A failed L2 write fails the flush that needs it, and the file's image still reads as before
     * the writes it carried (no entry points to clusters whose link did not reach the file); the
     * node keeps serving them from memory. blkdebug fails every write to the L2 table's first
     * sector (its alignment makes every L2 write of the first entries start there). A discard,
     * whose release waits for its L2 write, fails at once.
     */
    @Test
    void aFailedL2WriteFailsTheFlushAndTheFileKeepsItsOldTables() throws Exception {
        int cluster = 65536;
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(64L << 20));
        Qemu.io(top, "qcow2", "write -P 0x11 0 64k");
        long l1;
        long l2;
        try (var f = new java.io.RandomAccessFile(top.toFile(), "r")) {
            f.seek(40);
            l1 = f.readLong();
            f.seek(l1);
            l2 = f.readLong() & Qcow2Node.OFFSET_MASK;
        }
        try (DriverGraph g = new DriverGraph();
             ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            g.add("""
                    {"driver": "blkdebug", "node-name": "bd", "align": 4096,
                     "inject-error": [{"event": "none", "iotype": "write", "errno": 5, "sector": %d}],
                     "image": {"driver": "file", "filename": "%s"}}""".formatted(l2 / 512, top));
            g.add("""
                    {"driver": "qcow2", "node-name": "top", "file": "bd", "discard": "unmap"}""");
            Edge disk = g.user("top");
            List<Future<?>> futures = new ArrayList<>();
            for (int c = 1; c < 17; c++) {
                long at = (long) c * cluster;
                futures.add(pool.submit(() -> {
                    disk.write(at, data(cluster, (int) at));
                    return null;
                }));
            }
            byte[] want = new byte[17 * cluster];
            java.util.Arrays.fill(want, 0, cluster, (byte) 0x11);
            for (Future<?> f : futures) {
                f.get(); // in the table cache only
            }
            for (int c = 1; c < 17; c++) {
                data(cluster, c * cluster).get(0, want, c * cluster, cluster);
            }
            assertThatThrownBy(disk::flush).isInstanceOf(IOException.class);
            assertThatThrownBy(disk::flush).as("a second flush tries again, and fails again").isInstanceOf(IOException.class);
            ByteBuffer back = ByteBuffer.allocate(17 * cluster);
            disk.read(0, back);
            assertThat(java.util.Arrays.mismatch(back.array(), want)).as("first difference from what was written").isEqualTo(-1);
            assertThatThrownBy(() -> disk.discard(0, cluster)).as("a release waits for its L2 write").isInstanceOf(IOException.class);
            Path copy = dir.resolve("open.qcow2");
            Files.copy(top, copy);
            assertThat(Qemu.map(copy).size()).as("qemu-img map of the file while open: %s", Qemu.map(copy)).isLessThanOrEqualTo(2);
        }
        Qemu.assertNoCorruption(top);
        Qemu.Result map = Qemu.img("map", "--output=json", top.toString());
        assertThat(Qemu.map(top).size()).as("qemu-img map: %s", map.out()).isLessThanOrEqualTo(2);
    }
}
