package io.blockjobs.plugins.stream;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.RecordingGraphEdit;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

/**
 * {@code block-stream} of a whole chain (base, mid, top) into its top, through the conformance
 * test: afterwards the top holds everything and has no backing file.
 */
class StreamJobTest extends JobConformanceTest<StreamJob.Args> {
    static final int KIB = 1 << 10;
    static final int MIB = 1 << 20;

    @SuppressWarnings("unchecked")
    static JobCommand<StreamJob.Args> blockStream() {
        return (JobCommand<StreamJob.Args>) new StreamJob().jobCommands().get(0);
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
    protected JobCommand<StreamJob.Args> command() {
        return blockStream();
    }

    @Override
    protected MemoryChain chain() {
        return threeLayers();
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"j\", \"device\": \"top\"}";
    }

    @Override
    protected void checkResult(Run run) {
        assertThat(run.view("top")).as("the top reads as before, with the client's writes").isEqualTo(run.expected());
        assertThat(run.links("top")).as("the top's chain").containsExactly("top");
        assertThat(run.chain().top().backingFile()).isNull();
        assertThat(run.job().graphEdit().calls()).containsExactly(
                new RecordingGraphEdit.SetBacking("prepare", "top", null, null, false));
    }

    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(1536L * KIB); // [0, 1.5 MiB) but the top's cluster, and the zero cluster
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("base", 100_000));
    }

    @Override
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        // the copy-on-read filter's write into the top fails the read that made it, as in QEMU
        return Optional.of(FaultSite.write("top", 100_000).reportedAs("read"));
    }

    @Test
    void readsThroughACopyOnReadFilterThatClientsUseToo() {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = threeLayers();
            harness.add(chain);
            var client = harness.client("top");
            HarnessJob job = harness.prepare(command(), "{\"device\": \"top\", \"filter-node-name\": \"cor\"}").breakAt(1).start();
            job.awaitBreak();
            assertThat(harness.filters()).containsExactly("cor");
            assertThat(harness.node("cor").driver()).isEqualTo("copy-on-read");
            assertThat(client.target().nodeName()).as("the client reads through the filter").isEqualTo("cor");
            assertThat(harness.frozenLinks()).containsExactly("cor -> top", "mid -> base", "top -> mid");
            assertThat(chain.node("base").isReadOnly()).isTrue();
            job.go();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(client.target().nodeName()).isEqualTo("top");
            assertThat(chain.top().allocatedBytes()).as("everything copied up: the top holds its own view")
                    .isEqualTo(1536L * KIB + 128 * KIB);
        }
    }

    @Test
    void bothBaseAndBottomAreRefusedAsQemuRefusesThem() {
        try (JobHarness harness = new JobHarness()) {
            harness.add(threeLayers());
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> harness.prepare(command(),
                    "{\"device\": \"top\", \"base-node\": \"base\", \"bottom\": \"mid\"}"))
                    .hasMessage("'bottom' and 'base-node' cannot be specified at the same time");
            assertThat(harness.filters()).isEmpty();
            assertThat(List.copyOf(harness.edges())).isEmpty();
        }
    }
}
