package io.blockjobs.plugins.commit;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.RecordingGraphEdit;
import java.util.Optional;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

/**
 * {@code block-commit} of an intermediate layer (mid) into the base, with the top active, through
 * the conformance test: afterwards the base holds what the mid read and is the top's backing.
 */
class CommitJobTest extends JobConformanceTest<CommitJob.Args> {
    static final int KIB = 1 << 10;
    static final int MIB = 1 << 20;

    @SuppressWarnings("unchecked")
    static JobCommand<CommitJob.Args> blockCommit() {
        return (JobCommand<CommitJob.Args>) new CommitJob().jobCommands().get(0);
    }

    /**
     * base: data in [0, 1 MiB); mid: data in [512 KiB, 1.5 MiB) and a zero cluster at 2 MiB;
     * top: one cluster at 768 KiB and 4 KiB at 3 MiB (its cluster copied on write).
     */
    static MemoryChain threeLayers() {
        MemoryChain chain = MemoryChain.of(4 * MIB, "base", "mid", "top");
        chain.node("base").random(0, MIB, 1);
        chain.node("mid").random(512 * KIB, MIB, 2).zero(2 * MIB, 64 * KIB);
        chain.node("top").random(768 * KIB, 64 * KIB, 3).random(3 * MIB, 4 * KIB, 4);
        return chain;
    }

    @Override
    protected JobCommand<CommitJob.Args> command() {
        return blockCommit();
    }

    @Override
    protected MemoryChain chain() {
        return threeLayers();
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"j\", \"device\": \"top\", \"top-node\": \"mid\", \"base-node\": \"base\"}";
    }

    @Override
    protected void checkResult(Run run) {
        assertThat(run.view("top")).as("the top reads as before, with the client's writes").isEqualTo(run.expected());
        assertThat(run.view("base")).as("the base holds what the mid read").isEqualTo(run.before().view("mid"));
        assertThat(run.links("top")).containsExactly("top", "base");
        assertThat(run.chain().top().backingFile()).isEqualTo("base");
        assertThat(run.chain().base().hasUnflushedWrites()).as("the base is durable before the chain changes").isFalse();
        // The overlay goes onto the base, and so does anyone else on the commit's filter (QEMU's
        // bdrv_drop_intermediate moves every parent).
        assertThat(run.job().graphEdit().calls()).hasSize(2).first()
                .isEqualTo(new RecordingGraphEdit.SetBacking("prepare", "top", "base", null, false));
        assertThat(run.job().graphEdit().calls().get(1)).isInstanceOf(RecordingGraphEdit.ReplaceUsers.class);
    }

    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(MIB + 64L * KIB); // the mid's own clusters
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("mid", 600_000));
    }

    @Override
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        return Optional.of(FaultSite.write("base", 600_000));
    }

    @Test
    void putsACommitTopFilterAboveTheCommittedLayerAndFreezesTheChain() {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = threeLayers();
            harness.add(chain);
            HarnessJob job = harness.prepare(command(), "{\"device\": \"top\", \"top-node\": \"mid\", \"base-node\": \"base\","
                    + " \"filter-node-name\": \"ct\"}").breakAt(1).start();
            job.awaitBreak();
            assertThat(harness.filters()).containsExactly("ct");
            assertThat(harness.node("ct").driver()).isEqualTo("commit_top");
            assertThat(MemoryChain.links(chain.top())).containsExactly("top", "mid", "base");
            assertThat(chain.top().backing()).get().extracting(n -> n.nodeName()).isEqualTo("ct");
            assertThat(harness.frozenLinks()).containsExactly("ct -> mid", "mid -> base");
            assertThat(chain.base().isReadOnly()).as("the base was reopened for writing").isFalse();
            job.go();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(harness.filters()).isEmpty();
        }
    }
}
