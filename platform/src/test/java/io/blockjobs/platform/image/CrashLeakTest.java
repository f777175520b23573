package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import tools.jackson.databind.JsonNode;

/**
 * How many clusters a crash leaks. A child JVM writes (mostly sequentially, so that it keeps
 * allocating) with a flush every few operations and is killed with SIGKILL after a random number
 * of flushes. The bounds are the ones {@link Qcow2Refcounts} documents:
 * <ul>
 *   <li>{@code qemu-img check} of the crashed image finds no corruption and at most
 *       {@link Qcow2Refcounts#MAX_HOLES} leaked clusters, plus what an operation in flight holds,
 *       plus the clusters allocated since the L2 tables were last written back (a flush, or
 *       {@link Qcow2Node#writeBackWindow} of them): counted, and not yet linked in the file;</li>
 *   <li>counting also what is counted past the end of the file (a copy lengthened: what a writer
 *       that grows the file over it without reclaiming it, such as QEMU, would leak), at most
 *       {@link Qcow2Refcounts#poolBound};</li>
 *   <li>after our next read-write open has allocated and closed, the lengthened count is back
 *       within that first bound: crashes do not pile leaks up.</li>
 * </ul>
 * The same operations run through {@code qemu-io}, killed the same way, give QEMU's figure beside
 * ours (printed, not asserted).
 *
 * <p>A second test needs no child: it copies the image file while the node is open, which is
 * what a SIGKILL leaves (the page cache survives the process), every 100 operations.
 */
class CrashLeakTest {

    /**
     * Clusters that are counted and not referenced because an operation was in flight: the
     * writer runs one operation at a time, and each holds at most the run of clusters one
     * allocating write takes at once (taken from the pool and written, not yet linked), or one
     * cluster unlinked and not yet released. An operation is at most 3 clusters long, so it
     * covers at most 4 clusters. One more for the old refcount table while it is replaced.
     */
    private static final int IN_FLIGHT = 4 + 1;

    /** Clusters past the end of the file whose refcounts the leak count covers (more than any pool). */
    private static final long SLACK = 1024;

    @TempDir
    Path dir;

    /** What qemu-img check may find leaked after a crash, and after our next open. */
    static long bound() {
        return Qcow2Refcounts.MAX_HOLES + IN_FLIGHT;
    }

    /**
     * What {@code ops} operations since the last flush may leave allocated and not linked in the
     * file: each covers at most 4 clusters, and the tables are written back once the window is full.
     */
    static long unlinked(int clusterSize, long ops) {
        return Math.min(4 * ops, Qcow2Node.writeBackWindow(Integer.numberOfTrailingZeros(clusterSize)) + 4);
    }

    /** What is counted and unused after a crash, inside the file or past its end. */
    static long poolBound(int clusterSize) {
        return Qcow2Refcounts.poolBound(Integer.numberOfTrailingZeros(clusterSize)) + IN_FLIGHT;
    }

    static long imageSize(int clusterSize) {
        return Math.max(8L << 20, 4096L * clusterSize);
    }

