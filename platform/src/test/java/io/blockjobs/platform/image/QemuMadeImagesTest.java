package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import tools.jackson.databind.JsonNode;

/**
 * Images made by QEMU (qemu-img create, qemu-io, qemu-img convert -c) read back byte for byte
 * as QEMU reads them, and their block status matches {@code qemu-img map}.
 */
class QemuMadeImagesTest {

    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    static Stream<Arguments> formats() {
        return Stream.of(2, 3).flatMap(v -> Stream.of(4096, 65536, 2 << 20).map(cs -> Arguments.of(v, cs)));
    }

    @ParameterizedTest(name = "v{0}, {1}-byte clusters")
    @MethodSource("formats")
    void threeLayerChainReadsAsQemuReadsIt(int version, int clusterSize) throws IOException {
        String compat = version == 2 ? "compat=0.10" : "compat=1.1";
        String opts = compat + ",cluster_size=" + clusterSize;
        long size = 24 * MIB;

        // Base: compressed by qemu-img convert -c from a raw file with compressible and random data.
        Path source = dir.resolve("source.raw");
        byte[] content = new byte[(int) size];
        SplittableRandom random = new SplittableRandom(version * 31L + clusterSize);
        for (int i = 0; i < 6 * MIB; i++) {
            content[i] = (byte) (i / 4096); // compresses well
        }
        for (int i = (int) (10 * MIB); i < 12 * MIB; i++) {
            content[i] = (byte) random.nextInt(); // does not
        }
        Files.write(source, content);
        Path base = dir.resolve("base.qcow2");
        Qemu.img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, source.toString(), base.toString());
        JsonNode baseCheck = Qemu.JSON.readTree(Qemu.check(base).out());
        assertThat(baseCheck.path("compressed-clusters").asLong()).as("compressed clusters in %s", baseCheck).isPositive();

        Path mid = dir.resolve("mid.qcow2");
        Qemu.img("create", "-f", "qcow2", "-o", opts, "-b", "base.qcow2", "-F", "qcow2", mid.toString());
        Qemu.io(mid, "qcow2",
                "write -P 0x22 " + (3 * MIB + 512) + " " + (2 * MIB + 1024),
                "write -z " + (8 * MIB) + " " + (4 * MIB),
                "write -P 0x23 " + (20 * MIB) + " " + (64 * 1024));

        Path top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", "-o", opts, "-b", "mid.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2",
                "write -P 0x33 " + (4 * MIB) + " " + (3 * MIB),
                "write -z " + (MIB) + " " + (2 * MIB),
                "write -P 0x34 " + (size - 4096) + " 4096",
                "write -P 0x35 " + (11 * MIB + 100) + " 7");

        byte[] expected = Qemu.readAll(top, dir);
        byte[] actual = new byte[(int) size];
        try (BlockNode node = Images.open(top, null, false)) {
            assertThat(node.size()).isEqualTo(size);
            assertThat(node.clusterSize()).isEqualTo(clusterSize);
            // Read in odd-sized pieces so requests straddle clusters.
            int pos = 0;
            while (pos < size) {
                int n = (int) Math.min(size - pos, 3 * clusterSize / 2 + 4096 + 512);
                node.read(pos, ByteBuffer.wrap(actual, pos, n));
                pos += n;
            }
            assertSameBytes(actual, expected);
            assertStatusMatchesQemuMap(node, Qemu.map(top), clusterSize);
        }
        // Each layer on its own too, as qemu-img reads it.
        for (Path layer : new Path[] {base, mid}) {
            byte[] qemuView = Qemu.readAll(layer, dir);
            try (BlockNode node = Images.open(layer, null, false)) {
                byte[] ours = new byte[(int) size];
                node.read(0, ByteBuffer.wrap(ours));
                assertSameBytes(ours, qemuView);
            }
        }
    }

    /** For every cluster: whether some layer defines it, and which, as qemu-img map says. */
    private static void assertStatusMatchesQemuMap(BlockNode node, JsonNode map, int clusterSize) throws IOException {
        for (JsonNode extent : map) {
            long start = extent.path("start").asLong();
            long end = start + extent.path("length").asLong();
            boolean present = extent.path("present").asBoolean();
            int depth = extent.path("depth").asInt();
            for (long pos = start; pos < end; pos += clusterSize) {
                BlockStatus ours = node.chainStatus(pos, clusterSize);
                assertThat(ours.allocated()).as("allocated at %d (qemu-img map: %s)", pos, extent).isEqualTo(present);
                if (present) {
                    assertThat(ours.depth()).as("depth at %d (qemu-img map: %s)", pos, extent).isEqualTo(depth);
                }
                if (ours.zero()) {
                    assertThat(extent.path("zero").asBoolean()).as("zero at %d (qemu-img map: %s)", pos, extent).isTrue();
                }
            }
        }
    }

    static void assertSameBytes(byte[] actual, byte[] expected) {
        assertThat(actual.length).isEqualTo(expected.length);
        int mismatch = java.util.Arrays.mismatch(actual, expected);
        assertThat(mismatch).as("first differing byte at offset %d", mismatch).isEqualTo(-1);
    }
}
