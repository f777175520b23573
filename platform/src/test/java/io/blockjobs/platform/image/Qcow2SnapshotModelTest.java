package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.LongStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Internal snapshots under seeded random sequences of write, compressed write, write-zeroes,
 * discard, reopen, snapshot and snapshot delete on a qcow2 overlay (over a QEMU-made base): the
 * active layer is checked against a model after every read, and at the end {@code qemu-img check}
 * must find the image clean and {@code qemu-img convert -l snapshot.id=N} must give each
 * snapshot's model. Some seeds delete every snapshot at the end: then nothing may leak.
 */
class Qcow2SnapshotModelTest {
    private static final int SIZE = 4 << 20;

    @TempDir
    Path dir;

    static Stream<Arguments> cases() {
        return Stream.of(
                        new int[] {65536, 3, 16}, new int[] {4096, 3, 16}, new int[] {512, 3, 2},
                        new int[] {65536, 2, 16}, new int[] {2048, 3, 64})
                .flatMap(c -> LongStream.rangeClosed(1, 2).mapToObj(seed ->
                        Arguments.of(c[0], c[1], c[2], seed * 104729 + c[0] + c[2])));
    }

    @ParameterizedTest(name = "clusters {0}, v{1}, refcount bits {2}, seed {3}")
    @MethodSource("cases")
    void snapshotsKeepTheirDisk(int clusterSize, int version, int refcountBits, long seed) throws IOException {
        SplittableRandom random = new SplittableRandom(seed);
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), String.valueOf(SIZE));
        Qemu.io(base, "qcow2", "write -P 0x5a 0 " + SIZE / 2);
        byte[] backing = new byte[SIZE];
        Arrays.fill(backing, 0, SIZE / 2, (byte) 0x5a);
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(top, new Qcow2CreateOptions(SIZE, clusterSize, version, "base.qcow2", "qcow2", refcountBits));
        byte[] model = backing.clone();
        Map<String, byte[]> snapshots = new LinkedHashMap<>(); // by id
        int maxSnapshots = refcountBits == 2 ? 2 : 6; // 2-bit refcounts count to 3

        Qcow2Node node = (Qcow2Node) Images.open(top, null, true);
        try {
            for (int step = 0; step < 250; step++) {
                int op = random.nextInt(100);
                long offset = random.nextInt(SIZE) / 512 * 512L + (random.nextBoolean() ? 0 : random.nextInt(512));
                offset = Math.min(offset, SIZE - 1);
                int length = (int) Math.min(SIZE - offset, 1 + random.nextInt(3 * clusterSize + 5000));
                if (op < 35) {
                    byte[] data = new byte[length];
                    random.nextBytes(data);
                    node.write(offset, ByteBuffer.wrap(data));
                    System.arraycopy(data, 0, model, (int) offset, length);
                } else if (op < 45) {
                    long at = offset / clusterSize * clusterSize;
                    int n = (int) Math.min(SIZE - at, clusterSize * (1 + random.nextInt(3)));
                    byte[] data = new byte[n];
                    Arrays.fill(data, (byte) random.nextInt(4)); // compresses well
                    node.write(at, ByteBuffer.wrap(data), Set.of(RequestFlag.WRITE_COMPRESSED));
                    System.arraycopy(data, 0, model, (int) at, n);
                } else if (op < 58) {
                    boolean unmap = random.nextBoolean();
                    node.writeZeroes(offset, length, unmap);
                    Arrays.fill(model, (int) offset, (int) offset + length, (byte) 0);
                } else if (op < 66) {
                    node.discard(offset, length);
                    discard(model, backing, offset, length, clusterSize, version);
                } else if (op < 78) {
                    byte[] got = new byte[length];
                    node.read(offset, ByteBuffer.wrap(got));
                    assertThat(Arrays.mismatch(got, 0, length, model, (int) offset, (int) offset + length))
                            .as("seed %d step %d: read [%d,+%d) differs at", seed, step, offset, length).isEqualTo(-1);
                } else if (op < 88) {
                    if (snapshots.size() < maxSnapshots) {
                        Qcow2Node.InternalSnapshot sn = node.createSnapshot("s" + step, step, 0, step);
                        snapshots.put(sn.id(), model.clone());
                    }
                } else if (op < 95) {
                    if (!snapshots.isEmpty()) {
                        List<String> ids = new ArrayList<>(snapshots.keySet());
                        String id = ids.get(random.nextInt(ids.size()));
                        node.deleteSnapshot(id, null);
                        snapshots.remove(id);
                    }
                } else {
                    node.close();
                    node = (Qcow2Node) Images.open(top, null, true);
                    assertThat(node.snapshots()).extracting(Qcow2Node.InternalSnapshot::id)
                            .containsExactlyElementsOf(snapshots.keySet());
                }
            }
            if (seed % 2 == 0) {
                for (String id : new ArrayList<>(snapshots.keySet())) {
                    node.deleteSnapshot(id, null);
                    snapshots.remove(id);
                }
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
        assertThat(Qemu.identical(top, "qcow2", reference, "raw")).as("active layer, seed %d", seed).isTrue();
        for (var e : snapshots.entrySet()) {
            Path ref = dir.resolve("snapshot-" + e.getKey() + ".raw");
            Files.write(ref, e.getValue());
            Path got = dir.resolve("got-" + e.getKey() + ".raw");
            Qemu.img("convert", "-l", "snapshot.id=" + e.getKey(), "-O", "raw", top.toString(), got.toString());
            assertThat(Qemu.identical(got, "raw", ref, "raw")).as("snapshot %s, seed %d", e.getKey(), seed).isTrue();
        }
        String list = Qemu.img("snapshot", "-l", top.toString()).out();
        for (String id : snapshots.keySet()) {
            assertThat(list).containsPattern("(?m)^" + id + "\\s+s\\d+\\s");
        }
    }

    /**
     * Snapshots taken while four threads write, each its own 1 MiB in 16 KiB chunks (parts of
     * 64 KiB clusters, so the copies keep the rest), three passes of versions 1 to 3: each
     * snapshot shows, in each region, a state its writer passed through, no chunk torn.
     */
    @Test
    void snapshotsWhileWriting() throws Exception {
        Path img = dir.resolve("busy.qcow2");
        Images.createQcow2(img, new Qcow2CreateOptions(SIZE, 65536, 3, null, null, 16));
        int chunk = 16 << 10;
        int region = 1 << 20;
        int chunks = region / chunk;
        List<String> ids = new ArrayList<>();
        Qcow2Node node = (Qcow2Node) Images.open(img, null, true);
        try {
            List<Thread> writers = new ArrayList<>();
            List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
            for (int w = 0; w < 4; w++) {
                int r = w;
                writers.add(Thread.ofPlatform().start(() -> {
                    try {
                        for (int pass = 1; pass <= 3; pass++) {
                            byte[] data = new byte[chunk];
                            Arrays.fill(data, (byte) pass);
                            for (int c = 0; c < chunks; c++) {
                                node.write((long) r * region + (long) c * chunk, ByteBuffer.wrap(data));
                            }
                        }
                    } catch (Throwable t) {
                        failures.add(t);
                    }
                }));
            }
            while (writers.stream().anyMatch(Thread::isAlive) && ids.size() < 30) {
                ids.add(node.createSnapshot("w" + ids.size(), 0, 0, 0).id());
            }
            for (Thread t : writers) {
                t.join();
            }
            ids.add(node.createSnapshot("last", 0, 0, 0).id());
            assertThat(failures).isEmpty();
        } finally {
            node.close();
        }
        Qemu.assertClean(img);
        int[] before = new int[4];
        for (String id : ids) {
            Path got = dir.resolve("w" + id + ".raw");
            Qemu.img("convert", "-l", "snapshot.id=" + id, "-O", "raw", img.toString(), got.toString());
            byte[] data = Files.readAllBytes(got);
            Files.delete(got);
            for (int r = 0; r < 4; r++) {
                int done = 0;
                int first = data[r * region];
                int previous = first;
                for (int c = 0; c < chunks; c++) {
                    int off = r * region + c * chunk;
                    int v = data[off];
                    for (int i = off; i < off + chunk; i++) {
                        assertThat(data[i]).as("snapshot %s region %d chunk %d torn", id, r, c).isEqualTo((byte) v);
                    }
                    assertThat(v).as("snapshot %s region %d chunk %d", id, r, c).isBetween(first - 1, previous);
                    previous = v;
                    done += v;
                }
                assertThat(done).as("snapshot %s region %d after the one before", id, r).isGreaterThanOrEqualTo(before[r]);
                before[r] = done;
            }
        }
        assertThat(before).as("the last snapshot came after every write").containsOnly(3 * chunks);
    }

    /**
     * A v3 image with a snapshot shrinks and grows (QEMU 7.2 allows it): the active layer drops
     * and regains its tail, the snapshot keeps its size and data; a v2 image with a snapshot
     * refuses with QEMU's message.
     */
    @Test
    void resizeWithSnapshots() throws IOException {
        Path img = dir.resolve("resize.qcow2");
        Qemu.img("create", "-f", "qcow2", img.toString(), String.valueOf(SIZE));
        Qemu.io(img, "qcow2", "write -P 0x61 0 " + SIZE);
        Qemu.img("snapshot", "-c", "full", img.toString());
        Qcow2Node node = (Qcow2Node) Images.open(img, null, true);
        try {
            node.truncate(SIZE / 2);
            node.truncate(SIZE * 2L);
            byte[] data = new byte[70000];
            Arrays.fill(data, (byte) 0x62);
            node.write(SIZE - 1000, ByteBuffer.wrap(data));
        } finally {
            node.close();
        }
        Qemu.assertClean(img);
        byte[] expected = new byte[SIZE * 2];
        Arrays.fill(expected, 0, SIZE / 2, (byte) 0x61);
        Arrays.fill(expected, SIZE - 1000, SIZE - 1000 + 70000, (byte) 0x62);
        Path ref = dir.resolve("active.raw");
        Files.write(ref, expected);
        assertThat(Qemu.identical(img, "qcow2", ref, "raw")).as("active layer").isTrue();
        Path got = dir.resolve("full.raw");
        Qemu.img("convert", "-l", "snapshot.name=full", "-O", "raw", img.toString(), got.toString());
        byte[] full = new byte[SIZE * 2]; // qemu-img reads a snapshot at the image's size now (as after its own resize)
        Arrays.fill(full, 0, SIZE, (byte) 0x61);
        assertThat(Arrays.mismatch(Files.readAllBytes(got), full)).as("the snapshot differs at").isEqualTo(-1);

        Path v2 = dir.resolve("v2.qcow2");
        Qemu.img("create", "-f", "qcow2", "-o", "compat=0.10", v2.toString(), String.valueOf(SIZE));
        Qemu.img("snapshot", "-c", "s", v2.toString());
        Qcow2Node old = (Qcow2Node) Images.open(v2, null, true);
        try {
            assertThatThrownBy(() -> old.truncate(SIZE * 2L)).hasMessage("Can't resize a v2 image which has snapshots");
        } finally {
            old.close();
        }
        Qemu.assertClean(v2);
    }

    /**
     * QEMU writes into an image after blockjobd took a snapshot of it, and after blockjobd
     * deleted it: QEMU goes by the COPIED flags blockjobd left, so the snapshot keeps its data and
     * the image stays clean either way.
     */
    @Test
    void qemuWritesAfterOurSnapshots() throws IOException {
        Path img = dir.resolve("mixed.qcow2");
        Qemu.img("create", "-f", "qcow2", img.toString(), String.valueOf(SIZE));
        Qemu.io(img, "qcow2", "write -P 0x71 0 3M", "write -c -P 0x72 3M 256k");
        Path before = dir.resolve("before.raw");
        Qemu.img("convert", "-O", "raw", img.toString(), before.toString());
        try (Qcow2Node node = (Qcow2Node) Images.open(img, null, true)) {
            node.createSnapshot("ours", 1, 0, 1);
            node.createSnapshot("ours2", 2, 0, 2);
        }
        Qemu.io(img, "qcow2", "write -P 0x73 100k 1M", "write -P 0x74 3M 64k", "write -z 2M 128k");
        Qemu.assertClean(img);
        for (String name : List.of("ours", "ours2")) {
            Path got = dir.resolve(name + ".raw");
            Qemu.img("convert", "-l", "snapshot.name=" + name, "-O", "raw", img.toString(), got.toString());
            assertThat(Qemu.identical(got, "raw", before, "raw")).as(name).isTrue();
        }
        try (Qcow2Node node = (Qcow2Node) Images.open(img, null, true)) {
            node.deleteSnapshot(null, "ours2");
            node.deleteSnapshot(null, "ours");
        }
        Qemu.assertClean(img);
        Qemu.io(img, "qcow2", "write -P 0x75 0 4M");
        Qemu.assertClean(img);
        assertThat(Qemu.check(img).out()).doesNotContain("Leaked");
        Qemu.io(img, "qcow2", "read -P 0x75 0 4M");
    }

    /** 1-bit refcounts cannot count a second reference: the snapshot is refused and nothing changes. */
    @Test
    void oneBitRefcountsRefuseSnapshots() throws IOException {
        Path img = dir.resolve("one.qcow2");
        Images.createQcow2(img, new Qcow2CreateOptions(SIZE, 65536, 3, null, null, 1));
        Qcow2Node node = (Qcow2Node) Images.open(img, null, true);
        try {
            node.write(0, ByteBuffer.wrap(new byte[70000]));
            assertThatThrownBy(() -> node.createSnapshot("s", 0, 0, 0)).hasMessage("Invalid argument");
            assertThat(node.snapshots()).isEmpty();
        } finally {
            node.close();
        }
        Qemu.assertClean(img);
    }

    private static void discard(byte[] model, byte[] backing, long offset, int length, int clusterSize, int version) {
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