    @ParameterizedTest(name = "{0}-byte clusters, {1}, seed {2}")
    @CsvSource({
        "512, seq, 1", "512, random, 2",
        "4096, seq, 3", "4096, random, 4", "4096, seq, 5",
        "65536, seq, 6", "65536, random, 7", "65536, seq, 8"})
    void aKilledWriterLeaksLittle(int clusterSize, String mode, long seed) throws Exception {
        SplittableRandom random = new SplittableRandom(seed);
        long size = imageSize(clusterSize);
        int flushEvery = 1 + random.nextInt(8);
        long killAt = 300 + random.nextInt(700); // operations: far enough for any pool to be at its largest

        Path ours = dir.resolve("ours.qcow2");
        Images.createQcow2(ours, Qcow2CreateOptions.of(size).withClusterSize(clusterSize));
        String java = ProcessHandle.current().info().command().orElse("java");
        Process child = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                Writer.class.getName(), ours.toString(), String.valueOf(seed), String.valueOf(flushEvery), mode)
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
        long lastFlushed = -1;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = out.readLine()) != null) {
                lastFlushed = Long.parseLong(line.substring("flushed ".length()));
                if (lastFlushed >= killAt) {
                    child.toHandle().destroyForcibly(); // SIGKILL, mid-operation
                    break;
                }
            }
        }
        assertThat(child.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(lastFlushed).as("the child must have flushed before it was killed").isGreaterThanOrEqualTo(killAt);
        Check mine = check(ours);
        Check mineTail = leaks(ours, clusterSize, SLACK);

        Path theirs = dir.resolve("qemu.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "cluster_size=" + clusterSize, theirs.toString(), String.valueOf(size));
        killedQemuIo(theirs, seed, flushEvery, mode, size, clusterSize, killAt + 1 + random.nextInt(flushEvery));
        Check qemu = check(theirs);
        Check qemuTail = leaks(theirs, clusterSize, SLACK);

        // The crashed image opens, allocates and closes: what was counted past the end is reclaimed.
        reopenAndAllocate(ours, size, clusterSize);
        Check after = leaks(ours, clusterSize, SLACK);

        System.out.printf(Locale.ROOT, "crash leak, %d-byte clusters, %s, seed %d, flush every %d, killed after op %d:"
                        + " blockjobs %d leaked (%d KiB; with what is counted past the end %d, %d after our reopen),"
                        + " qemu %d leaked (%d with past the end); bounds %d / %d; corruptions %d / %d%n",
                clusterSize, mode, seed, flushEvery, lastFlushed, mine.leaks, mine.leaks * clusterSize / 1024,
                mineTail.leaks, after.leaks, qemu.leaks, qemuTail.leaks, bound(), poolBound(clusterSize),
                mine.corruptions, qemu.corruptions);
        assertThat(mine.corruptions).as("corruptions after the kill: %s", mine.json).isZero();
        long sinceFlush = unlinked(clusterSize, flushEvery);
        assertThat(mine.leaks).as("leaked clusters after the kill (seed %d): %s", seed, mine.json)
                .isLessThanOrEqualTo(bound() + sinceFlush);
        assertThat(mineTail.leaks).as("counted, unused clusters after the kill (seed %d): %s", seed, mineTail.json)
                .isLessThanOrEqualTo(poolBound(clusterSize) + sinceFlush);
        assertThat(after.corruptions).as("after our reopen: %s", after.json).isZero();
        assertThat(after.leaks).as("leaked after our reopen (seed %d): %s", seed, after.json)
                .isLessThanOrEqualTo(bound() + sinceFlush);
    }

    /** Opens read-write with our driver, writes where nothing is allocated (so it allocates), closes. */
    private static void reopenAndAllocate(Path image, long size, int clusterSize) throws Exception {
        try (BlockNode node = Images.open(image, null, true)) {
            node.discard(0, clusterSize);
            node.write(0, ByteBuffer.wrap(new byte[clusterSize]));
            node.write(size / 2 + 100, ByteBuffer.wrap(new byte[3 * clusterSize]));
        }
    }

    /**
     * Free clusters inside the file (left by a discard) are what a crash leaks for good: a pool
     * takes at most {@link Qcow2Refcounts#MAX_HOLES} of them.
     */
    @ParameterizedTest(name = "{0}-byte clusters")
    @CsvSource({"512", "4096", "65536"})
    void aPoolTakesFewHoles(int clusterSize) throws Exception {
        long size = imageSize(clusterSize);
        Path image = dir.resolve("holes.qcow2");
        Path copy = dir.resolve("holes-copy.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(size).withClusterSize(clusterSize));
        int n = 4 * Qcow2Refcounts.MAX_HOLES;
        try (BlockNode node = Images.open(image, null, true)) {
            node.write(0, ByteBuffer.wrap(new byte[(n + 1) * clusterSize]));
            node.discard(0, (long) n * clusterSize); // n holes inside the file
        }
        try (BlockNode node = Images.open(image, null, true)) {
            node.write((long) n * clusterSize + 1, ByteBuffer.wrap(new byte[1])); // allocated: no allocation
            // Enough allocations for batches to grow past MAX_HOLES (8, 16, then 32 of which 16 are holes).
            node.write((long) (n + 2) * clusterSize, ByteBuffer.wrap(new byte[25 * clusterSize]));
            node.flush(); // their L2 entries in the file: what is left counted and unused is the pool's
            Files.copy(image, copy, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
        Check c = check(copy);
        System.out.printf(Locale.ROOT, "holes, %d-byte clusters: %d holes, a crash after 25 allocations leaks %d (bound %d)%n",
                clusterSize, n, c.leaks, Qcow2Refcounts.MAX_HOLES);
        assertThat(c.corruptions).as("%s", c.json).isZero();
        assertThat(c.leaks).as("%s", c.json).isPositive().isLessThanOrEqualTo(Qcow2Refcounts.MAX_HOLES);
        Qemu.assertClean(image);
    }

    /**
     * A power loss can leave an L2 entry durable and the data it points to not, past the end of
     * the file: the reclaim must not free that cluster (it would be handed out twice).
     */
    @ParameterizedTest(name = "{0}-byte clusters")
    @CsvSource({"512", "65536"})
    void aReferencePastTheEndIsNotReclaimed(int clusterSize) throws Exception {
        long size = imageSize(clusterSize);
        Path image = dir.resolve("cut.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(size).withClusterSize(clusterSize));
        try (BlockNode node = Images.open(image, null, true)) {
            node.write(0, ByteBuffer.wrap(new byte[clusterSize]));
            byte[] ones = new byte[clusterSize];
            java.util.Arrays.fill(ones, (byte) 1);
            node.write(clusterSize, ByteBuffer.wrap(ones)); // the last cluster of the file
        }
        long length = Files.size(image);
        try (var f = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(length - clusterSize); // its data never reached the disk
        }
        assertThat(check(image).corruptions).as("the cut image: a reference past the end").isEqualTo(1);
        try (BlockNode node = Images.open(image, null, true)) {
            byte[] twos = new byte[clusterSize];
            java.util.Arrays.fill(twos, (byte) 2);
            node.write(size / 2, ByteBuffer.wrap(twos)); // allocates: reclaims, then takes new clusters
        }
        Check c = check(image); // the new cluster lies past the cut one, so that one is inside the file again
        assertThat(c.corruptions).as("%s", c.json).isZero();
        byte[] view = Qemu.readAll(image, dir);
        assertThat(view[Math.toIntExact(size / 2)]).isEqualTo((byte) 2);
        assertThat(view[clusterSize]).as("the cut cluster reads as zeroes, not as the new data").isZero();
    }

    /**
     * What a SIGKILL would leave at every instant between operations: the file as the page cache
     * holds it, copied while the node is open.
     */
    @ParameterizedTest(name = "{0}-byte clusters, seed {1}")
    @CsvSource({"512, 11", "4096, 12", "65536, 13"})
    void theImageLeaksLittleAtEveryInstant(int clusterSize, long seed) throws Exception {
        long size = imageSize(clusterSize);
        Path image = dir.resolve("live.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(size).withClusterSize(clusterSize));
        Path copy = dir.resolve("copy.qcow2");
        long worst = 0;
        long worstTail = 0;
        long sinceFlush = 0;
        long lastSinceFlush = 0;
        SplittableRandom random = new SplittableRandom(seed);
        try (BlockNode node = Images.open(image, null, true)) {
            Writer w = new Writer(seed, size, clusterSize, "seq");
            long ops = 1200;
            for (long i = 0; i < ops; i++) {
                w.op(i).applyTo(node);
                sinceFlush++;
                if (random.nextInt(8) == 0) {
                    node.flush();
                    sinceFlush = 0;
                }
                if (i % 100 == 99) {
                    lastSinceFlush = sinceFlush;
                    long unlinked = unlinked(clusterSize, sinceFlush);
                    Files.copy(image, copy, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                    Check c = check(copy);
                    Check tail = leaks(copy, clusterSize, SLACK);
                    assertThat(c.corruptions).as("op %d: %s", i, c.json).isZero();
                    assertThat(c.leaks).as("op %d, seed %d, %d since a flush: %s", i, seed, sinceFlush, c.json)
                            .isLessThanOrEqualTo(Qcow2Refcounts.MAX_HOLES + unlinked); // between operations none is in flight
                    assertThat(tail.leaks).as("op %d, seed %d: %s", i, seed, tail.json)
                            .isLessThanOrEqualTo(Qcow2Refcounts.poolBound(Integer.numberOfTrailingZeros(clusterSize)) + unlinked);
                    worst = Math.max(worst, c.leaks);
                    worstTail = Math.max(worstTail, tail.leaks);
                }
            }
        }
        Qemu.assertClean(image);
        // The last copy, as a crash would have left it, reopened by us: the tail is reclaimed.
        reopenAndAllocate(copy, size, clusterSize);
        Check after = leaks(copy, clusterSize, SLACK);
        assertThat(after.corruptions).as("%s", after.json).isZero();
        assertThat(after.leaks).as("%s", after.json)
                .isLessThanOrEqualTo(Qcow2Refcounts.MAX_HOLES + unlinked(clusterSize, lastSinceFlush));
        System.out.printf(Locale.ROOT, "instant leak, %d-byte clusters, seed %d: at most %d clusters leaked"
                        + " (%d with what is counted past the end; %d after our reopen of the last copy); bounds %d / %d%n",
                clusterSize, seed, worst, worstTail, after.leaks, Qcow2Refcounts.MAX_HOLES,
                Qcow2Refcounts.poolBound(Integer.numberOfTrailingZeros(clusterSize)));
    }

    record Check(long leaks, long corruptions, String json) {
    }

    /**
     * {@code qemu-img check} of a copy of the image that is longer by {@code slack} clusters
     * (sparse): the check only looks at refcounts of clusters inside the file, and clusters
     * counted past its end (the unused end of a pool) leak as soon as the file grows over them.
     */
    Check leaks(Path image, int clusterSize, long slack) throws Exception {
        Path copy = dir.resolve(image.getFileName() + ".extended");
        Files.copy(image, copy, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        try (var f = new java.io.RandomAccessFile(copy.toFile(), "rw")) {
            long end = (f.length() + clusterSize - 1) / clusterSize * clusterSize;
            f.setLength(end + slack * clusterSize);
        }
        Check c = check(copy);
        Files.delete(copy);
        return c;
    }

    static Check check(Path image) {
        Qemu.Result r = Qemu.check(image);
        assertThat(r.exit()).as("qemu-img check %s: %s %s", image, r.out(), r.err()).isIn(0, 2, 3);
        JsonNode j = Qemu.JSON.readTree(r.out());
        return new Check(j.path("leaks").asLong(0), j.path("corruptions").asLong(0), r.out().replaceAll("\\s+", " "));
    }

    /** Runs the same operations through qemu-io, which raises SIGKILL on itself after {@code killAfter} of them. */
    private void killedQemuIo(Path image, long seed, int flushEvery, String mode, long size, int clusterSize,
            long killAfter) throws Exception {
        Writer w = new Writer(seed, size, clusterSize, mode);
        List<String> script = new ArrayList<>();
        for (long i = 0; i < killAfter; i++) {
            KillWriter.Op op = w.op(i);
            script.add(switch (op.kind()) {
                case 0 -> "write -P " + (op.fill() & 0xff) + " " + op.offset() + " " + op.length();
                case 1 -> "write -z" + ((op.fill() & 1) == 0 ? " -u " : " ") + op.offset() + " " + op.length();
                default -> "discard " + op.offset() + " " + op.length();
            });
            if ((i + 1) % flushEvery == 0) {
                script.add("flush");
            }
        }
        script.add("sigraise 9");
        Path commands = dir.resolve("qemu-io.txt");
        Files.write(commands, script);
        Process p = new ProcessBuilder("qemu-io", "-f", "qcow2", image.toString())
                .redirectInput(commands.toFile())
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as("qemu-io should have killed itself").isEqualTo(128 + 9);
    }

    /**
     * The child: operation {@code i} of a seeded sequence. In {@code seq} mode most operations
     * write at a cursor that runs through the disk (so almost every one allocates); in
     * {@code random} mode they are {@link KillWriter}'s. Prints {@code flushed N} after each flush.
     */
    static final class Writer {
        private final long seed;
        private final long size;
        private final int clusterSize;
        private final boolean sequential;
        private long cursor;

        Writer(long seed, long size, int clusterSize, String mode) {
            this.seed = seed;
            this.size = size;
            this.clusterSize = clusterSize;
            this.sequential = mode.equals("seq");
        }

        /** Operations must be asked for in order (the cursor moves). */
        KillWriter.Op op(long i) {
            KillWriter.Op op = KillWriter.op(seed, i, (int) Math.min(Integer.MAX_VALUE, size), clusterSize);
            if (!sequential || op.kind() != 0) {
                return op;
            }
            int length = (int) Math.min(size - cursor, op.length());
            KillWriter.Op seq = new KillWriter.Op(0, cursor, length, op.fill());
            cursor = (cursor + length) % size;
            return seq;
        }

        public static void main(String[] args) throws Exception {
            Path image = Path.of(args[0]);
            long seed = Long.parseLong(args[1]);
            int flushEvery = Integer.parseInt(args[2]);
            try (BlockNode node = Images.open(image, null, true)) {
                Writer w = new Writer(seed, node.size(), node.clusterSize(), args[3]);
                for (long i = 0; i < 1_000_000; i++) {
                    w.op(i).applyTo(node);
                    if ((i + 1) % flushEvery == 0) {
                        node.flush();
                        System.out.println("flushed " + i);
                        System.out.flush();
                    }
                }
            }
        }
    }
}
