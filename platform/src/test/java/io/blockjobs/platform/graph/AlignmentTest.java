package io.blockjobs.platform.graph;

import static io.blockjobs.platform.graph.GraphFixture.async;
import static io.blockjobs.platform.graph.GraphFixture.awaitParkedIn;
import static io.blockjobs.platform.graph.GraphFixture.read;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.graph.GraphFixture.Async;
import io.blockjobs.platform.graph.GraphFixture.Events;
import io.blockjobs.platform.graph.GraphFixture.RecordingHook;
import io.blockjobs.platform.testkit.Qemu;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Request alignment: a file node opened with {@code cache.direct=on} needs requests aligned
 * to the file system's block size; the graph widens unaligned reads and turns unaligned writes
 * into a serialised read-modify-write (QEMU's padding), so users get exactly the bytes they
 * asked for and two writes into one block never lose each other's bytes.
 */
@Timeout(value = 300, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class AlignmentTest {
    private static final int SIZE = 1 << 20;

    @TempDir
    Path dir;
    GraphFixture g;
    final Events events = new Events();

    @BeforeEach
    void open() {
        g = new GraphFixture(dir);
    }

    @AfterEach
    void close() {
        g.close();
    }

    /** A raw disk over a direct file node {@code f}, and an export's root edge on it. */
    private Edge directRaw() throws Exception {
        Path image = g.raw("disk.raw", SIZE);
        g.add("""
                {"driver": "raw", "node-name": "disk", "cache": {"direct": true},
                 "file": {"driver": "file", "node-name": "f", "filename": "%s"}}""", image);
        int align = g.node("f").limits().requestAlignment();
        assertThat(align).as("O_DIRECT needs the file system's block size").isGreaterThanOrEqualTo(512);
        assertThat(g.node("f").options().cacheDirect()).isTrue();
        return g.export("disk", true);
    }

    private static byte[] random(SplittableRandom r, int n) {
        byte[] b = new byte[n];
        r.nextBytes(b);
        return b;
    }

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3})
    void unalignedRequestsGetExactlyTheirBytes(long seed) throws Exception {
        Edge disk = directRaw();
        int align = g.node("f").limits().requestAlignment();
        SplittableRandom r = new SplittableRandom(seed);
        byte[] model = new byte[SIZE];
        for (int op = 0; op < 300; op++) {
            int length = 1 + r.nextInt(3 * align + 7);
            int offset = r.nextInt(SIZE - length + 1);
            switch (r.nextInt(4)) {
                case 0 -> {
                    byte[] data = random(r, length);
                    disk.write(offset, ByteBuffer.wrap(data));
                    System.arraycopy(data, 0, model, offset, length);
                }
                case 1 -> {
                    ByteBuffer data = ByteBuffer.allocateDirect(length); // a direct buffer at any address
                    byte[] bytes = random(r, length);
                    data.put(bytes).flip();
                    disk.write(offset, data);
                    System.arraycopy(bytes, 0, model, offset, length);
                }
                case 2 -> {
                    disk.writeZeroes(offset, length, false);
                    Arrays.fill(model, offset, offset + length, (byte) 0);
                }
                default -> assertThat(read(disk, offset, length)).as("seed %d op %d: read [%d, +%d)", seed, op,
                        offset, length).isEqualTo(Arrays.copyOfRange(model, offset, offset + length));
            }
        }
        assertThat(read(disk, 0, SIZE)).as("seed %d: the whole disk", seed).isEqualTo(model);
        g.close();
        assertThat(Files.readAllBytes(dir.resolve("disk.raw"))).as("seed %d: the file", seed).isEqualTo(model);
    }

    @Test
    void unalignedWritesIntoOneBlockWaitForEachOther() throws Exception {
        Edge disk = directRaw();
        GraphNode f = g.node("f");
        int align = f.limits().requestAlignment();
        RecordingHook holder = new RecordingHook("file", events, w -> w.offset() == align + 10);
        f.addHook(holder);

        Async<Void> first = async("first", () -> disk.write(align + 10, ByteBuffer.wrap(new byte[] {1, 1, 1})));
        holder.awaitHeld(); // inside its read-modify-write of block [align, 2 * align)
        // Other bytes of the same block: its padded range overlaps the first's, so it must wait.
        Async<Void> second = async("second", () -> disk.write(2 * align - 3, ByteBuffer.wrap(new byte[] {2, 2, 2})));
        awaitParkedIn(second, "RequestTracker", "begin");
        // Bytes in another block go on.
        async("elsewhere", () -> disk.write(3 * align + 1, ByteBuffer.wrap(new byte[] {3}))).join();
        // An aligned read of the block waits too, for both: padded writes are serialising.
        Async<byte[]> aligned = async("aligned read", () -> read(disk, align, align));
        awaitParkedIn(aligned, "RequestTracker", "begin");

        holder.release();
        first.join();
        second.join();
        assertThat(events.snapshot()).startsWith("file.before WRITE@" + (align + 10) + "+3",
                "file.before WRITE@" + (3 * align + 1) + "+1");
        for (byte[] block : List.of(aligned.join(), read(disk, align, align))) {
            assertThat(Arrays.copyOfRange(block, 0, 10)).containsOnly(0);
            assertThat(Arrays.copyOfRange(block, 10, 13)).containsOnly(1);
            assertThat(Arrays.copyOfRange(block, 13, align - 3)).containsOnly(0);
            assertThat(Arrays.copyOfRange(block, align - 3, align)).containsOnly(2);
        }
    }

    @Test
    void concurrentUnalignedWritersSharingBlocksLoseNothing() throws Exception {
        Edge disk = directRaw();
        int slot = 1000; // never aligned: every block holds pieces of several threads' slots
        int threads = 8;
        int slots = SIZE / slot;
        byte[][] last = new byte[slots][];
        List<Async<Void>> writers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            int thread = t;
            writers.add(async("writer " + t, () -> {
                SplittableRandom r = new SplittableRandom(31L * thread + 7);
                for (int op = 0; op < 150; op++) {
                    int s = r.nextInt(slots / threads) * threads + thread; // this thread's slots only
                    byte[] data = new byte[slot];
                    Arrays.fill(data, (byte) (1 + (op + thread * 17) % 250));
                    disk.write((long) s * slot, ByteBuffer.wrap(data));
                    last[s] = data;
                }
            }));
        }
        for (Async<Void> w : writers) {
            w.join();
        }
        byte[] expected = new byte[SIZE];
        for (int s = 0; s < slots; s++) {
            if (last[s] != null) {
                System.arraycopy(last[s], 0, expected, s * slot, slot);
            }
        }
        assertThat(read(disk, 0, SIZE)).isEqualTo(expected);
    }

    @Test
    void qcow2OnADirectFileStaysCleanAndReadsBack() throws Exception {
        Path image = g.qcow2("disk.qcow2", SIZE, null);
        g.add("""
                {"driver": "qcow2", "node-name": "disk", "cache": {"direct": true},
                 "file": {"driver": "file", "node-name": "f", "filename": "%s"}}""", image);
        assertThat(g.node("f").limits().requestAlignment()).isGreaterThanOrEqualTo(512);
        Edge disk = g.export("disk", true);
        SplittableRandom r = new SplittableRandom(42);
        byte[] model = new byte[SIZE];
        for (int op = 0; op < 100; op++) {
            int length = 1 + r.nextInt(20000);
            int offset = r.nextInt(SIZE - length + 1);
            byte[] data = random(r, length);
            disk.write(offset, ByteBuffer.wrap(data));
            System.arraycopy(data, 0, model, offset, length);
        }
        assertThat(read(disk, 0, SIZE)).isEqualTo(model);
        g.close();
        Qemu.assertClean(image);
        Path expected = dir.resolve("expected.raw");
        Files.write(expected, model);
        assertThat(Qemu.identical(image, "qcow2", expected, "raw")).as("qemu-img compare").isTrue();
    }
}
