package io.blockjobs.platform.graph;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.RequestFlag;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * {@code detect-zeroes} and {@code discard} at the graph's entry, against what QEMU 7.2 left in
 * the same image (the research report's section 5.2: a 4 MiB qcow2 with [0, 2M) written,
 * changed through a writable export, then {@code qemu-img map}). A range is "data", "zero"
 * (reads as zeroes, no storage) or "zero-allocated" (zero flag, storage kept).
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ZeroesAndDiscardTest {
    private static final int M = 1 << 20;

    @TempDir
    Path dir;
    GraphFixture g;
    Path image;

    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        image = g.qcow2("d0.qcow2", 4 * M, null);
        Qemu.io(image, "qcow2", "write -P 0xaa 0 2M");
    }

    @AfterEach
    void close() {
        g.close();
    }

    /** The node {@code d0} with these extra options, and an export writing to it. */
    private Edge open(String options) {
        g.add("""
                {"driver": "qcow2", "node-name": "d0", %s
                 "file": {"driver": "file", "node-name": "f0", "filename": "%s"}}""", options, image);
        return g.export("d0", true);
    }

    /** qemu-img map after the graph closed, as "start+length kind" with like neighbours merged. */
    private List<String> map() {
        g.close();
        JsonNode extents = Qemu.JSON.readTree(Qemu.img("map", "--output=json", image.toString()).out());
        List<long[]> runs = new ArrayList<>();
        List<String> kinds = new ArrayList<>();
        for (JsonNode e : extents) {
            String kind = e.get("data").asBoolean() ? "data" : e.has("offset") ? "zero-allocated" : "zero";
            long start = e.get("start").asLong();
            long length = e.get("length").asLong();
            int last = kinds.size() - 1;
            if (last >= 0 && kinds.get(last).equals(kind)) {
                runs.get(last)[1] += length;
            } else {
                runs.add(new long[] {start, length});
                kinds.add(kind);
            }
        }
        List<String> out = new ArrayList<>();
        for (int i = 0; i < runs.size(); i++) {
            out.add(runs.get(i)[0] / M + "M+" + runs.get(i)[1] / M + "M " + kinds.get(i));
        }
        return out;
    }

    private static void writeZeroData(Edge disk) throws Exception {
        disk.write(0, ByteBuffer.allocate(M));
        disk.write(2 * M, ByteBuffer.allocate(M));
    }

    @Test
    void detectZeroesOffWritesZeroBuffersAsData() throws Exception {
        writeZeroData(open(""));
        assertThat(map()).containsExactly("0M+3M data", "3M+1M zero");
    }

    @Test
    void detectZeroesOnKeepsTheStorageOfAllocatedClusters() throws Exception {
        Edge disk = open("\"detect-zeroes\": \"on\",");
        writeZeroData(disk);
        BlockStatus s = disk.blockStatus(0, M);
        assertThat(s.allocated()).isTrue();
        assertThat(s.zero()).isTrue();
        assertThat(s.length()).isEqualTo(M);
        assertThat(GraphFixture.read(disk, 0, M)).isEqualTo(new byte[M]);
        assertThat(g.node("d0").stats().snapshot().wrOperations()).as("still counted as writes").isEqualTo(2);
        assertThat(map()).containsExactly("0M+1M zero-allocated", "1M+1M data", "2M+2M zero");
    }

    @Test
    void detectZeroesOnIsTheSameWithDiscardUnmap() throws Exception {
        writeZeroData(open("\"detect-zeroes\": \"on\", \"discard\": \"unmap\","));
        assertThat(map()).containsExactly("0M+1M zero-allocated", "1M+1M data", "2M+2M zero");
    }

    @Test
    void detectZeroesUnmapFreesTheClustersAndPassesTheDiscardDown() throws Exception {
        Edge disk = open("\"detect-zeroes\": \"unmap\", \"discard\": \"unmap\",");
        writeZeroData(disk);
        assertThat(disk.blockStatus(0, M).zero()).isTrue();
        assertThat(g.node("f0").stats().snapshot().unmapOperations()).as("freed clusters discarded in the file")
                .isPositive();
        assertThat(map()).containsExactly("0M+1M zero", "1M+1M data", "2M+2M zero");
    }

    @Test
    void discardIgnoreChangesNothing() throws Exception {
        Edge disk = open("\"discard\": \"ignore\",");
        disk.discard(0, M);
        assertThat(GraphFixture.read(disk, 0, 4096)).containsOnly(0xaa);
        assertThat(g.node("f0").stats().snapshot().unmapOperations()).isZero();
        assertThat(map()).containsExactly("0M+2M data", "2M+2M zero");
    }

    @Test
    void discardIsIgnoredByDefault() throws Exception {
        open("").discard(0, M);
        assertThat(map()).containsExactly("0M+2M data", "2M+2M zero");
    }

    @Test
    void discardUnmapZeroesAndFreesTheRange() throws Exception {
        Edge disk = open("\"discard\": \"unmap\",");
        disk.discard(0, M);
        assertThat(GraphFixture.read(disk, 0, M)).isEqualTo(new byte[M]);
        assertThat(g.node("f0").stats().snapshot().unmapOperations()).isPositive();
        assertThat(map()).containsExactly("0M+1M zero", "1M+1M data", "2M+2M zero");
    }

    @Test
    void writeZeroesWithoutMayUnmapKeepTheStorage() throws Exception {
        Edge disk = open("\"discard\": \"unmap\",");
        disk.writeZeroes(0, M, RequestFlag.NONE);
        disk.writeZeroes(2 * M, M, RequestFlag.NONE);
        assertThat(map()).containsExactly("0M+1M zero-allocated", "1M+1M data", "2M+2M zero");
    }

    @Test
    void writeZeroesThatMayUnmapFreeTheStorageWithDiscardUnmap() throws Exception {
        Edge disk = open("\"discard\": \"unmap\",");
        disk.writeZeroes(0, M, Set.of(RequestFlag.MAY_UNMAP));
        assertThat(map()).containsExactly("0M+1M zero", "1M+1M data", "2M+2M zero");
    }
}
