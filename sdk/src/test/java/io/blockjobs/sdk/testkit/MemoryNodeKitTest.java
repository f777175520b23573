package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The test kit's in-memory node behaves as the platform's qcow2 node does. */
class MemoryNodeKitTest {
    private static final int C = MemoryNode.DEFAULT_CLUSTER_SIZE;

    private static MemoryNode base() {
        return new MemoryNode("base", 8L * C).fill(0, 8L * C, (byte) 1).readOnly();
    }

    private static byte[] bytes(int n, int value) {
        byte[] b = new byte[n];
        java.util.Arrays.fill(b, (byte) value);
        return b;
    }

    @Test
    void aPartialWriteToAnUnallocatedClusterCopiesTheRestFromTheBacking() throws Exception {
        MemoryNode top = new MemoryNode("top", 8L * C, base());
        top.write(C + 100, ByteBuffer.wrap(bytes(10, 2)));
        assertThat(top.isAllocated(C)).isTrue();
        byte[] cluster = top.view(C, C);
        assertThat(cluster[99]).isEqualTo((byte) 1);
        assertThat(cluster[100]).isEqualTo((byte) 2);
        assertThat(cluster[110]).isEqualTo((byte) 1);
        assertThat(top.blockStatus(0, 8L * C)).isEqualTo(new BlockStatus(0, C, false, false, 1));
        assertThat(top.blockStatus(C, 8L * C)).isEqualTo(new BlockStatus(C, C, true, false, 0));
        assertThat(top.chainStatus(0, C)).isEqualTo(new BlockStatus(0, C, true, false, 1));
    }

    @Test
    void copyOnReadWritesOnlyWhereTheLayerHoldsNothing() throws Exception {
        MemoryNode top = new MemoryNode("top", 8L * C, base());
        top.write(C, ByteBuffer.wrap(bytes(C, 2)));
        top.writeUnallocated(0, ByteBuffer.wrap(bytes(3 * C, 9)));
        assertThat(top.view(0, 1)).containsExactly(9);
        assertThat(top.view(C, 1)).as("a write since wins").containsExactly(2);
        assertThat(top.view(2L * C, 1)).containsExactly(9);
        top.writeUnallocated(4L * C + 10, ByteBuffer.wrap(bytes(10, 7))); // part of a cluster: the rest from below
        assertThat(top.view(4L * C + 9, 12)).containsExactly(1, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1);
    }

    @Test
    void discardZeroesWholeClustersAndKeepsTheRest() throws Exception {
        MemoryNode top = new MemoryNode("top", 8L * C, base());
        top.write(0, ByteBuffer.wrap(bytes(4 * C, 2)));
        top.discard(100, 2L * C);
        assertThat(top.view(0, 1)).as("the head is kept").containsExactly(2);
        assertThat(top.view(C, 1)).as("a whole cluster reads zeroes").containsExactly(0);
        assertThat(top.blockStatus(C, C).zero()).isTrue();
        assertThat(top.view(2L * C, 1)).as("the tail is kept").containsExactly(2);
    }

    @Test
    void fastZeroesOnlyWholeClustersAndFuaFlushes() throws Exception {
        MemoryNode n = new MemoryNode("n", 4L * C).fill(0, 4L * C, (byte) 5);
        assertThatThrownBy(() -> n.writeZeroes(10, C, Set.of(RequestFlag.NO_FALLBACK)))
                .isInstanceOf(BlockIoException.class).hasMessage("n: fast zero is not supported")
                .extracting(e -> ((BlockIoException) e).errno()).isEqualTo(Errno.ENOTSUP);
        assertThat(n.view(10, 1)).as("nothing done").containsExactly(5);
        int flushes = n.flushes();
        n.writeZeroes(C, 2L * C, EnumSet.of(RequestFlag.NO_FALLBACK, RequestFlag.FUA, RequestFlag.MAY_UNMAP));
        assertThat(n.view(C, 2 * C)).containsOnly(0);
        assertThat(n.flushes()).isEqualTo(flushes + 1);
        assertThat(n.hasUnflushedWrites()).isFalse();
        n.writeZeroes(3L * C + 1, 10, false);
        assertThat(n.view(3L * C, 12)).containsExactly(5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5);
        assertThat(n.hasUnflushedWrites()).isTrue();
    }

