package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import java.util.EnumSet;
import java.util.Optional;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The harness runs a job as the platform does: a small copy job defined here drives it. */
class JobHarnessKitTest {
    private static final int C = MemoryNode.DEFAULT_CLUSTER_SIZE;
    private static final Set<BlockPermission> NONE = EnumSet.noneOf(BlockPermission.class);
    private static final Set<BlockPermission> READ_WRITE = EnumSet.of(BlockPermission.CONSISTENT_READ,
            BlockPermission.WRITE, BlockPermission.WRITE_UNCHANGED);

    /** The copy job's arguments. */
    record Args(Optional<String> jobId, String device, String target, Optional<Long> speed, Optional<OnError> onError,
                Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss, Optional<Boolean> exclusive,
                Optional<Boolean> progressFromWorkers) implements JobArgs {
    }

    /** Copies the device onto the target a cluster at a time, four copies in flight; freezes the device's chain. */
    static final JobCommand<Args> COPY = new JobCommand<>("x-test-copy", "x-test-copy", Args.class, JobHarnessKitTest::prepare);

    static JobBody prepare(Args a, JobSetup setup) {
        BlockNode src = setup.use(a.device(), "source", NONE,
                a.exclusive().orElse(false) ? EnumSet.of(BlockPermission.CONSISTENT_READ) : READ_WRITE);
        BlockNode dst = setup.claimWritable(a.target());
        setup.freezeBackingChain(a.device(), null);
        boolean fromWorkers = a.progressFromWorkers().orElse(false);
        return (JobContext ctx) -> {
            long size = src.size();
            try (Copier copier = ctx.copier(4, C)) {
                for (long offset = 0; offset < size; offset += C) {
                    ctx.pausePoint();
                    long at = offset;
                    copier.copy(offset, C, src::read, (o, b) -> {
                        dst.write(o, b);
                        if (fromWorkers) {
                            ctx.progress(at, size);
                        }
                    });
                    ctx.throttle(C);
                    ctx.progress(offset + C, size);
                }
                copier.drain();
            }
        };
    }

    private static JobHarness harness() {
        MemoryNode base = new MemoryNode("base", 16L * C).random(0, 16L * C, 1).readOnly();
        MemoryNode top = new MemoryNode("top", 16L * C, base).random(4L * C, 2L * C, 2);
        MemoryNode target = new MemoryNode("target", 16L * C).readOnly();
        return new JobHarness().add(top, target);
    }

    @Test
    void aPauseWaitsForTheCopiesInFlightBeforeTheJobReportsItselfPaused() {
        try (JobHarness h = harness()) {
            MemoryNode base = (MemoryNode) h.node("base");
            Stall stall = base.stallRead(C + 5); // the second copy's read stays out (two pause points a cluster)
            HarnessJob job = h.prepare(COPY, "{\"job-id\": \"j\", \"device\": \"top\", \"target\": \"target\"}")
                    .breakAt(5).start();
            stall.awaitStalled();
            assertThat(job.awaitBreak()).isEqualTo(5);
            job.pause();
            job.go();
            assertThat(job.status()).isEqualTo(JobStatus.RUNNING);
            stall.release();
            job.awaitStatus(JobStatus.PAUSED);
            HarnessJob.Pause pause = job.pauses().get(0);
            assertThat(pause.pausePoint()).isEqualTo(5);
            assertThat(pause.copiesInFlight()).as("copies in flight when paused").isZero();
            assertThat(pause.requestsInFlight()).isZero();
            job.resume();
            HarnessJob.Outcome o = job.awaitEnd();
            assertThat(o.completed()).isTrue();
            assertThat(o.statuses()).containsExactly("created", "running", "paused", "running", "waiting", "pending",
                    "concluded", "null");
            assertThat(o.hooks()).containsExactly("run", "pause", "resume", "prepare", "commit", "clean");
            assertThat(((MemoryNode) h.node("target")).view()).isEqualTo(((MemoryNode) h.node("top")).view());
        }
    }

    @Test
    void stopPausesUntilResumedThenRetries() {
        try (JobHarness h = harness()) {
            Fault fault = ((MemoryNode) h.node("target")).failWriteOnce(5L * C, Errno.ENOSPC);
            HarnessJob job = h.start(COPY, "{\"device\": \"top\", \"target\": \"target\", \"on-error\": \"stop\"}");
            job.awaitStatus(JobStatus.PAUSED);
            assertThat(job.info().ioStatus()).isEqualTo("nospace");
            assertThat(job.info().paused()).isTrue();
            assertThat(job.events()).filteredOn(e -> e.name().equals("BLOCK_JOB_ERROR")).singleElement()
                    .satisfies(e -> assertThat(e.data()).containsExactly(java.util.Map.entry("device", "top"),
                            java.util.Map.entry("operation", "write"), java.util.Map.entry("action", "stop")));
            job.resume();
            HarnessJob.Outcome o = job.awaitEnd();
            assertThat(o.completed()).isTrue();
            assertThat(o.errorActions()).containsExactly("stop");
            assertThat(fault.hits()).isEqualTo(1);
            assertThat(((MemoryNode) h.node("target")).view()).isEqualTo(((MemoryNode) h.node("top")).view());
        }
    }

