package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
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
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Many virtual threads read and write one overlay at once, each in its own 4 KiB slots that
 * share clusters with other threads' slots: allocation and copy-on-write of a cluster never
 * lose a neighbour's write, and readers see only whole writes of their own slots.
 */
class ConcurrentIoTest {

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}-byte clusters")
    @ValueSource(ints = {4096, 65536, 1 << 20})
    void writersSharingClustersLoseNothing(int clusterSize) throws Exception {
        int size = 16 << 20;
        int slot = 4096;
        int threads = 32;
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), String.valueOf(size));
        Qemu.io(base, "qcow2", "write -P 0x5a 0 8M");
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(size).withClusterSize(clusterSize).withBacking("base.qcow2", "qcow2"));

        byte[][] finalSlots = new byte[size / slot][];
        try (BlockNode node = Images.open(top, null, true);
             ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int thread = t;
                futures.add(pool.submit(() -> {
                    SplittableRandom random = new SplittableRandom(thread * 977L + clusterSize);
                    byte[] buf = new byte[slot];
                    for (int op = 0; op < 300; op++) {
                        // Slots are interleaved: slot s belongs to thread s % threads.
                        int s = (random.nextInt(size / slot / threads)) * threads + thread;
                        if (random.nextInt(4) == 0) {
                            byte[] got = new byte[slot];
                            node.read((long) s * slot, ByteBuffer.wrap(got));
                            byte[] want = finalSlots[s] != null ? finalSlots[s] : baseSlot(s, slot);
                            assertThat(Arrays.equals(got, want)).as("slot %d read back", s).isTrue();
                        } else if (random.nextInt(8) == 0) {
                            node.writeZeroes((long) s * slot, slot, random.nextBoolean());
                            finalSlots[s] = new byte[slot];
                        } else {
                            Arrays.fill(buf, (byte) (op * 31 + thread));
                            node.write((long) s * slot, ByteBuffer.wrap(buf));
                            finalSlots[s] = buf.clone();
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : futures) {
                f.get();
            }
        }
        Qemu.assertClean(top);
        byte[] expected = new byte[size];
        for (int s = 0; s < finalSlots.length; s++) {
            byte[] content = finalSlots[s] != null ? finalSlots[s] : baseSlot(s, slot);
            System.arraycopy(content, 0, expected, s * slot, slot);
        }
        Path reference = dir.resolve("expected.raw");
        Files.write(reference, expected);
        assertThat(Qemu.identical(top, "qcow2", reference, "raw")).isTrue();
    }

    private static byte[] baseSlot(int s, int slot) {
        byte[] b = new byte[slot];
        if ((long) s * slot < (8 << 20)) {
            Arrays.fill(b, (byte) 0x5a);
        }
        return b;
    }
}
