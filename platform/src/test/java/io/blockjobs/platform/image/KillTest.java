package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A child JVM writes at random into an overlay and is killed with SIGKILL at a random moment.
 * Every time: {@code qemu-img check} finds no corruption (leaked clusters are allowed), every
 * byte that no operation after the last completed flush touched reads back as the model says,
 * and the image takes writes again.
 */
class KillTest {

    private static final int SIZE = 8 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}-byte clusters, seed {1}")
    @CsvSource({"4096, 1", "4096, 2", "65536, 3", "512, 4", "65536, 5", "4096, 6"})
    void killedWriterLeavesACleanImage(int clusterSize, long seed) throws Exception {
        SplittableRandom random = new SplittableRandom(seed);
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), String.valueOf(SIZE));
        Qemu.io(base, "qcow2", "write -P 0x5a 0 4M");
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, Qcow2CreateOptions.of(SIZE).withClusterSize(clusterSize).withBacking("base.qcow2", "qcow2"));

        int flushEvery = 1 + random.nextInt(8);
        int killAfterFlushes = 1 + random.nextInt(40);
        String java = ProcessHandle.current().info().command().orElse("java");
        Process child = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                KillWriter.class.getName(), top.toString(), String.valueOf(seed), String.valueOf(flushEvery))
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
        long lastFlushed = -1;
        int flushes = 0;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = out.readLine()) != null) {
                lastFlushed = Long.parseLong(line.substring("flushed ".length()));
                if (++flushes == killAfterFlushes) {
                    child.toHandle().destroyForcibly(); // SIGKILL, mid-operation; keeps our end of the pipe open
                }
            }
        }
        assertThat(child.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(flushes).as("the child must have flushed before it was killed").isGreaterThanOrEqualTo(killAfterFlushes);

        Qemu.assertNoCorruption(top);

        // The model after the last flush the child reported; later operations may or may not have landed.
        byte[] model = new byte[SIZE];
        Arrays.fill(model, 0, 4 << 20, (byte) 0x5a);
        for (long i = 0; i <= lastFlushed; i++) {
            KillWriter.op(seed, i, SIZE, clusterSize).applyTo(model, clusterSize);
        }
        boolean[] uncertain = new boolean[SIZE];
        for (long i = lastFlushed + 1; i <= lastFlushed + flushEvery; i++) {
            KillWriter.Op op = KillWriter.op(seed, i, SIZE, clusterSize);
            long from = op.kind() == 2 ? op.offset() / clusterSize * clusterSize : op.offset();
            long to = Math.min(SIZE, op.kind() == 2 ? (op.offset() + op.length() + clusterSize - 1) / clusterSize * clusterSize
                    : op.offset() + op.length());
            Arrays.fill(uncertain, (int) from, (int) to, true);
        }
        byte[] qemuView = Qemu.readAll(top, dir);
        for (int pos = 0; pos < SIZE; pos++) {
            if (!uncertain[pos] && qemuView[pos] != model[pos]) {
                throw new AssertionError("seed " + seed + ": byte " + pos + " reads " + qemuView[pos] + ", expected "
                        + model[pos] + " (last flushed operation " + lastFlushed + ")");
            }
        }

        // The crashed image opens and takes writes; it stays free of corruption.
        try (BlockNode node = Images.open(top, null, true)) {
            byte[] data = new byte[3 * clusterSize];
            Arrays.fill(data, (byte) 0x77);
            node.write(SIZE / 2 + 100, ByteBuffer.wrap(data));
            node.discard(0, SIZE / 4);
        }
        Qemu.assertNoCorruption(top);
    }
}
