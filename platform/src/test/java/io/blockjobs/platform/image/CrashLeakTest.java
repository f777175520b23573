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
 * of flushes; {@code qemu-img check} must find no corruption and at most the leak bound that
 * {@link Qcow2Refcounts} documents. The same operations run through {@code qemu-io}, killed the
 * same way, give QEMU's figure beside ours (printed, not asserted).
 *
 * <p>A second test needs no child: it copies the image file while the node is open, which is
 * what a SIGKILL leaves (the page cache survives the process), after every operation.
 */
class CrashLeakTest {

    /**
     * Clusters that are counted and not referenced because an operation was in flight: the
     * writer runs one operation at a time, and each holds at most one such cluster (taken from
     * the pool and not yet linked, or unlinked and not yet released). One more for the old
     * refcount table while it is replaced.
     */
    private static final int IN_FLIGHT = 2;

    /** Clusters past the end of the file whose refcounts the leak count covers (more than any pool). */
    private static final long SLACK = 1024;

    @TempDir
    Path dir;

    static long bound(int clusterSize) {
        return Qcow2Refcounts.crashLeakBound(Integer.numberOfTrailingZeros(clusterSize)) + IN_FLIGHT;
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
        Check mine = leaks(ours, clusterSize, SLACK);

        Path theirs = dir.resolve("qemu.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "cluster_size=" + clusterSize, theirs.toString(), String.valueOf(size));
        Check qemu = killedQemuIo(theirs, seed, flushEvery, mode, size, clusterSize, killAt + 1 + random.nextInt(flushEvery));

        System.out.printf(Locale.ROOT, "crash leak, %d-byte clusters, %s, seed %d, flush every %d, killed after op %d:"
                        + " blockjobs %d leaked (%d KiB, bound %d), qemu %d leaked; corruptions %d / %d%n",
                clusterSize, mode, seed, flushEvery, lastFlushed, mine.leaks, mine.leaks * clusterSize / 1024,
                bound(clusterSize), qemu.leaks, mine.corruptions, qemu.corruptions);
        assertThat(mine.corruptions).as("corruptions after the kill: %s", mine.json).isZero();
        assertThat(mine.leaks).as("leaked clusters after the kill (seed %d): %s", seed, mine.json)
                .isLessThanOrEqualTo(bound(clusterSize));

        // The crashed image opens, takes writes and closes; what it leaked stays bounded.
        try (BlockNode node = Images.open(ours, null, true)) {
            node.write(size / 2 + 100, ByteBuffer.wrap(new byte[3 * clusterSize]));
        }
        Check after = leaks(ours, clusterSize, SLACK);
        assertThat(after.corruptions).isZero();
        assertThat(after.leaks).isLessThanOrEqualTo(bound(clusterSize));
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
        long worst = 0;
        SplittableRandom random = new SplittableRandom(seed);
        try (BlockNode node = Images.open(image, null, true)) {
            Writer w = new Writer(seed, size, clusterSize, "seq");
            long ops = 1200;
            for (long i = 0; i < ops; i++) {
                w.op(i).applyTo(node);
                if (random.nextInt(8) == 0) {
                    node.flush();
                }
                if (i % 40 == 39) {
                    Check c = leaks(image, clusterSize, SLACK);
                    assertThat(c.corruptions).as("op %d: %s", i, c.json).isZero();
                    assertThat(c.leaks).as("op %d, seed %d: %s", i, seed, c.json).isLessThanOrEqualTo(bound(clusterSize));
                    worst = Math.max(worst, c.leaks);
                }
            }
        }
        Qemu.assertClean(image);
        System.out.printf(Locale.ROOT, "instant leak, %d-byte clusters, seed %d: at most %d clusters leaked (bound %d)%n",
                clusterSize, seed, worst, bound(clusterSize));
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
    private Check killedQemuIo(Path image, long seed, int flushEvery, String mode, long size, int clusterSize,
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
        return leaks(image, clusterSize, SLACK);
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