    @Test
    void theContextUsedFromACopierWorkerIsAViolation() {
        try (JobHarness h = harness()) {
            HarnessJob.Outcome o = h.start(COPY, "{\"device\": \"top\", \"target\": \"target\", \"progress-from-workers\": true}")
                    .awaitEnd();
            assertThat(o.violations()).anyMatch(v -> v.startsWith("progress was called on thread 'copier-top', not the job's"));
        }
    }

    @Test
    void permissionsConflictWithQemusMessageAndFrozenLinksStayFrozen() {
        try (JobHarness h = harness()) {
            h.client("top");
            assertThatThrownBy(() -> h.prepare(COPY, "{\"device\": \"top\", \"target\": \"target\", \"exclusive\": true}"))
                    .isInstanceOf(CommandException.class).hasMessage("Permission conflict on node 'top': permissions"
                            + " 'write' are both required by an unnamed block device (uses node 'top' as 'root' child)"
                            + " and unshared by x-test-copy job 'top' (uses node 'top' as 'source' child).");
            assertThat(h.edges()).allMatch(RootEdge::isClient);
            HarnessJob first = h.prepare(COPY, "{\"job-id\": \"a\", \"device\": \"top\", \"target\": \"target\"}");
            assertThat(h.frozenLinks()).containsExactly("top -> base");
            assertThatThrownBy(() -> h.prepare(COPY, "{\"job-id\": \"b\", \"device\": \"top\", \"target\": \"target\"}"))
                    .hasMessage("Node 'top' is busy: block device is in use by block job: x-test-copy");
            h.add(new MemoryNode("over", 16L * C, h.node("top")), new MemoryNode("other", 16L * C));
            assertThatThrownBy(() -> h.prepare(COPY, "{\"job-id\": \"b\", \"device\": \"over\", \"target\": \"other\"}"))
                    .hasMessage("Cannot change 'backing' link from 'top' to 'base'");
            assertThat(h.frozenLinks()).containsExactly("top -> base");
            assertThat(h.edges()).hasSize(3); // the client's, and a's two
            assertThatThrownBy(() -> h.prepare(COPY, "{\"job-id\": \"a\", \"device\": \"other\", \"target\": \"base\"}"))
                    .hasMessage("Job ID 'a' already in use");
            assertThat(first.start().awaitEnd().completed()).isTrue();
            assertThat(h.frozenLinks()).isEmpty();
        }
    }

    static final java.util.concurrent.atomic.AtomicReference<java.util.List<String>> SEEN =
            new java.util.concurrent.atomic.AtomicReference<>();

    /** A job that puts a filter with a write hook above its device and waits at three pause points. */
    static final JobCommand<Args> HOOKED = new JobCommand<>("x-test-hooked", "x-test-hooked", Args.class, (a, setup) -> {
        java.util.List<String> seen = new java.util.concurrent.CopyOnWriteArrayList<>();
        io.blockjobs.sdk.block.WriteHook hook = new io.blockjobs.sdk.block.WriteHook() {
            @Override
            public void before(io.blockjobs.sdk.block.WriteRequest r) throws java.io.IOException {
                seen.add("before " + r.kind() + " " + r.offset() + "+" + r.length());
                if (r.offset() == 0) {
                    throw new io.blockjobs.sdk.block.BlockIoException(Errno.EIO, "break-guest-write");
                }
            }

            @Override
            public void after(io.blockjobs.sdk.block.WriteRequest r, boolean ok) {
                seen.add("after " + ok);
            }
        };
        setup.insertFilter(a.device(), new io.blockjobs.sdk.job.FilterSpec("mirror_top", "hooked", java.util.Map.of(),
                java.util.List.of(hook)));
        setup.use(a.device(), "source", NONE, READ_WRITE);
        SEEN.set(seen);
        return ctx -> {
            for (int i = 0; i < 3; i++) {
                ctx.pausePoint();
            }
        };
    });

