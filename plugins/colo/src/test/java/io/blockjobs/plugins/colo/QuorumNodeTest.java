package io.blockjobs.plugins.colo;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.ChildChanges;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverEvents;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.testkit.MemoryNode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The quorum's votes, reports and child changes (QEMU's block/quorum.c), with the SDK alone. */
class QuorumNodeTest {
    static final int SIZE = 1 << 20;

    /** Events as "NAME {data}" lines. */
    static final class Recorder implements DriverEvents {
        final List<String> events = new ArrayList<>();

        @Override
        public synchronized void send(String name, Map<String, Object> data) {
            events.add(name + " " + data);
        }
    }

    final Recorder events = new Recorder();

    private MemoryNode[] children(int n, byte fill) {
        MemoryNode[] cs = new MemoryNode[n];
        for (int i = 0; i < n; i++) {
            cs[i] = new MemoryNode("c" + i, SIZE).fill(0, SIZE, fill);
        }
        return cs;
    }

    private QuorumNode quorum(MemoryNode[] cs, int threshold, boolean rewrite, boolean fifo) {
        return new QuorumNode("q", Arrays.asList((BlockNode[]) cs), threshold, false, rewrite, fifo, SIZE, false, events);
    }

    private static byte[] read(BlockNode n, long offset, int length) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(length);
        n.read(offset, b);
        assertThat(b.remaining()).isZero();
        return b.array();
    }

    private static byte[] filled(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return b;
    }

    @Test
    void aCorruptChildIsOutvotedReportedAndRewrittenWithRewriteCorrupted() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0xaa);
        cs[2].fill(4096, 4096, (byte) 0xbb);
        QuorumNode q = quorum(cs, 2, true, false);

        assertThat(read(q, 4096 + 512, 1000)).isEqualTo(filled(1000, 0xaa));
        // sectors 9..11: the 512-byte sectors the request covers, as QEMU counts them
        assertThat(events.events).containsExactly(
                "QUORUM_REPORT_BAD {type=read, node-name=c2, sector-num=9, sectors-count=2}");
        assertThat(cs[2].view(4096, 4096)).startsWith(filled(512, 0xbb)).endsWith(filled(2584, 0xbb));
        assertThat(cs[2].view(4096 + 512, 1000)).isEqualTo(filled(1000, 0xaa)); // only the range read is repaired
        events.events.clear();
        read(q, 4096 + 512, 1000);
        assertThat(events.events).isEmpty();
    }

    @Test
    void withoutRewriteTheLoserKeepsItsDataAndIsReportedAtEveryRead() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0xaa);
        cs[0].fill(0, 512, (byte) 1);
        QuorumNode q = quorum(cs, 2, false, false);
        assertThat(read(q, 0, 512)).isEqualTo(filled(512, 0xaa));
        read(q, 0, 512);
        assertThat(events.events).containsExactly(
                "QUORUM_REPORT_BAD {type=read, node-name=c0, sector-num=0, sectors-count=1}",
                "QUORUM_REPORT_BAD {type=read, node-name=c0, sector-num=0, sectors-count=1}");
        assertThat(cs[0].view(0, 512)).isEqualTo(filled(512, 1));
    }

    @Test
    void noMajorityFailsTheReadWithQuorumFailure() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0xaa);
        cs[1].fill(0, 4096, (byte) 0xcc);
        cs[2].fill(0, 4096, (byte) 0xdd);
        QuorumNode q = quorum(cs, 2, true, false);
        assertThatThrownBy(() -> read(q, 0, 4096)).isInstanceOfSatisfying(BlockIoException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        assertThat(events.events).containsExactly("QUORUM_FAILURE {reference=q, sector-num=0, sectors-count=8}");
        assertThat(cs[1].view(0, 1)[0]).isEqualTo((byte) 0xcc); // nothing rewritten without a winner
    }

    @Test
    void amongEqualVotesTheVersionSeenLastWinsAndLosersAreReportedAsQemuListsThem() throws Exception {
        // children: A B A B C, threshold 1: QEMU's list is C, B, A (newest first); A and B have 2
        // votes each, and B comes first in the list, so B wins; losers go C, then A's children newest first.
        MemoryNode[] cs = children(5, (byte) 0);
        int[] versions = {0xa, 0xb, 0xa, 0xb, 0xc};
        for (int i = 0; i < 5; i++) {
            cs[i].fill(0, 512, (byte) versions[i]);
        }
        QuorumNode q = quorum(cs, 1, false, false);
        assertThat(read(q, 0, 512)).isEqualTo(filled(512, 0xb));
        assertThat(events.events).extracting(e -> e.replaceAll(".*node-name=(c\\d).*", "$1"))
                .containsExactly("c4", "c2", "c0");
    }

    /** Property: the vote picks what most children hold, whatever the order; a model says which. */
    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
    void theVoteAgreesWithAModel(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int n = 1 + r.nextInt(7);
        ByteBuffer[] reads = new ByteBuffer[n];
        int[] value = new int[n];
        for (int i = 0; i < n; i++) {
            value[i] = r.nextInt(3) == 0 ? -1 : r.nextInt(3); // -1: the child failed
            reads[i] = value[i] < 0 ? null : ByteBuffer.wrap(filled(64, value[i]));
        }
        Vote v = Vote.of(reads);
        // the model: counts per value; the winner has the highest count, ties to the value whose
        // first child comes last; losers are every successful child with another value
        int best = -1;
        int bestCount = 0;
        int bestFirst = -1;
        for (int val = 0; val < 3; val++) {
            int count = 0;
            int first = -1;
            for (int i = 0; i < n; i++) {
                if (value[i] == val) {
                    count++;
                    first = first < 0 ? i : first;
                }
            }
            if (count > bestCount || (count == bestCount && count > 0 && first > bestFirst)) {
                best = val;
                bestCount = count;
                bestFirst = first;
            }
        }
        String seedText = "seed " + seed + ", values " + Arrays.toString(value);
        assertThat(v.votes()).as(seedText).isEqualTo(bestCount);
        assertThat(v.winner()).as(seedText).isEqualTo(bestFirst);
        List<Integer> losers = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            if (value[i] >= 0 && value[i] != best) {
                losers.add(i);
            }
        }
        assertThat(v.losers()).as(seedText).containsExactlyInAnyOrderElementsOf(losers);
    }

    @Test
    void readErrorsAreReportedAndTheMostCommonErrnoFailsTheRequest() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0xaa);
        cs[0].failReads(0, Errno.ENOSPC);
        cs[1].failReads(0, Errno.EIO);
        cs[2].failReads(0, Errno.EIO);
        QuorumNode q = quorum(cs, 1, false, false);
        assertThatThrownBy(() -> read(q, 0, 4096)).isInstanceOfSatisfying(BlockIoException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        assertThat(events.events).containsExactly(
                "QUORUM_REPORT_BAD {type=read, error=No space left on device, node-name=c0, sector-num=0, sectors-count=8}",
                "QUORUM_REPORT_BAD {type=read, error=Input/output error, node-name=c1, sector-num=0, sectors-count=8}",
                "QUORUM_REPORT_BAD {type=read, error=Input/output error, node-name=c2, sector-num=0, sectors-count=8}",
                "QUORUM_FAILURE {reference=q, sector-num=0, sectors-count=8}");
    }

    @Test
    void writesGoToEveryChildAndSucceedWithThresholdSuccesses() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0);
        cs[1].failWrites(0, Errno.ENOSPC);
        QuorumNode q = quorum(cs, 2, false, false);
        q.write(0, ByteBuffer.wrap(filled(4096, 0x22)));
        assertThat(cs[0].view(0, 4096)).isEqualTo(filled(4096, 0x22));
        assertThat(cs[2].view(0, 4096)).isEqualTo(filled(4096, 0x22));
        assertThat(events.events).containsExactly(
                "QUORUM_REPORT_BAD {type=write, error=No space left on device, node-name=c1, sector-num=0, sectors-count=8}");
        events.events.clear();
        cs[2].failWrites(0, Errno.ENOSPC);
        assertThatThrownBy(() -> q.writeZeroes(0, 512, false)).isInstanceOfSatisfying(BlockIoException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.ENOSPC));
        assertThat(events.events).hasSize(3).last().isEqualTo("QUORUM_FAILURE {reference=q, sector-num=0, sectors-count=1}");
        assertThat(cs[0].view(0, 512)).isEqualTo(new byte[512]); // the children that could, wrote
    }

    @Test
    void fifoReadsTheFirstChildThatAnswers() throws Exception {
        MemoryNode[] cs = children(3, (byte) 0xaa);
        cs[0].failReads(0, Errno.EIO);
        cs[1].fill(0, SIZE, (byte) 0x11);
        QuorumNode q = quorum(cs, 1, false, true);
        assertThat(read(q, 0, 512)).isEqualTo(filled(512, 0x11)); // no vote: child 1's data, not the majority's
        assertThat(events.events).containsExactly(
                "QUORUM_REPORT_BAD {type=read, error=Input/output error, node-name=c0, sector-num=0, sectors-count=1}");
        assertThat(cs[2].reads()).isZero();
        cs[1].failReads(0, Errno.EIO);
        cs[2].failReads(0, Errno.EINVAL);
        assertThatThrownBy(() -> read(q, 0, 512)).isInstanceOfSatisfying(BlockIoException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL)); // the last child's error, no QUORUM_FAILURE
        assertThat(events.events).noneMatch(e -> e.startsWith("QUORUM_FAILURE"));
    }

    @Test
    void flushReportsEachFailingChildWithoutSectors() throws Exception {
        MemoryNode[] cs = children(2, (byte) 0);
        QuorumNode q = quorum(cs, 1, false, false);
        q.write(0, ByteBuffer.wrap(new byte[512]));
        q.flush();
        assertThat(cs[0].flushes()).isEqualTo(1);
        assertThat(cs[1].flushes()).isEqualTo(1);
        assertThat(events.events).isEmpty();
    }

    @Test
    void blockStatusIsZeroOnlyWhereEveryChildReadsZeroes() throws Exception {
        MemoryNode[] cs = new MemoryNode[] {new MemoryNode("c0", SIZE), new MemoryNode("c1", SIZE)};
        cs[0].fill(65536, 65536, (byte) 1);
        QuorumNode q = quorum(cs, 1, false, false);
        BlockStatus s = q.blockStatus(0, SIZE);
        assertThat(s.zero()).isTrue();
        assertThat(s.end()).isEqualTo(65536);
        BlockStatus d = q.blockStatus(65536, SIZE - 65536);
        assertThat(d.zero()).isFalse();
        assertThat(d.allocated()).isTrue();
    }

    /** A stand-in for the graph's attacher: it names what the driver asked for. */
    private static ChildChanges.Attacher attacher(String node, List<String> attached) {
        return new ChildChanges.Attacher() {
            @Override
            public String nodeName() {
                return node;
            }

            @Override
            public BlockNode attach(String name, ChildRole role) {
                attached.add(name + " " + role);
                return new MemoryNode(node, SIZE);
            }
        };
    }

    @Test
    void childrenAreNamedAsQemuNamesThemWhenAddedAndRemoved() throws Exception {
        QuorumNode q = quorum(children(2, (byte) 0), 1, false, false);
        List<String> attached = new ArrayList<>();
        q.add(attacher("x", attached));
        assertThat(attached).containsExactly("children.2 DATA");
        q.remove("children.2"); // the newest: its number is free again
        q.add(attacher("y", attached));
        assertThat(attached).last().isEqualTo("children.2 DATA");
        q.remove("children.0"); // not the newest: numbers go on from the highest
        q.add(attacher("z", attached));
        assertThat(attached).last().isEqualTo("children.3 DATA");
        assertThat(q.childNames()).containsExactly("children.1", "children.2", "children.3");
        q.remove("children.1");
        q.remove("children.2");
        assertThatThrownBy(() -> q.remove("children.3")).isInstanceOf(CommandException.class)
                .hasMessage("The number of children cannot be lower than the vote threshold 1");
        q.write(0, ByteBuffer.wrap(filled(512, 7)));
        assertThat(read(q, 0, 512)).isEqualTo(filled(512, 7));
    }

    @Test
    void aBlkverifyQuorumTakesNoNewChild() {
        QuorumNode q = new QuorumNode("q", List.of(new MemoryNode("a", SIZE), new MemoryNode("b", SIZE)), 2, true,
                false, false, SIZE, false, events);
        assertThatThrownBy(() -> q.add(attacher("x", new ArrayList<>()))).isInstanceOf(CommandException.class)
                .hasMessage("Cannot add a child to a quorum in blkverify mode");
    }
}