    @Test
    void unallocateReadsFromTheBackingAgain() throws Exception {
        MemoryNode top = new MemoryNode("top", 8L * C, base()).fill(0, 2L * C, (byte) 3);
        top.unallocate(0, C + 5);
        assertThat(top.view(0, 1)).containsExactly(1);
        assertThat(top.view(C, 1)).as("a part of a cluster stays").containsExactly(3);
    }

    @Test
    void faultsFailRequestsOnceOrAlwaysWithTheirErrno() throws Exception {
        MemoryNode base = base();
        MemoryNode top = new MemoryNode("top", 8L * C, base);
        Fault once = base.failReadOnce(C + 1, Errno.EIO);
        assertThatThrownBy(() -> top.read(C, ByteBuffer.allocate(C))).isInstanceOf(BlockIoException.class)
                .hasMessageContaining("Input/output error");
        top.read(C, ByteBuffer.allocate(C)); // once
        assertThat(once.hits()).isEqualTo(1);
        assertThat(once.active()).isFalse();
        Fault always = top.failWrites(2L * C, Errno.ENOSPC);
        for (int i = 0; i < 2; i++) {
            assertThatThrownBy(() -> top.writeZeroes(2L * C, C, true))
                    .satisfies(e -> assertThat(Errno.of(e)).isEqualTo(Errno.ENOSPC));
        }
        assertThat(always.hits()).isEqualTo(2);
        always.remove();
        top.writeZeroes(2L * C, C, true);
    }

    @Test
    void readOnlyNodesRefuseWrites() {
        MemoryNode base = base();
        assertThatThrownBy(() -> base.write(0, ByteBuffer.allocate(1))).hasMessage("base: Block node is read-only")
                .satisfies(e -> assertThat(Errno.of(e)).isEqualTo(Errno.EPERM));
        assertThatThrownBy(() -> base.read(8L * C - 1, ByteBuffer.allocate(2)))
                .satisfies(e -> assertThat(Errno.of(e)).isEqualTo(Errno.EINVAL));
    }

    @Test
    void hooksRunAroundWritesAndCanFailThem() throws Exception {
        MemoryNode n = new MemoryNode("n", 4L * C);
        List<String> seen = new ArrayList<>();
        n.addHook(new WriteHook() {
            @Override
            public void before(WriteRequest r) throws java.io.IOException {
                seen.add("before " + r.kind() + " " + r.offset());
                if (r.offset() == 7) {
                    throw new BlockIoException(Errno.EIO, "refused");
                }
            }

            @Override
            public void after(WriteRequest r, boolean ok) {
                seen.add("after " + ok);
            }
        });
        n.write(0, ByteBuffer.allocate(3));
        n.discard(0, C);
        assertThatThrownBy(() -> n.write(7, ByteBuffer.allocate(1))).hasMessage("refused");
        n.writeUnallocated(2L * C, ByteBuffer.allocate(C)); // copy-on-read: no hooks
        assertThat(seen).containsExactly("before WRITE 0", "after true", "before DISCARD 0", "after true", "before WRITE 7");
    }

    @Test
    void aSerialisingRangeHoldsOverlappingRequestsOffUntilClosed() throws Exception {
        MemoryNode n = new MemoryNode("n", 4L * C);
        SerialisedRange range = n.serialise(0, C);
        Thread overlapping = Thread.ofVirtual().start(() -> {
            try {
                n.write(100, ByteBuffer.wrap(bytes(1, 4)));
            } catch (java.io.IOException e) {
                throw new IllegalStateException(e);
            }
        });
        Thread disjoint = Thread.ofVirtual().start(() -> {
            try {
                n.write(2L * C, ByteBuffer.wrap(bytes(1, 4)));
            } catch (java.io.IOException e) {
                throw new IllegalStateException(e);
            }
        });
        disjoint.join(10_000);
        assertThat(disjoint.isAlive()).as("a request outside the range goes on").isFalse();
        range.write(0, ByteBuffer.wrap(bytes(1, 8)), RequestFlag.NONE); // the holder's own I/O does not wait
        awaitParked(overlapping);
        assertThat(n.view(100, 1)).as("the overlapping write waits").containsExactly(0);
        range.close();
        overlapping.join(10_000);
        assertThat(overlapping.isAlive()).isFalse();
        assertThat(n.view(0, 1)).containsExactly(8);
        assertThat(n.view(100, 1)).containsExactly(4);
    }

    /** Waits (bounded) until a thread blocks: it waits for the range, not for this test. */
    private static void awaitParked(Thread t) {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (t.getState() != Thread.State.WAITING && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertThat(t.getState()).isEqualTo(Thread.State.WAITING);
    }
}
