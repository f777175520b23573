package io.blockjobs.plugins.commit;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.JobStatus;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.RecordingGraphEdit;
import java.util.Optional;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

/**
 * Active {@code block-commit} of the top (and mid) into the base, through the conformance test:
 * the mirror plugin's loop (the mirror jar is on the test class path, as the plugin depends on
 * it) tracks the client's writes through its {@code mirror_top} filter, says ready, and on
 * {@code job-complete} switches the client over to the base, which then reads what the top did.
 */
class ActiveCommitTest extends JobConformanceTest<CommitJob.Args> {
    private static final int KIB = CommitJobTest.KIB;
    private static final int MIB = CommitJobTest.MIB;

    @Override
    protected JobCommand<CommitJob.Args> command() {
        return CommitJobTest.blockCommit();
    }

    @Override
    protected MemoryChain chain() {
        return CommitJobTest.threeLayers();
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"active\", \"device\": \"top\"}";
    }

    @Override
    protected void checkResult(Run run) {
        assertThat(run.client().target().nodeName()).as("the client was switched over to the base").isEqualTo("base");
        assertThat(run.view("base")).as("the base reads what the top did, with every client write").isEqualTo(run.expected());
        assertThat(run.links("top")).as("the top's chain is left as it was").containsExactly("top", "mid", "base");
        assertThat(run.chain().base().hasUnflushedWrites()).isFalse();
        assertThat(run.job().graphEdit().calls()).as("the switch-over in prepare (undone if the transaction aborts),"
                + " the filter out in commit").containsExactly(
                new RecordingGraphEdit.ReplaceUsers("prepare", "#block001", "base"),
                new RecordingGraphEdit.RemoveFilter("commit", "#block001"));
    }

    /** A soft cancel leaves the client on the top; the base holds the same data. */
    @Override
    protected void checkSoftCancelled(Run run) {
        checkUnchanged(run);
        assertThat(run.view("base")).as("the base is in sync with the top").isEqualTo(run.expected());
    }

    /**
     * The top's and the mid's data, once; the mid's zero cluster is written as zeroes and, as in
     * QEMU's mirror loop (which active commit is), not accounted against the speed limit.
     */
    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(MIB + 64L * KIB);
    }

    /** The mirror loop holds the granules it copies; a client's write over them waits for the copy. */
    @Override
    protected boolean writesWaitForTheJobsCopy() {
        return true;
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("top", 800_000));
    }

    @Override
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        return Optional.of(FaultSite.write("base", 600_000));
    }

    @Test
    void tracksClientWritesThroughAMirrorTopFilter() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = CommitJobTest.threeLayers();
            harness.add(chain);
            var client = harness.client("top");
            HarnessJob job = harness.start(command(), "{\"device\": \"top\", \"filter-node-name\": \"mt\"}");
            job.awaitStatus(JobStatus.READY);
            assertThat(harness.filters()).containsExactly("mt");
            assertThat(harness.node("mt").driver()).isEqualTo("mirror_top");
            assertThat(client.target().nodeName()).isEqualTo("mt");
            client.write(2 * MIB + 4096, java.nio.ByteBuffer.wrap(new byte[] {1, 2, 3}));
            job.complete();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(chain.base().view(2 * MIB + 4096, 3)).containsExactly(1, 2, 3);
            assertThat(client.target().nodeName()).isEqualTo("base");
        }
    }
}
