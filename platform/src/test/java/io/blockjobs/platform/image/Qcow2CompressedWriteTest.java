package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import tools.jackson.databind.JsonNode;

/**
 * Compressed writes into qcow2 ({@link RequestFlag#WRITE_COMPRESSED}, backup's {@code compress}):
 * QEMU reads them back ({@code qemu-img compare}), counts their refcounts right
 * ({@code qemu-img check}) and counts them as compressed, and they take less room than the data.
 */
class Qcow2CompressedWriteTest {
    private static final Set<RequestFlag> COMPRESSED = Set.of(RequestFlag.WRITE_COMPRESSED);

    @TempDir
    Path dir;

    /** Compressible data: text-like runs of a few bytes, seeded. */
    private static byte[] text(int length, int seed) {
        byte[] b = new byte[length];
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < length; i++) {
            b[i] = (byte) ('a' + r.nextInt(6));
        }
        return b;
    }

    @ParameterizedTest
    @ValueSource(ints = {4096, 65536, 2 * 1024 * 1024})
    void compressedClustersReadBackInQemuAndCheckClean(int clusterSize) throws Exception {
        Path img = dir.resolve("c.qcow2");
        long size = 32L << 20;
        Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=" + clusterSize, img.toString(), String.valueOf(size - 1024));
        size -= 1024; // a last, partial cluster
        Path model = dir.resolve("model.raw");
        byte[] all = new byte[(int) size];
        try (DriverGraph g = new DriverGraph()) {
            g.add("""
                    {"driver": "qcow2", "node-name": "c", "file": {"driver": "file", "filename": "%s"}}""".formatted(img));
            Edge c = g.user("c");
            assertThat(c.supportsCompressedWrites()).isTrue();
            // Compressible clusters, an incompressible one (written plainly), and the last, partial one.
            int n = (int) Math.min(8L << 20, size) / clusterSize * clusterSize;
            byte[] t = text(n, 1);
            c.write(0, ByteBuffer.wrap(t), COMPRESSED);
            System.arraycopy(t, 0, all, 0, n);
            byte[] noise = new byte[clusterSize];
            new SplittableRandom(2).nextBytes(noise);
            long at = 16L << 20;
            c.write(at, ByteBuffer.wrap(noise), COMPRESSED);
            System.arraycopy(noise, 0, all, (int) at, clusterSize);
            long lastStart = (size - 1) / clusterSize * clusterSize;
            byte[] tail = text((int) (size - lastStart), 3);
            c.write(lastStart, ByteBuffer.wrap(tail), COMPRESSED);
            System.arraycopy(tail, 0, all, (int) lastStart, tail.length);
            // A plain write over a compressed cluster replaces it (copy-on-write of the rest).
            byte[] over = text(512, 4);
            c.write(clusterSize + 100, ByteBuffer.wrap(over));
            System.arraycopy(over, 0, all, clusterSize + 100, 512);
            ByteBuffer back = ByteBuffer.allocate(n);
            c.read(0, back);
            assertThat(back.array()).isEqualTo(java.util.Arrays.copyOf(all, n));
            assertThatThrownBy(() -> c.write(512, ByteBuffer.wrap(new byte[clusterSize]), COMPRESSED))
                    .isInstanceOf(BlockIoException.class)
                    .satisfies(e -> assertThat(((BlockIoException) e).errno()).isEqualTo(Errno.EINVAL));
        }
        Files.write(model, all);
        Qemu.assertClean(img);
        assertThat(Qemu.identical(img, "qcow2", model, "raw")).isTrue();
        JsonNode check = Qemu.JSON.readTree(Qemu.check(img).out());
        assertThat(check.get("compressed-clusters").asLong()).as("qemu-img check counts compressed clusters")
                .isGreaterThanOrEqualTo(Math.min(8L << 20, 32L << 20) / clusterSize);
        if (clusterSize <= 65536) { // 2 MiB clusters hold only a few compressed ones each
            assertThat(Files.size(img)).as("compressed text takes less room than its 8 MiB")
                    .isLessThan(6L << 20);
        }
    }

    @org.junit.jupiter.api.Test
    void rawNodesRefuseCompressedWrites() throws Exception {
        Path img = dir.resolve("r.raw");
        Qemu.img("create", "-f", "raw", img.toString(), "1M");
        try (DriverGraph g = new DriverGraph()) {
            g.add("""
                    {"driver": "raw", "node-name": "r", "file": {"driver": "file", "filename": "%s"}}""".formatted(img));
            Edge r = g.user("r");
            assertThat(r.supportsCompressedWrites()).isFalse();
            assertThatThrownBy(() -> r.write(0, ByteBuffer.wrap(new byte[65536]), COMPRESSED))
                    .isInstanceOf(BlockIoException.class)
                    .satisfies(e -> assertThat(((BlockIoException) e).errno()).isEqualTo(Errno.ENOTSUP));
        }
    }
}
