package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobCommand;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The conformance test every job plugin passes: extend it with the command, a chain of
 * {@link MemoryNode}s to run on, the arguments as JSON text and a check of the result, and it runs
 * the job as the platform would through everything the platform may do to it:
 *
 * <ul>
 *   <li>a run to its end (for a completable job: to {@code ready}, then {@code job-complete}),
 *       with QEMU's status changes and events, {@code prepare}, {@code commit}, {@code clean},
 *       progress at its total, and nothing left behind (filters, frozen links, edges, requests);</li>
 *   <li>a cancel at every pause point of that run: the job ends cancelled with no other error,
 *       {@code abort} runs, and the chain is unchanged or in a state the job allows
 *       ({@link #checkUnchanged});</li>
 *   <li>pause and resume: paused only with nothing in flight, and the same result after;</li>
 *   <li>a speed limit and changes of it mid-run: the bytes accounted as the job moves them, the
 *       limit sleeping as QEMU's rate limiter on the fake clock, a sleeping job woken by a new
 *       speed, the same result;</li>
 *   <li>every {@code on-error} policy with an injected read fault and a write fault (where the job
 *       says where they go): {@code report} fails, {@code ignore} goes on (and never completes with
 *       a wrong result), {@code stop} pauses with nothing in flight and retries once resumed,
 *       {@code enospc}/{@code auto} stop on ENOSPC and report anything else;</li>
 *   <li>a client writing beside the job, through whatever filter it put in: every write is in the
 *       result;</li>
 *   <li>for a completable job: {@code ready}, writes while it mirrors, {@code job-complete}, and a
 *       soft cancel; for any job: {@code job-complete} refused until ready;</li>
 *   <li>{@code auto-finalize}/{@code auto-dismiss} off, another member of the transaction failing
 *       to prepare (its edits undone), a second job on the same nodes refused, arguments checked
 *       as QMP checks them, an unknown device refused with nothing left behind.</li>
 * </ul>
 *
 * <p>Every test builds a fresh chain and harness ({@link #setUpHarness} installs what the job needs
 * besides the chain: a plugin's drivers, a target node). The job's arguments come from JSON text,
 * as a QMP client sends them; the tests change members of it ({@code speed}, the error policies
 * {@link #errorPolicyArgument} names).
 *
 * @param <A> the command's argument record
 */
public abstract class JobConformanceTest<A extends JobArgs> {
    /** Bytes per second for the speed tests: slow enough that a few MiB sleep. */
    protected static final long SPEED = 4L << 20;

    // ---- what a plugin's test says ---------------------------------------------------------------

    /** The command under test. */
    protected abstract JobCommand<A> command();

    /** A fresh chain for one run (called once per run). */
    protected abstract MemoryChain chain();

    /** The command's arguments as JSON text, e.g. {@code {"job-id": "j", "device": "top"}}. */
    protected abstract String arguments();

    /** Checks the nodes after a successful run; {@link Run#expected()} is what the client must read. */
    protected abstract void checkResult(Run run);

    /**
     * Sets up each fresh harness before the chain is added to it: install the plugin whose drivers
     * the job's filters need ({@link JobHarness#install}), add nodes that are not in the chain (a
     * backup's target, named in {@link #arguments()} and found in {@link #checkResult} with
     * {@code run.harness().node(name)}), objects. Nothing by default.
     */
    protected void setUpHarness(JobHarness harness) {
    }

    /**
     * The argument that sets the job's error policy for failed reads ({@code read}) or failed
     * writes: {@code on-error} for both by default; a job with QEMU's two policies names
     * {@code on-source-error} and {@code on-target-error}.
     */
    protected String errorPolicyArgument(boolean read) {
        return "on-error";
    }

    /**
     * Whether a client's write of a range the job is copying waits until that copy is done:
     * backup's copy-before-write must save the old data first, as QEMU's block-copy waits for the
     * copy in flight. By default it does not wait, and the job must let the newer data win.
     */
    protected boolean writesWaitForTheJobsCopy() {
        return false;
    }

    /** The node clients use (they write beside the job through it): the chain's top by default. */
    protected String clientNode(MemoryChain chain) {
        return chain.top().nodeName();
    }

    /**
     * Where a read fault hits the job's work, if the job reads (a memory node of the harness, in
     * the chain or added by {@link #setUpHarness}, and an offset it reads).
     */
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.empty();
    }

    /** Where a write fault hits the job's work, if the job writes. */
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        return Optional.empty();
    }

    /** The bytes the job must account against its speed limit on {@link #chain()}, if known. */
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.empty();
    }

    /**
     * Checks the nodes after a job was cancelled, failed or aborted: by default the client still
     * reads what it read before (with its own writes), and every layer's backing chain and
     * backing file are as they were. Override to allow more (or check more).
     */
    protected void checkUnchanged(Run run) {
        assertThat(run.clientView()).as("what the client reads").isEqualTo(run.expected());
        MemoryChain.Snapshot now = run.chain().snapshot();
        for (String name : run.chain().names()) {
            assertThat(now.links(name)).as("the backing chain of " + name).isEqualTo(run.before().links(name));
            assertThat(now.backingFiles().get(name)).as("the backing file of " + name)
                    .isEqualTo(run.before().backingFiles().get(name));
        }
    }

    /** Checks the nodes after a soft cancel of a ready job: as {@link #checkUnchanged} by default. */
    protected void checkSoftCancelled(Run run) {
        checkUnchanged(run);
    }

    /** The writes a client makes beside the job, in order. */
    protected List<ClientWrite> clientWrites(MemoryChain chain) {
        long size = chain.top().size();
        int cluster = chain.top().clusterSize();
        return List.of(
                ClientWrite.data(0, 4096, 101),                                   // a part of the first cluster
                ClientWrite.data(size / 2 - 512, cluster + 1024, 102),            // across clusters, unaligned
                ClientWrite.zeroes(size - cluster, cluster),                      // the last cluster
                ClientWrite.data(size / 4 + 3 * 512, 8 * 1024, 103));
    }

    // ---- the parts of a test -----------------------------------------------------------------------

    /** Where an injected fault goes: a layer, an offset in it, and how the job reports the failure. */
    public record FaultSite(String node, long offset, String operation) {
        /** A read of {@code node} covering {@code offset} fails; the job reports a failed read. */
        public static FaultSite read(String node, long offset) {
            return new FaultSite(node, offset, "read");
        }

        /** A write to {@code node} covering {@code offset} fails; the job reports a failed write. */
        public static FaultSite write(String node, long offset) {
            return new FaultSite(node, offset, "write");
        }

        /** The same site, reported as {@code operation} (a copy-on-read write fails the read that made it). */
        public FaultSite reportedAs(String op) {
            return new FaultSite(node, offset, op);
        }
    }

    /** A client's write: data drawn from a seed, or zeroes. */
    public record ClientWrite(long offset, int length, long seed, boolean zeroes) {
        /** Data drawn from {@code seed}. */
        public static ClientWrite data(long offset, int length, long seed) {
            return new ClientWrite(offset, length, seed, false);
        }

        /** A write-zeroes that may unmap. */
        public static ClientWrite zeroes(long offset, int length) {
            return new ClientWrite(offset, length, 0, true);
        }

        /** Sends the write through {@code client}. */
        public void apply(BlockNode client) throws IOException {
            if (zeroes) {
                client.writeZeroes(offset, length, Set.of(RequestFlag.MAY_UNMAP));
            } else {
                client.write(offset, ByteBuffer.wrap(bytes()));
            }
        }

        /** Applies the write to a model of what the client reads. */
        public void apply(byte[] model) {
            System.arraycopy(zeroes ? new byte[length] : bytes(), 0, model, (int) offset, length);
        }

        private byte[] bytes() {
            byte[] b = new byte[length];
            new SplittableRandom(seed).nextBytes(b);
            return b;
        }
    }

    /** One run of the job: the nodes, the harness, what was there before, and what the client must read. */
    public static final class Run {
        private final MemoryChain chain;
        private final JobHarness harness;
        private final MemoryChain.Snapshot before;
        private final String clientNode;
        private final RootEdge client;
        private final byte[] expected;
        private HarnessJob job;
        private HarnessJob.Outcome outcome;

        Run(MemoryChain chain, JobHarness harness, String clientNode) {
            this.chain = chain;
            this.harness = harness;
            this.before = chain.snapshot();
            this.clientNode = clientNode;
            this.client = harness.client(clientNode);
            this.expected = before.view(clientNode);
        }

        public MemoryChain chain() {
            return chain;
        }

        public JobHarness harness() {
            return harness;
        }

        /** The memory node named {@code name} in the harness: a layer of the chain, or one {@link #setUpHarness} added. */
        public MemoryNode memoryNode(String name) {
            if (harness.node(name) instanceof MemoryNode m) {
                return m;
            }
            throw new IllegalArgumentException("no memory node '" + name + "' in the harness: " + harness.nodeNames());
        }

        /** The chain before the job started. */
        public MemoryChain.Snapshot before() {
            return before;
        }

        public HarnessJob job() {
            return job;
        }

        public HarnessJob.Outcome outcome() {
            return outcome;
        }

        /** The client's edge: it follows the job's filters and switch-over. */
        public RootEdge client() {
            return client;
        }

        /** The node the client used when the run began. */
        public String clientNode() {
            return clientNode;
        }

        /** What the client must read: what it read before, with its writes. */
        public byte[] expected() {
            return expected.clone();
        }

        /** What the client reads now (through whatever node it uses now). */
        public byte[] clientView() {
            return ViewSource.whole(client.target());
        }

        /** What layer {@code name} reads now. */
        public byte[] view(String name) {
            return chain.node(name).view();
        }

        /** Layer {@code name}'s backing chain now. */
        public List<String> links(String name) {
            return MemoryChain.links(chain.node(name));
        }

        /** Sends a client write and records it in what the client must read. */
        public void write(ClientWrite w) {
            try {
                w.apply(client);
            } catch (IOException e) {
                throw new AssertionError("the client's write failed: " + e.getMessage(), e);
            }
            synchronized (expected) {
                w.apply(expected);
            }
        }
    }

    // ---- running -----------------------------------------------------------------------------------

    /** A fresh chain and harness with a client on {@link #clientNode}. */
    protected final Run newRun() {
        return newRun(new JobHarness());
    }

    private Run newRun(JobHarness harness) {
        setUpHarness(harness);
        MemoryChain chain = chain();
        harness.add(chain);
        return new Run(chain, harness, clientNode(chain));
    }

    /** Prepares the job of {@code run} from {@code json}. */
    protected final HarnessJob prepare(Run run, String json) {
        run.job = run.harness.prepare(command(), json);
        return run.job;
    }

    /**
     * Drives a started job to its end as a management tool would: a completable job gets
     * {@code job-complete} once ready (or {@code onReady}), a job without auto-finalize gets
     * {@code job-finalize}, one without auto-dismiss {@code job-dismiss}.
     */
    protected final HarnessJob.Outcome drive(Run run, Runnable onReady) {
        HarnessJob job = run.job;
        if (job.body().completable()) {
            JobStatus s = job.awaitStatus(JobStatus.READY, JobStatus.PENDING, JobStatus.CONCLUDED, JobStatus.NULL);
            if (s == JobStatus.READY) {
                job.awaitIdle(); // in sync and waiting: the run has the same pause points every time
                onReady.run();
            }
        }
        if (!job.autoFinalize()) {
            if (job.awaitStatus(JobStatus.PENDING, JobStatus.CONCLUDED, JobStatus.NULL) == JobStatus.PENDING) {
                job.finalizeJob();
            }
        }
        HarnessJob.Outcome o = job.awaitEnd();
        if (!job.autoDismiss() && job.status() == JobStatus.CONCLUDED) {
            job.dismiss();
            o = job.outcome();
        }
        run.outcome = o;
        return o;
    }

    private HarnessJob.Outcome drive(Run run) {
        return drive(run, run.job::complete);
    }

    /** The pause points of a full run, and how many came before {@code ready}. */
    private record Count(int total, int beforeReady, long throttled) {
    }

    private Count countPausePoints() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, arguments()).start();
            int[] ready = {-1};
            HarnessJob.Outcome o = drive(run, () -> {
                ready[0] = job.pausePoints();
                job.complete();
            });
            assertSucceeded(run, o);
            return new Count(o.pausePoints(), ready[0] < 0 ? o.pausePoints() : ready[0], o.throttledBytes());
        }
    }

    // ---- checks ------------------------------------------------------------------------------------

    private void assertSucceeded(Run run, HarnessJob.Outcome o) {
        assertThat(o.failure()).as("what run threw").isNull();
        assertThat(o.completed()).as("completed without error: " + o.events()).isTrue();
        assertThat(o.violations()).as("SDK rules broken").isEmpty();
        assertThat(o.hooks()).as("hooks").containsSubsequence("run", "prepare", "commit", "clean").doesNotContain("abort");
        List<String> statuses = new ArrayList<>(List.of("created", "running"));
        if (run.job.body().completable()) {
            statuses.add("ready");
        }
        statuses.addAll(List.of("waiting", "pending", "concluded", "null"));
        assertThat(o.statuses().stream().filter(s -> !s.equals("paused") && !s.equals("standby")).toList())
                .as("JOB_STATUS_CHANGE").containsSubsequence(statuses);
        assertThat(o.blockJobEvents()).as("events").endsWith("BLOCK_JOB_COMPLETED")
                .doesNotContain("BLOCK_JOB_CANCELLED");
        if (run.job.body().completable()) {
            assertThat(o.blockJobEvents()).contains("BLOCK_JOB_READY");
        } else {
            assertThat(o.blockJobEvents()).doesNotContain("BLOCK_JOB_READY");
        }
        assertThat(o.progressDone()).as("progress at the end").isEqualTo(o.progressTotal());
        assertNothingLeft(run);
    }

    private void assertCancelled(Run run, HarnessJob.Outcome o) {
        assertThat(o.failure()).as("no exception other than the cancel").isNull();
        assertThat(o.cancelled()).as("BLOCK_JOB_CANCELLED: " + o.events()).isTrue();
        assertThat(o.violations()).as("SDK rules broken").isEmpty();
        assertThat(o.hooks()).as("hooks").contains("abort", "clean").doesNotContain("commit");
        assertThat(o.statuses()).as("JOB_STATUS_CHANGE").endsWith("aborting", "concluded", "null");
        assertNothingLeft(run);
        checkUnchanged(run);
    }

    private void assertFailed(Run run, HarnessJob.Outcome o, Errno errno) {
        assertThat(o.completed()).as("completed: " + o.events()).isFalse();
        assertThat(o.cancelled()).as("cancelled").isFalse();
        assertThat(o.error()).as("the error BLOCK_JOB_COMPLETED carries").contains(errno.message());
        assertThat(o.violations()).as("SDK rules broken").isEmpty();
        assertThat(o.hooks()).as("hooks").contains("abort", "clean").doesNotContain("commit");
        assertThat(o.statuses()).as("JOB_STATUS_CHANGE").endsWith("aborting", "concluded", "null");
        assertNothingLeft(run);
        checkUnchanged(run);
    }

    /** Filters taken out, links unfrozen, edges given back, nothing in flight. */
    private void assertNothingLeft(Run run) {
        JobHarness h = run.harness;
        assertThat(h.filters()).as("filters left in the graph").isEmpty();
        assertThat(h.frozenLinks()).as("frozen links left").isEmpty();
        assertThat(h.edges()).as("edges left").allMatch(RootEdge::isClient);
        assertThat(run.job.copiesInFlight()).as("copies in flight").isZero();
        assertThat(h.requestsInFlight()).as("requests in flight").isZero();
        assertThat(run.client.target().nodeName()).as("the client's node").isIn(h.nodeNames());
    }

    /** A client write after the job, with a deadline: a drain the job did not end would hold it forever. */
    private void assertClientStillWrites(Run run) throws Exception {
        ClientWrite w = ClientWrite.data(run.chain.top().clusterSize() * 3L + 100, 2000, 999);
        Thread t = Thread.ofVirtual().start(() -> run.write(w));
        t.join(TimeUnit.SECONDS.toMillis(30));
        assertThat(t.isAlive()).as("a client write after the job is still held off (a drain was not ended)").isFalse();
        assertThat(run.clientView()).as("what the client reads after its last write").isEqualTo(run.expected());
    }

    /** Waits until {@code t} is parked (waiting for something) or ended, for at most 30 s. */
    private static void awaitParked(Thread t) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (t.isAlive() && t.getState() != Thread.State.WAITING && t.getState() != Thread.State.TIMED_WAITING
                && System.nanoTime() < deadline) {
            java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1)); // polls a state
        }
    }

    private static void assertPausedWithNothingInFlight(HarnessJob job) {
        List<HarnessJob.Pause> pauses = job.pauses();
        assertThat(pauses).as("pauses").isNotEmpty();
        HarnessJob.Pause p = pauses.get(pauses.size() - 1);
        assertThat(p.copiesInFlight()).as("copies in flight when the job reported itself paused").isZero();
        assertThat(p.requestsInFlight()).as("requests in flight when the job reported itself paused").isZero();
        assertThat(job.info().paused()).isTrue();
        assertThat(job.info().busy()).isFalse();
    }

    private static long ioCount(MemoryChain chain) {
        long n = 0;
        for (MemoryNode m : chain.layers()) {
            n += m.reads() + m.writes();
        }
        return n;
    }

    // ---- the tests ---------------------------------------------------------------------------------

    @Test
    void runsToItsEnd() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            prepare(run, arguments()).start();
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
            assertClientStillWrites(run);
        }
    }

    @TestFactory
    Stream<DynamicTest> cancelAtEveryPausePoint() {
        Count count = countPausePoints();
        assertThat(count.total()).as("pause points in a full run: a job must have some").isPositive();
        return IntStream.rangeClosed(1, count.total()).mapToObj(k -> DynamicTest.dynamicTest(
                "job-cancel at pause point " + k + " of " + count.total(), () -> {
                    try (JobHarness harness = new JobHarness()) {
                        Run run = newRun(harness);
                        prepare(run, arguments()).at(k, HarnessJob::cancel).start();
                        HarnessJob.Outcome o = drive(run);
                        assertCancelled(run, o);
                    }
                }));
    }

    @Test
    void pausesWithNothingInFlightAndResumesToTheSameResult() throws Exception {
        Count count = countPausePoints();
        int k = Math.max(1, count.beforeReady() / 2);
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, arguments());
            job.at(1, j -> assertThatThrownBy(j::resume).hasMessage("Can't resume a job that was not paused"));
            job.at(k, HarnessJob::pause).start();
            JobStatus paused = job.awaitStatus(JobStatus.PAUSED, JobStatus.STANDBY);
            long io = ioCount(run.chain);
            assertPausedWithNothingInFlight(job);
            assertThatThrownBy(job::pause).hasMessage("Job is already paused");
            assertThatThrownBy(() -> job.blockJobCancel(false))
                    .hasMessage("The block job for device '" + job.id() + "' is currently paused");
            assertThat(ioCount(run.chain)).as("I/O while paused").isEqualTo(io);
            assertThat(job.status()).isEqualTo(paused);
            job.resume();
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            assertThat(o.statuses()).containsSubsequence(paused.qmpName(), paused == JobStatus.PAUSED ? "running" : "ready");
            assertThat(o.hooks()).containsSubsequence("pause", "resume");
            checkResult(run);
        }
    }

    @Test
    void theSpeedLimitSleepsAsQemusRateLimiterAndChangesTakeEffect() {
        Count count = countPausePoints();
        String limited = QmpArguments.with(arguments(), "speed", SPEED);
        // a whole run at one speed: the limiter's time is the bytes over the quota
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            throttledBytes(run.chain).ifPresent(b -> assertThat(count.throttled()).as("bytes accounted").isEqualTo(b));
            HarnessJob job = prepare(run, limited).start();
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
            assertThat(o.throttledBytes()).as("bytes accounted at a speed limit").isEqualTo(count.throttled());
            long quota = job.sliceQuota();
            long expected = o.throttledBytes() < quota ? 0
                    : (long) ((double) o.throttledBytes() / quota * RateLimit.SLICE_NANOS);
            assertThat(o.sleptNanos()).as("time slept for " + o.throttledBytes() + " bytes at " + SPEED + " B/s")
                    .isEqualTo(expected);
            assertThat(o.events().stream().filter(e -> e.name().equals("BLOCK_JOB_COMPLETED")).map(e -> e.get("speed")))
                    .as("the speed BLOCK_JOB_COMPLETED shows").containsExactly(String.valueOf(SPEED));
        }
        // the limit lifted mid-run: no sleep after
        int k = Math.max(1, count.beforeReady() / 2);
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            long[] sleptBefore = {-1};
            HarnessJob job = prepare(run, limited).at(k, j -> {
                assertThatThrownBy(() -> j.setSpeed(-1)).hasMessage("Parameter 'speed' expects a non-negative value");
                sleptBefore[0] = j.sleptNanos();
                j.setSpeed(0);
            }).start();
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
            assertThat(o.throttledBytes()).isEqualTo(count.throttled());
            assertThat(o.sleptNanos()).as("time slept after set-speed 0").isEqualTo(sleptBefore[0]);
            assertThat(job.info().speed()).isZero();
        }
    }

    @Test
    void aJobSleepingInItsSpeedLimitWakesForANewSpeed() {
        Count count = countPausePoints();
        try (JobHarness harness = new JobHarness(FakeClock.manual())) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, QmpArguments.with(arguments(), "speed", SPEED));
            long quota;
            assumeTrue(count.throttled() >= SPEED / 10, "the job moves less than a slice's quota: it never sleeps");
            job.start();
            job.awaitSleeping();
            quota = job.sliceQuota();
            assertThat(quota).isPositive();
            long now = harness.clock().nanoTime();
            job.setSpeed(0);
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
            assertThat(harness.clock().nanoTime()).as("the clock never moved").isEqualTo(now);
        }
    }

    /** One case of an on-error policy. */
    private record Policy(String onError, Errno errno, String action) {
    }

    private static final List<Policy> POLICIES = List.of(
            new Policy("report", Errno.EIO, "report"),
            new Policy("ignore", Errno.EIO, "ignore"),
            new Policy("stop", Errno.EIO, "stop"),
            new Policy("enospc", Errno.ENOSPC, "stop"),
            new Policy("enospc", Errno.EIO, "report"),
            new Policy("auto", Errno.ENOSPC, "stop"),
            new Policy("auto", Errno.EIO, "report"));

    @TestFactory
    Stream<DynamicTest> everyOnErrorPolicy() {
        MemoryChain probe = chain();
        List<DynamicTest> tests = new ArrayList<>();
        for (boolean read : new boolean[] {true, false}) {
            Optional<FaultSite> site = read ? readFault(probe) : writeFault(probe);
            if (site.isEmpty()) {
                continue;
            }
            for (Policy p : POLICIES) {
                tests.add(DynamicTest.dynamicTest(errorPolicyArgument(read) + " " + p.onError() + ", "
                        + (read ? "read" : "write") + " fault "
                        + p.errno() + " at " + site.get().node() + ":" + site.get().offset(),
                        () -> onError(p, read, site.get())));
            }
        }
        assumeTrue(!tests.isEmpty(), "the test names no fault site (readFault, writeFault)");
        return tests.stream();
    }

    private void onError(Policy p, boolean read, FaultSite site) throws Exception {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            MemoryNode node = run.memoryNode(site.node());
            Fault fault = read ? node.failReadOnce(site.offset(), p.errno()) : node.failWriteOnce(site.offset(), p.errno());
            HarnessJob job = prepare(run, QmpArguments.with(arguments(), errorPolicyArgument(read), p.onError())).start();
            if (p.action().equals("stop")) {
                JobStatus s = job.awaitStatus(JobStatus.PAUSED, JobStatus.STANDBY);
                assertPausedWithNothingInFlight(job);
                assertThat(job.info().ioStatus()).as("io-status").isEqualTo(p.errno() == Errno.ENOSPC ? "nospace" : "failed");
                assertThat(job.status()).isEqualTo(s);
                job.resume();
            }
            HarnessJob.Outcome o = drive(run);
            assertThat(fault.hits()).as(fault + " was never hit: the site is not on the job's path").isPositive();
            List<JobEvent> errors = o.events().stream().filter(e -> e.name().equals("BLOCK_JOB_ERROR")).toList();
            assertThat(errors).as("BLOCK_JOB_ERROR").isNotEmpty();
            assertThat(errors.get(0).get("action")).isEqualTo(p.action());
            assertThat(errors.get(0).get("operation")).isEqualTo(site.operation());
            switch (p.action()) {
                case "report" -> assertFailed(run, o, p.errno());
                case "stop" -> {
                    assertSucceeded(run, o);
                    checkResult(run);
                }
                default -> { // ignore: the job goes on, then completes right or fails
                    assertThat(o.statuses()).as("an ignored error never pauses").doesNotContain("paused", "standby");
                    if (o.completed()) {
                        assertSucceeded(run, o);
                        checkResult(run);
                    } else {
                        assertFailed(run, o, p.errno());
                    }
                }
            }
        }
    }

    @Test
    void aClientsWritesBesideTheJobAreAllInTheResult() throws Exception {
        Count count = countPausePoints();
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            List<ClientWrite> writes = clientWrites(run.chain);
            int last = Math.max(1, count.beforeReady());
            List<Integer> at = new ArrayList<>();
            for (int i = 0; i < writes.size(); i++) {
                at.add(Math.max(1, (int) ((long) last * i / writes.size())));
            }
            List<Integer> points = at.stream().distinct().sorted().toList();
            HarnessJob job = prepare(run, arguments());
            points.forEach(job::breakAt);
            job.start();
            int w = 0;
            for (int point : points) {
                assertThat(job.awaitBreak()).isEqualTo(point);
                for (int i = 0; i < writes.size(); i++) {
                    if (at.get(i) == point) {
                        run.write(writes.get(i)); // copies may be in flight now
                        w++;
                    }
                }
                job.go();
            }
            assertThat(w).isEqualTo(writes.size());
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
            assertClientStillWrites(run);
        }
    }

    /**
     * A client writes a range while the job's read of it is in flight (held at the read fault's
     * site): whatever the job does with what it read, the client's newer data must win. Where
     * {@link #writesWaitForTheJobsCopy} the write waits, without landing, until the read is let go.
     */
    @Test
    void aClientsWriteWhileTheJobReadsTheSameRangeWins() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            Optional<FaultSite> site = readFault(run.chain);
            assumeTrue(site.isPresent(), "the test names no read site (readFault)");
            MemoryNode node = run.memoryNode(site.get().node());
            Stall stall = node.stallRead(site.get().offset());
            prepare(run, arguments()).start();
            stall.awaitStalled();
            int cluster = run.chain.top().clusterSize();
            long start = site.get().offset() / cluster * cluster;
            Thread writer = Thread.ofVirtual().start(() -> run.write(ClientWrite.data(start, cluster, 77)));
            if (writesWaitForTheJobsCopy()) {
                awaitParked(writer);
                assertThat(writer.isAlive()).as("the client's write waits for the job's copy of the range").isTrue();
                byte[] old = java.util.Arrays.copyOfRange(run.before().view(run.clientNode()), (int) start,
                        (int) start + cluster);
                assertThat(run.chain.node(run.clientNode()).view(start, cluster)).as("the write has not landed yet")
                        .isEqualTo(old);
                stall.release();
                writer.join(TimeUnit.SECONDS.toMillis(30));
                assertThat(writer.isAlive()).as("the client's write ends once the job's copy did").isFalse();
            } else {
                writer.join(TimeUnit.SECONDS.toMillis(30));
                assertThat(writer.isAlive()).as("the client's write does not wait for the job's read").isFalse();
                stall.release();
            }
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            checkResult(run);
        }
    }

    @Test
    void jobCompleteIsRefusedUntilTheJobIsReady() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, arguments());
            job.at(1, j -> assertThatThrownBy(j::complete).isInstanceOf(CommandException.class)
                    .hasMessage("Job '" + j.id() + "' in state 'running' cannot accept command verb 'complete'"));
            job.start();
            assertSucceeded(run, drive(run));
            checkResult(run);
        }
    }

    @Test
    void aReadyJobKeepsAClientsWritesAndCompletes() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, arguments());
            assumeTrue(job.body().completable(), "the job does not converge");
            List<ClientWrite> writes = clientWrites(run.chain);
            job.breakAt(1).start();
            job.awaitBreak();
            run.write(writes.get(0));
            job.go();
            job.awaitStatus(JobStatus.READY);
            assertThat(job.awaitEvent("BLOCK_JOB_READY").data()).containsEntry("device", job.id());
            Thread writer = Thread.ofVirtual().start(() -> writes.subList(1, writes.size()).forEach(run::write));
            writer.join(TimeUnit.SECONDS.toMillis(30));
            assertThat(writer.isAlive()).as("the client's writes while the job is ready").isFalse();
            job.pause();
            job.awaitStatus(JobStatus.STANDBY);
            assertPausedWithNothingInFlight(job);
            job.resume();
            job.awaitStatus(JobStatus.READY);
            HarnessJob.Outcome o = drive(run);
            assertSucceeded(run, o);
            assertThat(o.statuses()).containsSubsequence("ready", "standby", "ready", "waiting");
            checkResult(run);
            assertClientStillWrites(run);
        }
    }

    @Test
    void aSoftCancelOfAReadyJobFinishesWithoutTheSwitchOver() throws Exception {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob job = prepare(run, arguments());
            assumeTrue(job.body().completable(), "the job does not converge");
            List<ClientWrite> writes = clientWrites(run.chain);
            job.start();
            job.awaitStatus(JobStatus.READY);
            writes.forEach(run::write);
            HarnessJob.Outcome o = drive(run, () -> job.blockJobCancel(false));
            assertThat(o.failure()).isNull();
            assertThat(o.completed()).as("a soft cancel ends as BLOCK_JOB_COMPLETED: " + o.events()).isTrue();
            assertThat(o.violations()).isEmpty();
            assertThat(o.hooks()).contains("abort", "clean").doesNotContain("prepare", "commit");
            assertNothingLeft(run);
            assertThat(run.client().target().nodeName()).as("the client stays where it was").isEqualTo(run.clientNode());
            checkSoftCancelled(run);
            assertClientStillWrites(run);
        }
    }

    @Test
    void finalizesAndDismissesOnlyWhenAsked() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            String json = QmpArguments.with(QmpArguments.with(arguments(), "auto-finalize", false), "auto-dismiss", false);
            HarnessJob job = prepare(run, json).start();
            if (job.body().completable()) {
                job.awaitStatus(JobStatus.READY);
                job.complete();
            }
            job.awaitStatus(JobStatus.PENDING);
            assertThat(job.awaitEvent("BLOCK_JOB_PENDING").data()).containsEntry("id", job.id());
            assertThat(job.outcome().hooks()).doesNotContain("prepare");
            job.finalizeJob();
            assertThat(job.status()).isEqualTo(JobStatus.CONCLUDED);
            assertThat(harness.job(job.id())).as("a concluded job stays until dismissed").isSameAs(job);
            job.dismiss();
            run.outcome = job.outcome();
            assertSucceeded(run, run.outcome);
            assertThat(harness.job(job.id())).isNull();
            checkResult(run);
        }
    }

    @Test
    void anotherMemberFailingToPrepareAbortsTheJobAndUndoesItsEdits() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            prepare(run, arguments()).withFailingPartner("the other member failed").start();
            HarnessJob.Outcome o = drive(run);
            assertThat(o.hooks()).containsSubsequence("prepare", "abort", "clean").doesNotContain("commit");
            assertCancelled(run, o);
        }
    }

    @Test
    void aSecondJobOnTheSameNodesIsRefusedAndLeavesNothingBehind() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            HarnessJob first = prepare(run, arguments()).breakAt(1).start();
            first.awaitBreak();
            List<String> filters = harness.filters();
            List<RootEdge> edges = harness.edges();
            Set<String> nodes = harness.nodeNames();
            String second = QmpArguments.with(arguments(), "job-id", "second-job");
            assertThatThrownBy(() -> harness.prepare(command(), second)).isInstanceOf(CommandException.class);
            assertThat(harness.filters()).isEqualTo(filters);
            assertThat(harness.edges()).isEqualTo(edges);
            assertThat(harness.nodeNames()).isEqualTo(nodes);
            first.go();
            assertSucceeded(run, drive(run));
            checkResult(run);
        }
    }

    @Test
    void argumentsAreCheckedAsQmpChecksThem() {
        Class<A> type = command().arguments();
        String json = arguments();
        assertThatThrownBy(() -> QmpArguments.parse(type, QmpArguments.with(json, "x-no-such-member", 1)))
                .isInstanceOf(CommandException.class).hasMessage("Parameter 'x-no-such-member' is unexpected");
        assertThatThrownBy(() -> QmpArguments.parse(type, QmpArguments.without(json, "device")))
                .hasMessage("Parameter 'device' is missing");
        assertThatThrownBy(() -> QmpArguments.parse(type, QmpArguments.with(json, "device", 5)))
                .hasMessage("Invalid parameter type for 'device', expected: string");
        String onRead = errorPolicyArgument(true);
        String onWrite = errorPolicyArgument(false);
        assertThatThrownBy(() -> QmpArguments.parse(type, QmpArguments.with(json, onRead, "sometimes")))
                .hasMessage("Parameter '" + onRead + "' does not accept value 'sometimes'");
        assertThatThrownBy(() -> QmpArguments.parse(type, QmpArguments.with(json, "speed", "fast")))
                .hasMessage("Invalid parameter type for 'speed', expected: integer");
        A args = QmpArguments.parse(type, QmpArguments.with(QmpArguments.with(json, onRead, "enospc"), "speed", 7));
        assertThat(args.onSourceError().or(args::onError)).as(onRead).hasValue(io.blockjobs.sdk.job.OnError.ENOSPC);
        A writes = QmpArguments.parse(type, QmpArguments.with(json, onWrite, "stop"));
        assertThat(writes.onTargetError().or(writes::onError)).as(onWrite).hasValue(io.blockjobs.sdk.job.OnError.STOP);
        assertThat(args.speed()).hasValue(7L);
        assertThat(args.device()).isEqualTo(QmpArguments.member(json, "device"));
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            assertThatThrownBy(() -> prepare(run, QmpArguments.with(json, "speed", -1)))
                    .hasMessage("Parameter 'speed' expects a non-negative value");
        }
    }

    @Test
    void anUnknownDeviceIsRefusedWithNothingLeftBehind() {
        try (JobHarness harness = new JobHarness()) {
            Run run = newRun(harness);
            Set<String> nodes = harness.nodeNames();
            String json = QmpArguments.with(arguments(), "device", "nowhere");
            assertThatThrownBy(() -> prepare(run, json)).isInstanceOf(CommandException.class).hasMessageContaining("nowhere");
            assertThat(harness.nodeNames()).isEqualTo(nodes);
            assertThat(harness.filters()).isEmpty();
            assertThat(harness.edges()).allMatch(RootEdge::isClient);
            assertThat(harness.frozenLinks()).isEmpty();
        }
    }
}
