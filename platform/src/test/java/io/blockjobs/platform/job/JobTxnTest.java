package io.blockjobs.platform.job;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.fail;

import io.blockjobs.platform.event.Event;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.DriverRegistry;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.OnError;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Job transactions in-process, after QEMU's {@code tests/unit/test-blockjob-txn.c}: a real
 * {@link JobManager}, {@link EventBus} and (empty) {@link BlockGraph}, a single thread standing
 * in for the daemon's main loop (a call from that thread runs inline, as
 * {@code QmpDispatcher.callOnMainLoop} does), and job bodies scripted through latches: each
 * run waits for its {@code go}, meets a pause point, then succeeds or fails; a cancel opens
 * {@code go} unless told not to. Verbs are sent on the main loop, as QMP sends them.
 *
 * <p>A transaction handles its members newest first, as QEMU's does ({@code job_txn_add_job}
 * inserts at the head of the list, and {@code job_txn_apply} walks it from there): job2
 * becomes pending, prepares, commits or aborts and announces its end before job1. Seen the
 * same with qemu-storage-daemon 7.2 and two grouped blockdev-backup jobs, finalized or
 * cancelled while pending.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class JobTxnTest {
    private static final long WAIT_SECONDS = 10;

    private static final List<String> SUCCEEDED = List.of("created", "running", "waiting", "pending", "concluded",
            "null");
    private static final List<String> ABORTED_RUNNING = List.of("created", "running", "aborting", "concluded", "null");
    private static final List<String> ABORTED_WAITING = List.of("created", "running", "waiting", "aborting",
            "concluded", "null");
    private static final List<String> ABORTED_PENDING = List.of("created", "running", "waiting", "pending",
            "aborting", "concluded", "null");

    private volatile Thread mainThread;
    private ExecutorService mainExecutor;
    private JobManager jobs;
    private final List<Event> seen = new ArrayList<>(); // guarded by itself
    /** Every prepare/commit/abort/clean, as "job1.prepare", in the order they ran. */
    private final List<String> hooks = Collections.synchronizedList(new ArrayList<>());
    /** Hooks that ran off the main loop (there should be none). */
    private final List<String> offMainLoop = Collections.synchronizedList(new ArrayList<>());

    @BeforeEach
    void setUp() {
        mainExecutor = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "test-main-loop");
            mainThread = t;
            return t;
        });
        JobManager.MainLoop mainLoop = new JobManager.MainLoop() {
            @Override
            public <T> T call(Callable<T> task) throws Exception {
                if (Thread.currentThread() == mainThread) {
                    return task.call();
                }
                try {
                    return mainExecutor.submit(task).get();
                } catch (ExecutionException e) {
                    throw e.getCause() instanceof Exception ex ? ex : new RuntimeException(e.getCause());
                }
            }
        };
        EventBus events = new EventBus();
        events.subscribe(e -> {
            synchronized (seen) {
                seen.add(e);
                seen.notifyAll();
            }
        });
        jobs = new JobManager(events, new BlockGraph(new DriverRegistry()), mainLoop);
    }

    @AfterEach
    void tearDown() {
        jobs.close();
        mainExecutor.shutdownNow();
    }

    // ---- QEMU's test_single_job ----------------------------------------------------------------------

    @Test
    void singleJobSucceeds() throws Exception {
        TestBody b = new TestBody("job1");
        startAlone(b);
        b.go.countDown();
        awaitStatus("job1", "null");
        assertThat(statuses("job1")).isEqualTo(SUCCEEDED);
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_COMPLETED job1");
        assertThat(hooks).containsExactly("job1.prepare", "job1.commit", "job1.clean");
        assertThat(offMainLoop).isEmpty();
        assertThat(onMainLoop(jobs::all)).isEmpty();
    }

    @Test
    void singleJobFails() throws Exception {
        TestBody b = new TestBody("job1");
        b.runError = "job1 failed";
        startAlone(b);
        b.go.countDown();
        awaitStatus("job1", "null");
        assertThat(statuses("job1")).isEqualTo(ABORTED_RUNNING);
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_COMPLETED job1 error=job1 failed");
        assertThat(hooks).containsExactly("job1.abort", "job1.clean");
        assertThat(offMainLoop).isEmpty();
    }

    @Test
    void singleJobIsCancelled() throws Exception {
        TestBody b = new TestBody("job1");
        Job job = startAlone(b);
        onMainLoop(() -> jobs.cancel(job, true));
        awaitStatus("job1", "null");
        assertThat(b.cancels).hasValue(1);
        assertThat(statuses("job1")).isEqualTo(ABORTED_RUNNING);
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_CANCELLED job1");
        assertThat(hooks).containsExactly("job1.abort", "job1.clean");
        assertThat(offMainLoop).isEmpty();
    }

    // ---- QEMU's test_pair_jobs, every combination --------------------------------------------------

    enum Fate { SUCCEED, FAIL, CANCEL }

    static Stream<Arguments> fatePairs() {
        List<Arguments> pairs = new ArrayList<>();
        for (Fate f1 : Fate.values()) {
            for (Fate f2 : Fate.values()) {
                pairs.add(Arguments.of(f1, f2));
            }
        }
        return pairs.stream();
    }

    /**
     * job1 meets its fate first (as in QEMU's test, where it runs one iteration to job2's two);
     * job2 meets its own only if it is still running by then. QEMU's rule: the failure or cancel
     * of one member cancels the other.
     */
    @ParameterizedTest(name = "job1 {0}, then job2 {1}")
    @MethodSource("fatePairs")
    void pairInAGroupedTransaction(Fate fate1, Fate fate2) throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        List<Job> started = startGrouped(true, true, b1, b2);
        meet(started.get(0), b1, fate1);
        if (fate1 == Fate.SUCCEED) {
            awaitStatus("job1", "waiting");
            meet(started.get(1), b2, fate2);
        }
        awaitStatus("job1", "null");
        awaitStatus("job2", "null");

        Fate end1 = fate1;
        Fate end2 = fate2;
        if (fate1 != Fate.SUCCEED) {
            end2 = Fate.CANCEL;
        } else if (fate2 != Fate.SUCCEED) {
            end1 = Fate.CANCEL;
        }
        assertThat(blockEvents()).containsExactly(event("job2", end2), event("job1", end1));
        assertThat(statuses("job1")).isEqualTo(end1 == Fate.SUCCEED ? SUCCEEDED
                : fate1 == Fate.SUCCEED ? ABORTED_WAITING : ABORTED_RUNNING);
        assertThat(statuses("job2")).isEqualTo(end2 == Fate.SUCCEED ? SUCCEEDED : ABORTED_RUNNING);
        if (end1 == Fate.SUCCEED && end2 == Fate.SUCCEED) {
            assertThat(hooks).containsExactly("job2.prepare", "job1.prepare", "job2.commit", "job2.clean",
                    "job1.commit", "job1.clean");
        } else {
            assertThat(hooks).containsExactly("job2.abort", "job2.clean", "job1.abort", "job1.clean");
        }
        if (fate1 != Fate.SUCCEED) {
            assertThat(b2.cancels).as("job2 cancelled by the transaction").hasValue(1);
        }
        assertThat(offMainLoop).isEmpty();
        assertThat(onMainLoop(jobs::all)).as("jobs after the last event").isEmpty();
    }

    /**
     * QEMU's test_pair_jobs_fail_cancel_race: job1 is cancelled, but job2 finishes its work
     * before job1 acts on the cancel; both end cancelled. job1 either meets the cancel at a pause
     * point or returns from its run without one (a cancelled job that returns is cancelled still).
     */
    @ParameterizedTest(name = "job1 meets a pause point: {0}")
    @ValueSource(booleans = {true, false})
    void failCancelRace(boolean meetsPausePoint) throws Exception {
        TestBody b1 = new TestBody("job1");
        b1.goOnCancel = false;
        b1.pausePoint = meetsPausePoint;
        TestBody b2 = new TestBody("job2");
        List<Job> started = startGrouped(true, true, b1, b2);
        onMainLoop(() -> jobs.cancel(started.get(0), true));
        b2.go.countDown();
        awaitStatus("job2", "waiting");
        b1.go.countDown();
        awaitStatus("job1", "null");
        awaitStatus("job2", "null");
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_CANCELLED job2", "BLOCK_JOB_CANCELLED job1");
        assertThat(statuses("job1")).isEqualTo(ABORTED_RUNNING);
        assertThat(statuses("job2")).isEqualTo(ABORTED_WAITING);
        assertThat(hooks).containsExactly("job2.abort", "job2.clean", "job1.abort", "job1.clean");
        assertThat(offMainLoop).isEmpty();
    }

    // ---- prepare, commit, abort, clean -------------------------------------------------------------

    /**
     * Both members did their work; one's prepare fails. Nobody commits; every member aborts and
     * cleans once; the one that failed completes with its error, the other is cancelled.
     */
    @ParameterizedTest(name = "job{0}'s prepare fails")
    @ValueSource(ints = {1, 2})
    void oneMembersPrepareFails(int failing) throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        TestBody bad = failing == 1 ? b1 : b2;
        bad.prepareError = bad.name + " cannot prepare";
        startGrouped(true, true, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        b2.go.countDown();
        awaitStatus("job1", "null");
        awaitStatus("job2", "null");

        assertThat(blockEvents()).containsExactly(
                failing == 2 ? "BLOCK_JOB_COMPLETED job2 error=job2 cannot prepare" : "BLOCK_JOB_CANCELLED job2",
                failing == 1 ? "BLOCK_JOB_COMPLETED job1 error=job1 cannot prepare" : "BLOCK_JOB_CANCELLED job1");
        assertThat(statuses("job1")).isEqualTo(ABORTED_PENDING);
        assertThat(statuses("job2")).isEqualTo(ABORTED_PENDING);
        // job2 prepares first; a failure there stops the prepares (job_txn_apply stops at the first error)
        List<String> prepared = failing == 2 ? List.of("job2.prepare") : List.of("job2.prepare", "job1.prepare");
        List<String> expected = new ArrayList<>(prepared);
        expected.addAll(List.of("job2.abort", "job2.clean", "job1.abort", "job1.clean"));
        assertThat(hooks).containsExactlyElementsOf(expected);
        assertThat(offMainLoop).isEmpty();
    }

    /** commit runs only once every member has prepared: no commit is seen from any prepare. */
    @Test
    void commitOnlyAfterEveryPrepare() throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        List<String> seenAtPrepare = Collections.synchronizedList(new ArrayList<>());
        b1.onPrepare = () -> seenAtPrepare.addAll(hooks);
        b2.onPrepare = () -> seenAtPrepare.addAll(hooks);
        startGrouped(true, true, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        b2.go.countDown();
        awaitStatus("job1", "null");
        assertThat(seenAtPrepare).noneMatch(h -> h.endsWith(".commit") || h.endsWith(".abort"));
        assertThat(hooks).filteredOn(h -> h.endsWith(".commit")).hasSize(2);
        int lastPrepare = Math.max(hooks.indexOf("job1.prepare"), hooks.indexOf("job2.prepare"));
        int firstCommit = Math.min(hooks.indexOf("job1.commit"), hooks.indexOf("job2.commit"));
        assertThat(lastPrepare).isLessThan(firstCommit);
    }

    // ---- cancel of one member -----------------------------------------------------------------------

    /**
     * A member that finished its work waits for the others; cancelling it cancels them (QEMU's
     * job_cancel_locked: a job whose run has ended aborts its transaction at once).
     */
    @Test
    void cancellingAWaitingMemberCancelsTheOthers() throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        List<Job> started = startGrouped(true, true, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        onMainLoop(() -> jobs.cancel(started.get(0), true));
        awaitStatus("job1", "null");
        awaitStatus("job2", "null");
        assertThat(b2.cancels).as("job2 cancelled by the transaction").hasValue(1);
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_CANCELLED job2", "BLOCK_JOB_CANCELLED job1");
        assertThat(statuses("job1")).isEqualTo(ABORTED_WAITING);
        assertThat(statuses("job2")).isEqualTo(ABORTED_RUNNING);
        assertThat(hooks).containsExactly("job2.abort", "job2.clean", "job1.abort", "job1.clean");
        assertThat(offMainLoop).isEmpty();
    }

    /**
     * Waiting for job-finalize, a cancel of one member aborts both; nobody prepares. The events
     * as qemu-storage-daemon 7.2 sends them for two grouped backup jobs and job-cancel of the
     * first while both are pending.
     */
    @Test
    void cancellingAPendingMemberAbortsTheTransaction() throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        startGrouped(false, false, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        b2.go.countDown();
        awaitBlockEvent("BLOCK_JOB_PENDING job1");
        int before = timeline().size();
        onMainLoop(() -> jobs.cancel(jobs.get("job1"), true));
        assertThat(timeline().subList(before, timeline().size())).containsExactly(
                "job2 aborting", "BLOCK_JOB_CANCELLED job2", "job2 concluded",
                "job1 aborting", "BLOCK_JOB_CANCELLED job1", "job1 concluded");
        assertThat(hooks).containsExactly("job2.abort", "job2.clean", "job1.abort", "job1.clean");
        assertThat(onMainLoop(() -> jobs.get("job1").info().error())).isEqualTo("Operation canceled");
        assertThat(onMainLoop(() -> jobs.get("job2").info().error())).isEqualTo("Operation canceled");
        onMainLoop(() -> jobs.dismiss("job1"));
        onMainLoop(() -> jobs.dismiss("job2"));
        assertThat(statuses("job1")).isEqualTo(ABORTED_PENDING);
        assertThat(statuses("job2")).isEqualTo(ABORTED_PENDING);
    }

    /**
     * What query-jobs and query-block-jobs say once a transaction aborted: the failed member's
     * own error, and "Operation canceled" for the member cancelled with it (QEMU's job_update_rc
     * gives a cancelled job strerror(ECANCELED)); the events tell them apart.
     */
    @Test
    void anAbortedMemberReportsWhy() throws Exception {
        TestBody b1 = new TestBody("job1");
        b1.runError = "job1 failed";
        TestBody b2 = new TestBody("job2");
        startGrouped(true, false, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "concluded");
        awaitStatus("job2", "concluded");
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_CANCELLED job2",
                "BLOCK_JOB_COMPLETED job1 error=job1 failed");
        Job job1 = jobs.get("job1");
        Job job2 = jobs.get("job2");
        assertThat(onMainLoop(() -> job1.info().error())).isEqualTo("job1 failed");
        assertThat(onMainLoop(() -> job1.blockInfo().error())).isEqualTo("job1 failed");
        assertThat(onMainLoop(() -> job2.info().error())).isEqualTo("Operation canceled");
        assertThat(onMainLoop(() -> job2.blockInfo().error())).isEqualTo("Operation canceled");
    }

    /**
     * A member that failed goes to aborting at once, while the member it cancelled is still on
     * its way to a pause point (QEMU's job_completed: job_update_rc, then the abort).
     */
    @Test
    void aFailedMemberIsAbortingWhileTheOthersStop() throws Exception {
        TestBody b1 = new TestBody("job1");
        b1.runError = "job1 failed";
        TestBody b2 = new TestBody("job2");
        b2.goOnCancel = false;
        startGrouped(true, true, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "aborting");
        assertThat(statuses("job2")).containsExactly("created", "running");
        assertThat(hooks).isEmpty();
        b2.go.countDown();
        awaitStatus("job1", "null");
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_CANCELLED job2",
                "BLOCK_JOB_COMPLETED job1 error=job1 failed");
        assertThat(statuses("job1")).isEqualTo(ABORTED_RUNNING);
        assertThat(statuses("job2")).isEqualTo(ABORTED_RUNNING);
    }

    /**
     * QEMU finalizes a transaction in one step of its main loop (job_do_finalize): a job-cancel
     * that arrives meanwhile runs after it and finds the job concluded. It is never accepted and
     * then ignored.
     */
    @Test
    void aCancelCannotSlipInWhileTheTransactionFinalizes() throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        List<Future<?>> queued = Collections.synchronizedList(new ArrayList<>());
        b1.onPrepare = () -> queued.add(mainExecutor.submit(() -> {
            jobs.cancel(jobs.get("job1"), true);
            return null;
        }));
        startGrouped(true, false, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        b2.go.countDown();
        awaitStatus("job1", "concluded");
        awaitStatus("job2", "concluded");
        assertThat(queued).hasSize(1);
        assertThatThrownBy(() -> queued.get(0).get(WAIT_SECONDS, TimeUnit.SECONDS))
                .isInstanceOf(ExecutionException.class).cause().isInstanceOf(CommandException.class)
                .hasMessage("Job 'job1' in state 'concluded' cannot accept command verb 'cancel'");
        assertThat(blockEvents()).containsExactly("BLOCK_JOB_COMPLETED job2", "BLOCK_JOB_COMPLETED job1");
        assertThat(hooks).doesNotContain("job1.abort", "job2.abort");
    }

    // ---- auto-finalize=false, job-finalize, job-dismiss --------------------------------------------

    @Test
    void bothWaitInPendingAndOneFinalizeFinalizesBoth() throws Exception {
        TestBody b1 = new TestBody("job1");
        TestBody b2 = new TestBody("job2");
        startGrouped(false, false, b1, b2);
        b1.go.countDown();
        awaitStatus("job1", "waiting");
        assertThatThrownBy(() -> onMainLoop(() -> jobs.finalizeJob("job1")))
                .hasMessage("Job 'job1' in state 'waiting' cannot accept command verb 'finalize'");
        b2.go.countDown();
        awaitBlockEvent("BLOCK_JOB_PENDING job1");
        List<String> timeline = timeline();
        assertThat(timeline.subList(timeline.indexOf("job2 waiting"), timeline.size())).containsExactly(
                "job2 waiting", "job2 pending", "BLOCK_JOB_PENDING job2", "job1 pending", "BLOCK_JOB_PENDING job1");
        assertThat(hooks).as("nothing prepares before job-finalize").isEmpty();
        assertThatThrownBy(() -> onMainLoop(() -> jobs.dismiss("job1")))
                .hasMessage("Job 'job1' in state 'pending' cannot accept command verb 'dismiss'");

        int before = timeline().size();
        onMainLoop(() -> jobs.finalizeJob("job1"));
        assertThat(jobs.get("job1").status()).isEqualTo(JobStatus.CONCLUDED);
        assertThat(jobs.get("job2").status()).isEqualTo(JobStatus.CONCLUDED);
        assertThat(timeline().subList(before, timeline().size())).containsExactly(
                "BLOCK_JOB_COMPLETED job2", "job2 concluded", "BLOCK_JOB_COMPLETED job1", "job1 concluded");
        assertThat(hooks).containsExactly("job2.prepare", "job1.prepare", "job2.commit", "job2.clean",
                "job1.commit", "job1.clean");
        assertThatThrownBy(() -> onMainLoop(() -> jobs.finalizeJob("job2")))
                .hasMessage("Job 'job2' in state 'concluded' cannot accept command verb 'finalize'");

        onMainLoop(() -> jobs.dismiss("job1"));
        assertThat(onMainLoop(jobs::all)).extracting(Job::id).containsExactly("job2");
        assertThatThrownBy(() -> jobs.get("job1")).hasMessage("Job not found");
        onMainLoop(() -> jobs.dismiss("job2"));
        assertThat(onMainLoop(jobs::all)).isEmpty();
        assertThat(statuses("job1")).isEqualTo(SUCCEEDED);
        assertThat(statuses("job2")).isEqualTo(SUCCEEDED);
        assertThat(offMainLoop).isEmpty();
    }

    // ---- the harness --------------------------------------------------------------------------------

    /** A scripted job: run waits for {@code go}, meets a pause point, then succeeds or fails. */
    private final class TestBody implements JobBody {
        final String name;
        final CountDownLatch started = new CountDownLatch(1);
        final CountDownLatch go = new CountDownLatch(1);
        final AtomicInteger cancels = new AtomicInteger();
        volatile String runError;
        volatile String prepareError;
        volatile boolean goOnCancel = true;
        volatile boolean pausePoint = true;
        volatile Runnable onPrepare = () -> { };

        TestBody(String name) {
            this.name = name;
        }

        @Override
        public void run(JobContext ctx) throws Exception {
            started.countDown();
            go.await();
            if (pausePoint) {
                ctx.pausePoint();
            }
            if (runError != null) {
                throw new IOException(runError);
            }
        }

        @Override
        public boolean cancel(boolean force) {
            cancels.incrementAndGet();
            if (goOnCancel) {
                go.countDown();
            }
            return force;
        }

        @Override
        public void prepare(GraphEdit edit) throws Exception {
            hook("prepare");
            onPrepare.run();
            if (prepareError != null) {
                throw new IOException(prepareError);
            }
        }

        @Override
        public void commit(GraphEdit edit) {
            hook("commit");
        }

        @Override
        public void abort(GraphEdit edit) {
            hook("abort");
        }

        @Override
        public void clean() {
            hook("clean");
        }

        private void hook(String hook) {
            hooks.add(name + "." + hook);
            if (Thread.currentThread() != mainThread) {
                offMainLoop.add(name + "." + hook + " on " + Thread.currentThread().getName());
            }
        }
    }

    /** The arguments every job command has; the device is the job's id. */
    record TestArgs(Optional<String> jobId, String device, Optional<Long> speed, Optional<OnError> onError,
                    Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss) implements JobArgs {
    }

    private static JobCommand<TestArgs> command(TestBody body) {
        return new JobCommand<>("x-test-job", "test", TestArgs.class, (args, setup) -> body);
    }

    private static TestArgs args(TestBody body, boolean autoFinalize, boolean autoDismiss) {
        return new TestArgs(Optional.empty(), body.name, Optional.empty(), Optional.empty(),
                Optional.of(autoFinalize), Optional.of(autoDismiss));
    }

    /** A lone job (a transaction of its own), started as a job command starts it. */
    private Job startAlone(TestBody body) throws Exception {
        Job job = onMainLoop(() -> jobs.startBlockJob(command(body), args(body, true, true)));
        await(body.started);
        return job;
    }

    /** Jobs in one transaction, as {@code transaction} with {@code completion-mode: grouped}. */
    private List<Job> startGrouped(boolean autoFinalize, boolean autoDismiss, TestBody... bodies) throws Exception {
        List<Job> started = onMainLoop(() -> {
            List<JobManager.Prepared> prepared = new ArrayList<>();
            for (TestBody b : bodies) {
                prepared.add(jobs.prepare(command(b), args(b, autoFinalize, autoDismiss)));
            }
            jobs.startAll(prepared, true);
            return prepared.stream().map(JobManager.Prepared::job).toList();
        });
        for (TestBody b : bodies) {
            await(b.started);
        }
        return started;
    }

    private void meet(Job job, TestBody body, Fate fate) throws Exception {
        switch (fate) {
            case SUCCEED -> body.go.countDown();
            case FAIL -> {
                body.runError = body.name + " failed";
                body.go.countDown();
            }
            case CANCEL -> onMainLoop(() -> jobs.cancel(job, true));
        }
    }

    private static String event(String id, Fate fate) {
        return switch (fate) {
            case SUCCEED -> "BLOCK_JOB_COMPLETED " + id;
            case FAIL -> "BLOCK_JOB_COMPLETED " + id + " error=" + id + " failed";
            case CANCEL -> "BLOCK_JOB_CANCELLED " + id;
        };
    }

    private interface MainLoopWork {
        void run() throws Exception;
    }

    private void onMainLoop(MainLoopWork work) throws Exception {
        onMainLoop(() -> {
            work.run();
            return null;
        });
    }

    private <T> T onMainLoop(Callable<T> task) throws Exception {
        try {
            return mainExecutor.submit(task).get(WAIT_SECONDS, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception ex ? ex : new RuntimeException(e.getCause());
        }
    }

    private static void await(CountDownLatch latch) throws InterruptedException {
        assertThat(latch.await(WAIT_SECONDS, TimeUnit.SECONDS)).as("latch opened").isTrue();
    }

    /** Waits until job {@code id} has announced {@code status}. */
    private void awaitStatus(String id, String status) throws InterruptedException {
        awaitSeen(() -> statuses(id).contains(status), "job " + id + " to become " + status);
    }

    /** Waits for a BLOCK_JOB_* event, written as {@link #blockEvents()} writes them. */
    private void awaitBlockEvent(String event) throws InterruptedException {
        awaitSeen(() -> blockEvents().contains(event), event);
    }

    private void awaitSeen(java.util.function.BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        synchronized (seen) {
            while (!condition.getAsBoolean()) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    fail("waited in vain for " + what + "; statuses: job1 " + statuses("job1") + ", job2 "
                            + statuses("job2") + "; block events: " + blockEvents() + "; hooks: " + hooks);
                }
                TimeUnit.NANOSECONDS.timedWait(seen, left);
            }
        }
    }

    /** The statuses job {@code id} announced in JOB_STATUS_CHANGE, in order. */
    private List<String> statuses(String id) {
        synchronized (seen) {
            return seen.stream().filter(e -> e.name().equals("JOB_STATUS_CHANGE"))
                    .filter(e -> e.data().get("id").asString().equals(id))
                    .map(e -> e.data().get("status").asString()).toList();
        }
    }

    /** Every event in order: status changes as "job1 running", the others as {@link #blockEvents()} has them. */
    private List<String> timeline() {
        synchronized (seen) {
            return seen.stream().map(e -> e.name().equals("JOB_STATUS_CHANGE")
                    ? e.data().get("id").asString() + " " + e.data().get("status").asString()
                    : blockEvent(e)).toList();
        }
    }

    private static String blockEvent(Event e) {
        String id = e.data().has("device") ? e.data().get("device").asString() : e.data().get("id").asString();
        String error = e.data().has("error") ? " error=" + e.data().get("error").asString() : "";
        return e.name() + " " + id + error;
    }

    /** The BLOCK_JOB_* events, as "BLOCK_JOB_COMPLETED job1 error=...", in order. */
    private List<String> blockEvents() {
        synchronized (seen) {
            return seen.stream().filter(e -> e.name().startsWith("BLOCK_JOB_")).map(JobTxnTest::blockEvent).toList();
        }
    }
}
