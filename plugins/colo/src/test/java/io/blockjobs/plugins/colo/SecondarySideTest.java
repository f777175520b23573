package io.blockjobs.plugins.colo;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.testkit.MemoryNode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The secondary's copy of old data into the hidden disk (its {@code sync: none} backup), on
 * in-memory nodes: each run of clusters a write overwrites for the first time since the last
 * checkpoint is copied with one read and one write, and whatever the writers race, the hidden disk
 * holds every overwritten cluster as it was at the checkpoint.
 */
class SecondarySideTest {
    static final int CLUSTER = MemoryNode.DEFAULT_CLUSTER_SIZE;
    static final int SIZE = 8 << 20; // 128 clusters: runs cross the 64 stripes' wrap

    MemoryNode disk;
    MemoryNode hidden;
    SecondarySide side;

    private void chain(long seed) {
        disk = new MemoryNode("parent0", SIZE).random(0, SIZE, seed);
        hidden = new MemoryNode("hidden0", SIZE, disk);
        MemoryNode active = new MemoryNode("active0", SIZE, hidden);
        side = new SecondarySide(active, hidden, disk, SIZE);
        disk.addHook(side);
    }

    private static ByteBuffer data(int length, SplittableRandom random) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) random.nextInt(256);
        }
        return ByteBuffer.wrap(b);
    }

    /** The hidden disk holds exactly the clusters in {@code touched}, each as in {@code before}. */
    private void hiddenKeeps(byte[] before, BitSet touched) {
        for (int c = 0; c < SIZE / CLUSTER; c++) {
            long pos = (long) c * CLUSTER;
            assertThat(hidden.isAllocated(pos)).as("cluster %d in the hidden disk", c).isEqualTo(touched.get(c));
            if (touched.get(c)) {
                assertThat(Arrays.equals(hidden.view(pos, CLUSTER), Arrays.copyOfRange(before, (int) pos, (int) pos + CLUSTER)))
                        .as("cluster %d in the hidden disk holds its old data", c).isTrue();
            }
        }
    }

    private static void touch(BitSet touched, long offset, int length) {
        touched.set((int) (offset / CLUSTER), (int) ((offset + length - 1) / CLUSTER) + 1);
    }

    @Test
    void eachRunOfClustersNotYetCopiedIsCopiedWithOneReadAndOneWrite() throws Exception {
        chain(16);
        byte[] before = disk.view();
        SplittableRandom random = new SplittableRandom(1);
        BitSet touched = new BitSet();
        long first = 3L * CLUSTER + 100;
        disk.write(first, data(1 << 20, random)); // clusters 3..19: one run
        touch(touched, first, 1 << 20);
        assertThat(hidden.writes()).isEqualTo(1);
        disk.write(0, data(2 << 20, random)); // clusters 0..31: 0..2 and 20..31 are left
        touch(touched, 0, 2 << 20);
        assertThat(hidden.writes()).isEqualTo(3);
        long wrap = 60L * CLUSTER;
        disk.write(wrap, data(1 << 20, random)); // clusters 60..75, across the stripes' wrap
        touch(touched, wrap, 1 << 20);
        assertThat(hidden.writes()).isEqualTo(4);
        disk.write(4L * CLUSTER, data(512, random)); // copied already: nothing to copy
        assertThat(hidden.writes()).isEqualTo(4);
        hiddenKeeps(before, touched);
        assertThat(side.error()).isNull();
    }

    @Test
    void aRunIsCutAtFourMebibytes() throws Exception {
        chain(17);
        byte[] before = disk.view();
        BitSet touched = new BitSet();
        disk.write(0, data(6 << 20, new SplittableRandom(2))); // 96 clusters: 64, then 32
        touch(touched, 0, 6 << 20);
        assertThat(hidden.writes()).isEqualTo(2);
        assertThat(hidden.bytesWritten()).isEqualTo(6 << 20);
        hiddenKeeps(before, touched);
        assertThat(side.error()).isNull();
    }

    /** Writers racing over overlapping runs, across a checkpoint: every cluster's old data is kept, and none waits forever. */
    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3})
    void racingWritersKeepEveryOverwrittenClustersOldData(long seed) throws Exception {
        chain(seed);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try {
            for (int round = 0; round < 2; round++) {
                byte[] before = disk.view();
                BitSet touched = new BitSet();
                CountDownLatch go = new CountDownLatch(1);
                List<Future<List<long[]>>> writers = new ArrayList<>();
                for (int w = 0; w < 8; w++) {
                    SplittableRandom random = new SplittableRandom(seed * 1000 + round * 100 + w);
                    writers.add(pool.submit(() -> {
                        List<long[]> done = new ArrayList<>();
                        go.await();
                        for (int i = 0; i < 40; i++) {
                            int length = 1 + random.nextInt(12 * CLUSTER);
                            long offset = random.nextLong(SIZE - length + 1);
                            disk.write(offset, data(length, random));
                            done.add(new long[] {offset, length});
                        }
                        return done;
                    }));
                }
                go.countDown();
                for (Future<List<long[]>> f : writers) {
                    for (long[] w : f.get(1, TimeUnit.MINUTES)) {
                        touch(touched, w[0], (int) w[1]);
                    }
                }
                hiddenKeeps(before, touched);
                side.checkpoint(); // the hidden disk empties; the next round copies afresh
                assertThat(hidden.allocatedBytes()).isZero();
            }
        } finally {
            pool.shutdownNow();
        }
        assertThat(side.error()).isNull();
    }
}