    @Test
    void aClientWritesThroughTheJobsFilterAndItsHooksRunAsThePlatformRunsThem() throws Exception {
        try (JobHarness h = harness()) {
            RootEdge client = h.client("top");
            HarnessJob job = h.prepare(HOOKED, "{\"device\": \"top\", \"target\": \"target\"}").breakAt(2).start();
            job.awaitBreak();
            assertThat(client.target().nodeName()).isEqualTo("hooked");
            client.write(C, java.nio.ByteBuffer.wrap(new byte[] {7, 7}));
            assertThatThrownBy(() -> client.write(0, java.nio.ByteBuffer.wrap(new byte[] {9}))).hasMessage("break-guest-write");
            client.writeZeroes(2L * C, C, true);
            job.go();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(SEEN.get()).containsExactly("before WRITE 65536+2", "after true", "before WRITE 0+1",
                    "before WRITE_ZEROES 131072+65536", "after true");
            assertThat(client.target().nodeName()).as("the filter is gone; the client is back on its node").isEqualTo("top");
            assertThat(((MemoryNode) h.node("top")).view(C, 2)).containsExactly(7, 7);
            assertThat(((MemoryNode) h.node("top")).view(0, 1)).as("the refused write did not happen")
                    .isNotEqualTo(new byte[] {9});
        }
    }

    @Test
    void verbsAreRefusedInTheWrongStateWithQemusMessages() {
        try (JobHarness h = harness()) {
            HarnessJob job = h.prepare(COPY, "{\"job-id\": \"j\", \"device\": \"top\", \"target\": \"target\","
                    + " \"auto-dismiss\": false}");
            job.at(1, j -> assertThatThrownBy(j::complete)
                    .hasMessage("Job 'j' in state 'running' cannot accept command verb 'complete'"));
            job.at(2, j -> assertThatThrownBy(() -> j.change(java.util.Map.of("x", 1)))
                    .hasMessage("This job type does not support changing its options"));
            HarnessJob.Outcome o = job.start().awaitEnd();
            assertThat(o.status()).isEqualTo(JobStatus.CONCLUDED);
            assertThatThrownBy(job::pause).hasMessage("Job 'j' in state 'concluded' cannot accept command verb 'pause'");
            assertThatThrownBy(job::cancel).hasMessage("Job 'j' in state 'concluded' cannot accept command verb 'cancel'");
            job.dismiss();
            assertThat(job.status()).isEqualTo(JobStatus.NULL);
            assertThat(h.job("j")).isNull();
        }
    }

    /** A backup-like job: freezes the named bitmap, records what changes meanwhile in a bitmap of its own. */
    static final JobCommand<Args> INCREMENTAL = new JobCommand<>("x-test-incremental", "x-test-incremental", Args.class,
            (a, setup) -> {
                BlockNode src = setup.use(a.device(), "source", NONE, READ_WRITE);
                io.blockjobs.sdk.bitmap.DirtyBitmap sync = setup.useBitmap(a.device(), a.target());
                io.blockjobs.sdk.bitmap.DirtyBitmap mine = setup.createBitmap(a.device(), 0);
                return ctx -> {
                    sync.createSuccessor();
                    SEEN.set(java.util.List.of("frozen " + sync.count(), "mine " + mine.count()));
                    ctx.pausePoint();
                    ctx.pausePoint();
                    if (a.exclusive().orElse(false)) {
                        sync.abdicate(); // as backup's bitmap-mode on-success: what it copied is forgotten
                    } // else left for the platform to reclaim
                };
            });

    @Test
    void aJobFreezesABitmapAndTheWritesMeanwhileAreKept() throws Exception {
        for (boolean abdicate : new boolean[] {true, false}) {
            try (JobHarness h = harness()) {
                RootEdge client = h.client("top");
                HarnessBitmap b = h.addBitmap("top", "b", C);
                client.write(0, java.nio.ByteBuffer.wrap(new byte[] {1}));
                HarnessJob job = h.prepare(INCREMENTAL, "{\"device\": \"top\", \"target\": \"b\", \"exclusive\": "
                        + abdicate + "}").breakAt(1).start();
                job.awaitBreak();
                assertThat(SEEN.get()).containsExactly("frozen " + C, "mine 0");
                assertThat(b.busy()).isTrue();
                assertThatThrownBy(b::createSuccessor)
                        .hasMessage("Bitmap 'b' is currently in use by another operation and cannot be used");
                client.write(5L * C, java.nio.ByteBuffer.wrap(new byte[] {2}));
                assertThat(b.count()).as("frozen while the job runs").isEqualTo(C);
                job.go();
                assertThat(job.awaitEnd().completed()).isTrue();
                assertThat(b.busy()).isFalse();
                assertThat(b.isDirty(5L * C)).as("the write during the job is never lost").isTrue();
                assertThat(b.isDirty(0)).as(abdicate ? "abdicated: what was frozen is dropped" : "reclaimed").isEqualTo(!abdicate);
                assertThat(b.recording()).isTrue();
            }
        }
    }
}
