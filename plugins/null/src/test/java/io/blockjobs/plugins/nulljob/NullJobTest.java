package io.blockjobs.plugins.nulljob;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.MemoryChain;
import java.util.Optional;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

/** The null job, tested with the SDK's test kit alone: the conformance test, and what is its own. */
class NullJobTest extends JobConformanceTest<NullJob.Args> {
    private static final int KIB = 1 << 10;
    private static final int MIB = 1 << 20;

    @Override
    @SuppressWarnings("unchecked")
    protected JobCommand<NullJob.Args> command() {
        return (JobCommand<NullJob.Args>) new NullJob().commands().get(0);
    }

    /** base: data in [0, 2 MiB); top: data in [1 MiB, 1.5 MiB) and a zero cluster at 3 MiB. */
    @Override
    protected MemoryChain chain() {
        MemoryChain chain = MemoryChain.of(4 * MIB, "base", "top");
        chain.node("base").random(0, 2 * MIB, 1);
        chain.node("top").random(MIB, 512 * KIB, 2).zero(3 * MIB, 64 * KIB);
        return chain;
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"j\", \"device\": \"top\"}";
    }

    /** The null job changes nothing. */
    @Override
    protected void checkResult(Run run) {
        checkUnchanged(run);
    }

    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(2L * MIB); // every allocated byte that is not a zero cluster, once
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("base", 300_000));
    }

    @Test
    void readsEveryAllocatedByteOfTheChainAndNothingElse() {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = chain();
            harness.add(chain);
            HarnessJob job = harness.start(command(), arguments());
            HarnessJob.Outcome outcome = job.awaitEnd();
            assertThat(outcome.completed()).isTrue();
            assertThat(outcome.throttledBytes()).as("allocated bytes read").isEqualTo(2L * MIB);
            assertThat(outcome.progressDone()).isEqualTo(outcome.progressTotal()).isEqualTo(4L * MIB);
            assertThat(chain.node("base").bytesRead()).as("base's part").isEqualTo(3L * 512 * KIB);
            assertThat(chain.node("top").bytesRead()).isEqualTo(2L * MIB);
        }
    }

    @Test
    void anIgnoredReadErrorSkipsTheRange() {
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = chain();
            harness.add(chain);
            chain.node("base").failReads(300_000, Errno.EIO);
            HarnessJob.Outcome outcome = harness.start(command(), "{\"device\": \"top\", \"on-error\": \"ignore\"}").awaitEnd();
            assertThat(outcome.completed()).isTrue();
            assertThat(outcome.errorActions()).containsExactly("ignore");
            assertThat(outcome.throttledBytes()).isEqualTo(MIB);
        }
    }
}
