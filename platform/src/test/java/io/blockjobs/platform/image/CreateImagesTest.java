package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import tools.jackson.databind.JsonNode;

/** Images created by blockjobs are what qemu-img create would make, and QEMU uses them. */
class CreateImagesTest {

    @TempDir
    Path dir;

    static Stream<Arguments> layouts() {
        return Stream.of(2, 3).flatMap(v -> Stream.of(512, 4096, 65536, 2 << 20).map(cs -> Arguments.of(v, cs)));
    }

    @ParameterizedTest(name = "v{0}, {1}-byte clusters")
    @MethodSource("layouts")
    void qemuReadsWhatWeCreateAndWrite(int version, int clusterSize) throws IOException {
        long size = 32L << 20;
        Path base = dir.resolve("base.qcow2");
        Images.createQcow2(base, Qcow2CreateOptions.of(size).withVersion(version).withClusterSize(clusterSize));
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, new Qcow2CreateOptions(-1, clusterSize, version, "base.qcow2", null, 16));

        JsonNode info = Qemu.info(top);
        assertThat(info.path("virtual-size").asLong()).isEqualTo(size);
        assertThat(info.path("cluster-size").asInt()).isEqualTo(clusterSize);
        assertThat(info.path("backing-filename").asString()).isEqualTo("base.qcow2");
        assertThat(info.path("backing-filename-format").asString()).isEqualTo("qcow2");
        assertThat(info.path("format-specific").path("data").path("compat").asString())
                .isEqualTo(version == 2 ? "0.10" : "1.1");
        Qemu.assertClean(base);
        Qemu.assertClean(top);

        // QEMU writes into our images, we write too, and both agree on the result.
        Qemu.io(base, "qcow2", "write -P 0x61 0 1M", "write -P 0x62 5M 3M");
        try (BlockNode node = Images.open(top, null, true)) {
            byte[] data = new byte[3 << 20];
            Arrays.fill(data, (byte) 0x71);
            node.write((4L << 20) + 1000, ByteBuffer.wrap(data));
        }
        Qemu.io(top, "qcow2", "write -P 0x81 " + (30L << 20) + " 64k", "read -P 0x61 0 1M", "read -P 0x71 5M 1M");
        Qemu.assertClean(base);
        Qemu.assertClean(top);
        byte[] qemuView = Qemu.readAll(top, dir);
        try (BlockNode node = Images.open(top, null, false)) {
            byte[] ours = new byte[(int) size];
            node.read(0, ByteBuffer.wrap(ours));
            QemuMadeImagesTest.assertSameBytes(ours, qemuView);
        }
    }

    @Test
    void refcountTableGrowsAsSmallClustersFillAHugeDisk() throws IOException {
        // 4 KiB clusters: one refcount block covers 8 MiB, one table cluster 4 GiB. A 2 TiB disk
        // needs an 8 MiB L1 table, so creating it already grows the refcount structures.
        Path image = dir.resolve("huge.qcow2");
        Images.createQcow2(image, Qcow2CreateOptions.of(2L << 40).withClusterSize(4096));
        Qemu.assertClean(image);
        // 512-byte clusters: each refcount table cluster covers only 8 MiB of file.
        Path small = dir.resolve("small-clusters.qcow2");
        int size = 24 << 20;
        Images.createQcow2(small, Qcow2CreateOptions.of(size).withClusterSize(512));
        byte[] model = new byte[size];
        try (BlockNode node = Images.open(small, null, true)) {
            byte[] chunk = new byte[1 << 20];
            for (int pos = 0; pos < size; pos += chunk.length) {
                Arrays.fill(chunk, (byte) (pos >> 20));
                node.write(pos, ByteBuffer.wrap(chunk));
                System.arraycopy(chunk, 0, model, pos, chunk.length);
            }
        }
        JsonNode info = Qemu.info(small);
        assertThat(info.path("actual-size").asLong()).isGreaterThan(size);
        Qemu.assertClean(small);
        Path raw = dir.resolve("model.raw");
        Files.write(raw, model);
        assertThat(Qemu.identical(small, "qcow2", raw, "raw")).isTrue();
    }

    @Test
    void rawImagesAreSparseFilesOfTheirSize() throws IOException {
        Path raw = dir.resolve("disk.raw");
        Images.createRaw(raw, 10L << 20);
        assertThat(Files.size(raw)).isEqualTo(10L << 20);
        try (BlockNode node = Images.open(raw, null, true)) {
            assertThat(node.driver()).isEqualTo("raw");
            node.write(4096, ByteBuffer.wrap(new byte[] {1, 2, 3}));
            // As QEMU's raw without 'size', a request past the end goes through to the file (a
            // format above it grows it so); the graph's root edges keep users inside the disk.
            node.write((10L << 20) - 1, ByteBuffer.wrap(new byte[2]));
        }
        assertThat(Files.size(raw)).isEqualTo((10L << 20) + 1);
        Qemu.io(raw, "raw", "read -P 0 0 4096", "read -P 1 4096 1");
    }

    @Test
    void badCreateOptionsAreRefused() {
        Path image = dir.resolve("bad.qcow2");
        assertThatThrownBy(() -> Images.createQcow2(image, Qcow2CreateOptions.of(1 << 20).withClusterSize(3000)))
                .hasMessageContaining("cluster size 3000");
        assertThatThrownBy(() -> Images.createQcow2(image, Qcow2CreateOptions.of(1000)))
                .hasMessageContaining("multiple of 512");
        assertThatThrownBy(() -> Images.createQcow2(image, Qcow2CreateOptions.of(1 << 20).withBacking("missing.qcow2", null)))
                .hasMessageContaining("missing.qcow2").hasMessageContaining("no such file");
    }
}
