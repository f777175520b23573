package io.blockjobs.platform.bitmap;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.RequestFlag;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import tools.jackson.databind.node.ObjectNode;

/**
 * Persistent bitmaps of a real qcow2 node against models, through the graph: seeded random
 * writes, write-zeroes and discards through the node, clears, enables and disables, and
 * reopens ({@code blockdev-del}, which stores, then {@code blockdev-add}, which loads). After
 * every reopen the bits are the model's, and {@code qemu-img check} finds the image clean.
 */
class BitmapReopenModelTest {
    private static final long SIZE = 32L << 20;

    @TempDir
    Path dir;

    private GraphNode open(BlockGraph graph, Path image) {
        ObjectNode o = Json.object().put("driver", "qcow2").put("node-name", "disk").put("discard", "unmap");
        o.putObject("file").put("driver", "file").put("filename", image.toString());
        return graph.add(o);
    }

    @ParameterizedTest
    @ValueSource(longs = {7, 99, 2024})
    void bitsSurviveEveryReopen(long seed) throws Exception {
        Random r = new Random(seed);
        Path image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), String.valueOf(SIZE));
        int[] granularityBits = {9, 16, 20};
        String[] names = {"fine", "dflt", "coarse"};
        BitSet[] model = {new BitSet(), new BitSet(), new BitSet()};
        boolean[] enabled = {true, true, true};
        try (BlockGraph graph = BlockGraph.withBuiltInDrivers()) {
            Bitmaps bitmaps = new Bitmaps(graph);
            GraphNode node = open(graph, image);
            for (int i = 0; i < names.length; i++) {
                bitmaps.add("disk", names[i], Optional.of(1L << granularityBits[i]), true, false);
            }
            for (int step = 0; step < 120; step++) {
                long off = (long) r.nextInt((int) (SIZE >> 9)) << 9;
                long len = Math.min(SIZE - off, 512L * (1 + r.nextInt(2048)));
                int i = r.nextInt(names.length);
                switch (r.nextInt(8)) {
                    case 0, 1, 2 -> {
                        node.write(off, ByteBuffer.allocate((int) len));
                        mark(model, enabled, granularityBits, off, len);
                    }
                    case 3 -> {
                        node.writeZeroes(off, len, Set.<RequestFlag>of());
                        mark(model, enabled, granularityBits, off, len);
                    }
                    case 4 -> {
                        node.discard(off, len);
                        mark(model, enabled, granularityBits, off, len);
                    }
                    case 5 -> {
                        bitmaps.clear("disk", names[i]);
                        model[i].clear();
                    }
                    case 6 -> {
                        enabled[i] = !enabled[i];
                        bitmaps.setEnabled("disk", names[i], enabled[i]);
                    }
                    default -> {
                        graph.delete("disk", n -> null);
                        assertThat(Qemu.check(image).exit()).as("seed %d step %d: clean when stored", seed, step).isZero();
                        node = open(graph, image);
                    }
                }
                for (int j = 0; j < names.length; j++) {
                    Bitmap b = bitmaps.lookup("disk", names[j]);
                    assertThat(b.count()).as("seed %d step %d %s", seed, step, names[j])
                            .isEqualTo((long) model[j].cardinality() << granularityBits[j]);
                    assertThat(b.enabled()).isEqualTo(enabled[j]);
                    assertThat(b.inconsistent()).isFalse();
                    if (step % 20 == 0) {
                        assertThat(b.sha256()).isEqualTo(sha256(model[j], (SIZE + (1L << granularityBits[j]) - 1) >>> granularityBits[j]));
                    }
                }
            }
        }
        Qemu.assertClean(image);
    }

    private static void mark(BitSet[] model, boolean[] enabled, int[] bits, long off, long len) {
        for (int j = 0; j < model.length; j++) {
            if (enabled[j]) {
                model[j].set((int) (off >>> bits[j]), (int) ((off + len + (1L << bits[j]) - 1) >>> bits[j]));
            }
        }
    }

    private static String sha256(BitSet model, long granules) throws Exception {
        byte[] all = new byte[(int) (Math.max(1, (granules + 63) / 64) * 8)];
        byte[] raw = model.toByteArray();
        System.arraycopy(raw, 0, all, 0, raw.length);
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(all));
    }
}
