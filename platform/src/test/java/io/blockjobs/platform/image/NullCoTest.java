package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** null-co through a real graph, against what QEMU 7.2's block/null.c does. */
class NullCoTest {
    private final DriverGraph g = new DriverGraph();

    @AfterEach
    void tearDown() {
        g.close();
    }

    @Test
    void defaultsAreAGibibyteThatDropsWritesAndReadsZeroesWithoutClaimingThem() throws IOException {
        GraphNode n = g.add("{\"driver\":\"null-co\",\"node-name\":\"n\"}");
        Edge e = g.user("n");
        assertThat(e.size()).isEqualTo(1L << 30);
        assertThat(n.filename()).isEqualTo("null-co://");
        byte[] data = new byte[4096];
        Arrays.fill(data, (byte) 0x5a);
        e.write(0, ByteBuffer.wrap(data));
        ByteBuffer back = ByteBuffer.wrap(data.clone()); // QEMU would leave these 0x5a bytes
        e.read(0, back);
        assertThat(back.array()).isEqualTo(new byte[4096]);
        // QEMU: BDRV_BLOCK_OFFSET_VALID alone: neither allocated nor known to be zero
        assertThat(e.blockStatus(0, 1L << 30)).isEqualTo(new BlockStatus(0, 1L << 30, false, false, 1));
        assertThat(e.chainStatus(4096, 8192)).isEqualTo(new BlockStatus(4096, 8192, false, false, 1));
        e.writeZeroes(0, 1 << 20, false);
        e.discard(0, 1 << 20);
        e.flush();
        assertThatThrownBy(() -> e.writeZeroes(0, 4096, Set.of(RequestFlag.NO_FALLBACK)))
                .isInstanceOfSatisfying(BlockIoException.class, x -> assertThat(x.errno()).isEqualTo(Errno.ENOTSUP));
    }

    @Test
    void readZeroesMakesTheRangeAllocatedZeroes() throws IOException {
        GraphNode n = g.add("{\"driver\":\"null-co\",\"node-name\":\"n\",\"read-zeroes\":true,\"size\":1048576}");
        Edge e = g.user("n");
        assertThat(e.chainStatus(0, 1 << 20)).isEqualTo(new BlockStatus(0, 1 << 20, true, true, 0));
        assertThat(n.filename()).isEqualTo("json:{\"read-zeroes\": true, \"driver\": \"null-co\", \"size\": 1048576}");
    }

    @Test
    void sizesRoundUpToSectorsAndBadOnesAreRefused() throws IOException {
        GraphNode n = g.add("{\"driver\":\"null-co\",\"node-name\":\"n\",\"size\":1000}");
        assertThat(n.size()).isEqualTo(1024);
        assertThat(n.filename()).isEqualTo("json:{\"driver\": \"null-co\", \"size\": 1000}");
        assertThat(g.add("{\"driver\":\"null-co\",\"node-name\":\"z\",\"size\":0}").size()).isZero();
        assertThat(g.add("{\"driver\":\"null-co\",\"node-name\":\"big\",\"size\":4611686018427387904}").size())
                .isEqualTo(1L << 62);
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"size\":-1}"))
                .isEqualTo("Parameter 'size' expects a non-negative number below 2^64");
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"size\":9223372036854775296}"))
                .isEqualTo("Could not refresh total sector count: File too large");
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"latency-ns\":-5}"))
                .isEqualTo("latency-ns is invalid");
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"read-zeroes\":1}"))
                .isEqualTo("Invalid parameter type for 'read-zeroes', expected: boolean");
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"bogus\":1}"))
                .isEqualTo("Parameter 'bogus' is unexpected");
    }

    @Test
    void onlyTheNullCoFilenameIsTaken() {
        GraphNode n = g.add("{\"driver\":\"null-co\",\"node-name\":\"n\",\"filename\":\"null-co://\",\"latency-ns\":10}");
        assertThat(n.filename()).isEqualTo("null-co://");
        assertThat(g.error("{\"driver\":\"null-co\",\"node-name\":\"m\",\"filename\":\"null-co://x\"}"))
                .isEqualTo("The only allowed filename for this driver is 'null-co://'");
        assertThat(g.add("{\"driver\":\"null-aio\",\"node-name\":\"a\",\"size\":1000}").filename())
                .isEqualTo("json:{\"driver\": \"null-aio\", \"size\": 1000}");
    }

    @Test
    void latencyDelaysReadsWritesAndFlushes() throws IOException {
        g.add("{\"driver\":\"null-co\",\"node-name\":\"n\",\"latency-ns\":50000000}");
        Edge e = g.user("n");
        long start = System.nanoTime();
        e.read(0, ByteBuffer.allocate(512));
        e.write(0, ByteBuffer.allocate(512));
        e.flush();
        assertThat(System.nanoTime() - start).isGreaterThanOrEqualTo(150_000_000L);
        // block status and discards do not wait (a 10 s latency would show)
        g.add("{\"driver\":\"null-co\",\"node-name\":\"s\",\"latency-ns\":10000000000,\"discard\":\"unmap\"}");
        Edge slow = g.user("s");
        long fast = System.nanoTime();
        slow.blockStatus(0, 512);
        slow.discard(0, 512);
        assertThat(System.nanoTime() - fast).isLessThan(5_000_000_000L);
    }
}
