package io.blockjobs.plugins.mirror;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.JobStatus;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.MemoryNode;
import io.blockjobs.sdk.testkit.RecordingGraphEdit;
import io.blockjobs.sdk.testkit.RootEdge;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * {@code blockdev-mirror} on the SDK's test kit: a two-layer source a client writes through the
 * job's {@code mirror_top} filter, copied onto a memory target.
 */
class MirrorJobTest {
    static final int KIB = 1024;
    static final int MIB = 1024 * KIB;

    @SuppressWarnings("unchecked")
    static JobCommand<MirrorJob.BlockdevArgs> blockdevMirror() {
        return (JobCommand<MirrorJob.BlockdevArgs>) new MirrorJob().jobCommands().get(0);
    }

    /** base: data in [0, 1 MiB); src: data in [2 MiB, 2.5 MiB) and zeroes at 3 MiB. */
    static MemoryChain source() {
        MemoryChain chain = MemoryChain.of(4 * MIB, "base", "src");
        chain.node("base").random(0, MIB, 1);
        chain.node("src").random(2 * MIB, 512 * KIB, 2).zero(3 * MIB, 64 * KIB);
        return chain;
    }

    private static byte[] view(MemoryNode n) {
        return n.view(0, 4 * MIB);
    }

    private static void write(RootEdge client, long offset, int length, int value) throws Exception {
        byte[] data = new byte[length];
        Arrays.fill(data, (byte) value);
        client.write(offset, ByteBuffer.wrap(data));
    }

