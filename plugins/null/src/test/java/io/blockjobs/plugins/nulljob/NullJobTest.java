package io.blockjobs.plugins.nulljob;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.MemoryNode;
import java.io.IOException;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** The null job, tested with the SDK's test kit alone: no daemon, no files. */
class NullJobTest {
    private static final int MIB = 1 << 20;

    @SuppressWarnings("unchecked")
    private static JobCommand<NullJob.Args> command() {
        return (JobCommand<NullJob.Args>) new NullJob().commands().get(0);
    }

    private static NullJob.Args args(String device) {
        return new NullJob.Args(Optional.empty(), device, Optional.empty(), Optional.empty(), Optional.empty(),
                Optional.empty());
    }

    @Test
    void readsEveryAllocatedByteOfTheChainAndNothingElse() {
        MemoryNode base = new MemoryNode("base", 8 * MIB, null).fill(0, 2 * MIB, (byte) 1);
        MemoryNode top = new MemoryNode("top", 8 * MIB, base).fill(4 * MIB, MIB, (byte) 2);
        JobHarness harness = new JobHarness().node("top", top);
        JobBody body = harness.prepare(command(), args("top"));
        assertThat(harness.claimed()).containsExactly("top");

        JobHarness.Outcome outcome = harness.run(body, OnError.REPORT, -1);
        assertThat(outcome.completed()).isTrue();
        assertThat(outcome.throttledBytes()).as("allocated bytes read").isEqualTo(3L * MIB);
        assertThat(outcome.progressDone()).isEqualTo(outcome.progressTotal()).isEqualTo(8L * MIB);
        assertThat(base.reads()).isPositive();
    }

    @Test
    void cancelStopsAtAPausePoint() {
        MemoryNode disk = new MemoryNode("disk", 16 * MIB, null).fill(0, 16 * MIB, (byte) 3);
        JobHarness harness = new JobHarness().node("disk", disk);
        JobHarness.Outcome outcome = harness.run(harness.prepare(command(), args("disk")), OnError.REPORT, 3);
        assertThat(outcome.cancelled()).isTrue();
        assertThat(outcome.progressDone()).isLessThan(16L * MIB);
    }

    @Test
    void readErrorsFollowTheErrorPolicy() {
        MemoryNode disk = new MemoryNode("disk", 4 * MIB, null).fill(0, 4 * MIB, (byte) 3);
        disk.failReadsAt(MIB + 5);
        JobHarness harness = new JobHarness().node("disk", disk);
        JobHarness.Outcome reported = harness.run(harness.prepare(command(), args("disk")), OnError.REPORT, -1);
        assertThat(reported.error()).isInstanceOf(IOException.class).hasMessageContaining("Input/output error");
        JobHarness.Outcome ignored = harness.run(harness.prepare(command(), args("disk")), OnError.IGNORE, -1);
        assertThat(ignored.completed()).isTrue();
        assertThat(ignored.errorActions()).containsExactly("ignore");
        assertThat(ignored.throttledBytes()).isEqualTo(3L * MIB);
    }

    @Test
    void anUnknownDeviceIsRefusedBeforeAnythingRuns() {
        JobHarness harness = new JobHarness();
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> harness.prepare(command(), args("nowhere")))
                .hasMessageContaining("nowhere");
    }
}
