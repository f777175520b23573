package io.blockjobs.plugins.stream;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.MemoryChain;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * {@code block-stream} of the layers above a base ({@code base-node}) into the top, through the
 * conformance test: the copy-on-read filter's {@code bottom} keeps the base's data where it is,
 * and the base becomes the top's backing.
 */
class StreamOntoABaseTest extends JobConformanceTest<StreamJob.Args> {
    private static final int KIB = StreamJobTest.KIB;

    @Override
    protected JobCommand<StreamJob.Args> command() {
        return StreamJobTest.blockStream();
    }

    @Override
    protected MemoryChain chain() {
        return StreamJobTest.threeLayers();
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"onto-base\", \"device\": \"top\", \"base-node\": \"base\", \"backing-file\": \"base.img\"}";
    }

    @Override
    protected void checkResult(Run run) {
        assertThat(run.view("top")).isEqualTo(run.expected());
        assertThat(run.links("top")).containsExactly("top", "base");
        assertThat(run.chain().top().backingFile()).isEqualTo("base.img");
        assertThat(run.chain().top().isAllocated(100 * KIB)).as("the base's data stays in the base").isFalse();
        assertThat(run.chain().top().isAllocated(600 * KIB)).as("the mid's data is in the top").isTrue();
    }

    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(1024L * KIB); // the mid's MiB but the top's cluster, and its zero cluster
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("mid", 600_000));
    }

    @Override
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        return Optional.of(FaultSite.write("top", 600_000).reportedAs("read"));
    }
}