    @Test
    void fullMirrorCopiesTheWholeDiskAndSwitchesTheClientOver() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = source();
            MemoryNode target = new MemoryNode("tgt", 4 * MIB);
            harness.add(chain).add(target);
            RootEdge client = harness.client("src");
            HarnessJob job = harness.start(blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\", \"filter-node-name\": \"mt\"}");
            assertThat(client.target().nodeName()).as("the client writes through the filter").isEqualTo("mt");
            assertThat(harness.node("mt").driver()).isEqualTo("mirror_top");
            job.awaitStatus(JobStatus.READY);
            assertThat(view(target)).isEqualTo(view(chain.top()));
            assertThat(target.hasUnflushedWrites()).as("flushed before READY").isFalse();
            write(client, 100 * KIB, 4 * KIB, 7); // after READY: copied before the switch
            job.complete();
            HarnessJob.Outcome end = job.awaitEnd();
            assertThat(end.completed()).as(end.toString()).isTrue();
            assertThat(view(target)).isEqualTo(view(chain.top()));
            assertThat(target.view(100 * KIB, 4 * KIB)).containsOnly(7);
            assertThat(client.target().nodeName()).as("switched over").isEqualTo("tgt");
            assertThat(job.graphEdit().calls()).containsExactly(
                    new RecordingGraphEdit.ReplaceUsers("prepare", "mt", "tgt"),
                    new RecordingGraphEdit.RemoveFilter("commit", "mt"));
        }
    }

    /**
     * As QEMU's {@code mirror_iteration}: only copies are cut to the I/O size (1 MiB); a run
     * that reads as zeroes is one write-zeroes of up to {@code buf-size}, so a mostly empty disk
     * costs its target a few requests, not one per MiB.
     */
    @Test
    void zeroRunsAreWrittenInBufferSizedRequestsNotMegabyteCopies() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = MemoryChain.of(48 * MIB, "src");
            chain.node("src").random(0, MIB, 3);
            MemoryNode target = new MemoryNode("tgt", 48 * MIB).fill(0, 48 * MIB, (byte) 0x55);
            harness.add(chain).add(target);
            int before = target.writes();
            HarnessJob job = harness.start(blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\"}");
            job.awaitStatus(JobStatus.READY);
            assertThat(target.view(0, 48 * MIB)).as("old data zeroed").isEqualTo(chain.top().view(0, 48 * MIB));
            // 16 MiB runs: [0, 1M) copied and [1M, 16M) zeroed, then [16M, 32M) and [32M, 48M) zeroed
            assertThat(target.writes() - before).as("requests the target received").isEqualTo(4);
            job.cancel();
            job.awaitEnd();
        }
    }

    @Test
    void topMirrorCopiesWhatTheTopHoldsAndNoneOnlyNewWrites() throws Exception {
        for (String sync : new String[] {"top", "none"}) {
            try (JobHarness harness = new JobHarness()) {
                MemoryChain chain = source();
                MemoryNode target = new MemoryNode("tgt", 4 * MIB);
                harness.add(chain).add(target);
                RootEdge client = harness.client("src");
                HarnessJob job = harness.start(blockdevMirror(),
                        "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"" + sync + "\"}");
                write(client, 1536 * KIB, 8 * KIB, 9);
                job.awaitStatus(JobStatus.READY);
                job.complete();
                assertThat(job.awaitEnd().completed()).isTrue();
                assertThat(target.view(0, MIB)).as("%s: the base's data is not copied", sync).containsOnly(0);
                assertThat(target.view(1536 * KIB, 8 * KIB)).as("%s: the client's write is", sync).containsOnly(9);
                byte[] top = chain.top().view(2 * MIB, 512 * KIB);
                if (sync.equals("top")) {
                    assertThat(target.view(2 * MIB, 512 * KIB)).isEqualTo(top);
                } else {
                    assertThat(target.view(2 * MIB, 512 * KIB)).containsOnly(0);
                }
            }
        }
    }

    @Test
    void softCancelAfterReadyLeavesTheClientOnTheSource() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = source();
            MemoryNode target = new MemoryNode("tgt", 4 * MIB);
            harness.add(chain).add(target);
            RootEdge client = harness.client("src");
            HarnessJob job = harness.start(blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\"}");
            job.awaitStatus(JobStatus.READY);
            write(client, 3 * MIB, 64 * KIB, 5);
            job.blockJobCancel(false);
            HarnessJob.Outcome end = job.awaitEnd();
            assertThat(end.completed()).as(end.toString()).isTrue();
            assertThat(end.cancelled()).isFalse();
            assertThat(client.target().nodeName()).isEqualTo("src");
            assertThat(view(target)).as("a copy as the source was at the cancel").isEqualTo(view(chain.top()));
            assertThat(harness.filters()).as("the filter is gone").isEmpty();
        }
    }

    @Test
    void writeBlockingCopiesEachClientWriteBeforeItCompletes() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = source();
            MemoryNode target = new MemoryNode("tgt", 4 * MIB);
            harness.add(chain).add(target);
            RootEdge client = harness.client("src");
            HarnessJob job = harness.start(blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\", \"copy-mode\": \"write-blocking\"}");
            job.awaitStatus(JobStatus.READY);
            assertThat(job.body().convergence()).hasValueSatisfying(c -> assertThat(c.activelySynced()).isTrue());
            job.pause(); // the copy loop stops: only the filter can copy now
            job.awaitStatus(JobStatus.STANDBY);
            for (int i = 0; i < 20; i++) {
                int offset = (i * 37 % 60) * 64 * KIB + i * 512;
                write(client, offset, 3 * KIB, 10 + i);
                assertThat(target.view(offset, 3 * KIB)).as("write %d", i).containsOnly(10 + i);
            }
            assertThat(job.body().convergence().orElseThrow().dirtyBytes()).as("nothing left to copy").isZero();
            job.resume();
            job.awaitStatus(JobStatus.READY);
            job.complete();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(view(target)).isEqualTo(view(chain.top()));
        }
    }

    @Test
    void backgroundModeLeavesWritesToTheLoopUntilChanged() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = source();
            MemoryNode target = new MemoryNode("tgt", 4 * MIB);
            harness.add(chain).add(target);
            RootEdge client = harness.client("src");
            HarnessJob job = harness.start(blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\"}");
            job.awaitStatus(JobStatus.READY);
            job.pause();
            job.awaitStatus(JobStatus.STANDBY);
            write(client, 256 * KIB, 4 * KIB, 3);
            byte[] threes = new byte[4 * KIB];
            Arrays.fill(threes, (byte) 3);
            assertThat(target.view(256 * KIB, 4 * KIB)).as("background: not yet").isNotEqualTo(threes);
            assertThat(job.body().convergence().orElseThrow().dirtyBytes()).as("one granule dirty").isEqualTo(64 * KIB);
            assertThatThrownBy(() -> job.body().change(Map.of("copy-mode", "bogus")))
                    .isInstanceOf(CommandException.class).hasMessage("Change to copy mode 'bogus' is not implemented");
            job.body().change(Map.of("copy-mode", "write-blocking"));
            write(client, 512 * KIB, 4 * KIB, 4);
            assertThat(target.view(512 * KIB, 4 * KIB)).as("write-blocking now").containsOnly(4);
            job.resume();
            job.awaitStatus(JobStatus.READY);
            job.complete();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(view(target)).isEqualTo(view(chain.top()));
        }
    }

    @Test
    void refusesWhatQemuRefuses() {
        try (JobHarness harness = new JobHarness()) {
            harness.add(source()).add(new MemoryNode("tgt", 4 * MIB)).add(new MemoryNode("other", 4 * MIB));
            String[][] cases = {
                {"\"granularity\": 1000", "Parameter 'granularity' expects a power of 2"},
                {"\"granularity\": 256", "Parameter 'granularity' expects a value in range [512B, 64MB]"},
                {"\"buf-size\": -1", "Invalid parameter 'buf-size'"},
                {"\"replaces\": \"nope\"", "Failed to find node with node-name='nope'"},
                {"\"replaces\": \"other\"", "Cannot replace 'other' by a node mirrored from 'src', because it cannot"
                        + " be guaranteed that doing so would not lead to an abrupt change of visible data"},
            };
            for (String[] c : cases) {
                assertThatThrownBy(() -> harness.prepare(blockdevMirror(),
                        "{\"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\", " + c[0] + "}"))
                        .as(c[0]).isInstanceOf(CommandException.class).hasMessage(c[1]);
            }
            assertThatThrownBy(() -> harness.prepare(blockdevMirror(),
                    "{\"device\": \"src\", \"target\": \"src\", \"sync\": \"full\"}"))
                    .hasMessage("Can't mirror node into itself");
            assertThatThrownBy(() -> harness.prepare(blockdevMirror(),
                    "{\"device\": \"nope\", \"target\": \"tgt\", \"sync\": \"full\"}"))
                    .hasMessage("Cannot find device='nope' nor node-name='nope'");
            assertThat(harness.filters()).as("a refused job leaves nothing behind").isEmpty();
        }
    }
}
