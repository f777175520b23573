package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.stream.LongStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Seeded random sequences of write, write-zeroes, discard, read and reopen on a qcow2 overlay
 * (over a QEMU-made base), checked after every step against an in-memory model of the disk,
 * and at the end by {@code qemu-img check} and {@code qemu-img compare}. The seed is in the
 * test's name; rerun one with its seed to reproduce it.
 */
class ImageModelPropertyTest {

    private static final int SIZE = 6 << 20;

    @TempDir
    Path dir;

    static Stream<Arguments> cases() {
        return Stream.of(
                        new int[] {512, 3, 16}, new int[] {4096, 3, 16}, new int[] {65536, 3, 16},
                        new int[] {65536, 2, 16}, new int[] {4096, 3, 1}, new int[] {2048, 3, 64})
                .flatMap(c -> LongStream.rangeClosed(1, 3).mapToObj(seed ->
                        Arguments.of(c[0], c[1], c[2], seed * 7919 + c[0] + c[2])));
    }

    @ParameterizedTest(name = "clusters {0}, v{1}, refcount bits {2}, seed {3}")
    @MethodSource("cases")
    void randomOperationsMatchTheModel(int clusterSize, int version, int refcountBits, long seed) throws IOException {
        SplittableRandom random = new SplittableRandom(seed);
        // A QEMU-made base with a pattern in its first half; the overlay is ours.
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=65536", base.toString(), String.valueOf(SIZE));
        Qemu.io(base, "qcow2", "write -P 0x5a 0 " + SIZE / 2);
        byte[] backing = new byte[SIZE];
        Arrays.fill(backing, 0, SIZE / 2, (byte) 0x5a);

        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, new Qcow2CreateOptions(SIZE, clusterSize, version, "base.qcow2", "qcow2", refcountBits));
        byte[] model = backing.clone();

        BlockNode node = Images.open(top, null, true);
        try {
            for (int step = 0; step < 300; step++) {
                int op = random.nextInt(100);
                long offset = randomOffset(random, clusterSize);
                int length = (int) Math.min(SIZE - offset, 1 + random.nextInt(3 * clusterSize + 5000));
                String what;
                if (op < 45) {
                    byte[] data = new byte[length];
                    random.nextBytes(data);
                    node.write(offset, ByteBuffer.wrap(data));
                    System.arraycopy(data, 0, model, (int) offset, length);
                    what = "write";
                } else if (op < 65) {
                    boolean unmap = random.nextBoolean();
                    node.writeZeroes(offset, length, unmap);
                    Arrays.fill(model, (int) offset, (int) offset + length, (byte) 0);
                    what = "write-zeroes unmap=" + unmap;
                } else if (op < 80) {
                    node.discard(offset, length);
                    applyDiscard(model, backing, offset, length, clusterSize, version);
                    what = "discard";
                } else if (op < 95) {
                    byte[] got = new byte[length];
                    node.read(offset, ByteBuffer.wrap(got));
                    assertThat(Arrays.mismatch(got, 0, length, model, (int) offset, (int) offset + length))
                            .as("seed %d step %d: read [%d,+%d) differs at", seed, step, offset, length).isEqualTo(-1);
                    continue;
                } else {
                    node.close();
                    node = Images.open(top, null, true);
                    what = "reopen";
                }
                assertThat(what).isNotNull();
            }
            byte[] all = new byte[SIZE];
            node.read(0, ByteBuffer.wrap(all));
            assertThat(Arrays.mismatch(all, model)).as("seed %d: whole disk differs at", seed).isEqualTo(-1);
        } finally {
            node.close();
        }
        Qemu.assertClean(top);
        Path reference = dir.resolve("model.raw");
        Files.write(reference, model);
        assertThat(Qemu.identical(top, "qcow2", reference, "raw")).as("qemu-img compare, seed %d", seed).isTrue();
    }

    private static long randomOffset(SplittableRandom random, int clusterSize) {
        long offset = random.nextInt(SIZE);
        return switch (random.nextInt(3)) {
            case 0 -> offset / clusterSize * clusterSize; // aligned
            case 1 -> offset / 512 * 512;
            default -> offset;
        };
    }

    /** QEMU's discard: whole clusters only; v3 reads zeroes after it, v2 the backing file. */
    private static void applyDiscard(byte[] model, byte[] backing, long offset, int length, int clusterSize, int version) {
        long end = offset + length;
        long first = (offset + clusterSize - 1) / clusterSize * clusterSize;
        long last = end == SIZE ? end : end / clusterSize * clusterSize;
        for (long pos = first; pos < last; pos += clusterSize) {
            int from = (int) pos;
            int to = (int) Math.min(SIZE, pos + clusterSize);
            if (version >= 3) {
                Arrays.fill(model, from, to, (byte) 0);
            } else {
                System.arraycopy(backing, from, model, from, to - from);
            }
        }
    }
}
