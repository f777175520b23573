package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.Copier;
import io.blockjobs.sdk.job.ErrorAction;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCancelledException;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.job.WriteTracker;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One job under the harness, run as the platform runs it. Its body runs on a virtual thread of
 * its own with a {@link JobContext} that has QEMU's pause points; the test drives it with the
 * verbs QMP has ({@link #pause}, {@link #resume}, {@link #cancel}, {@link #blockJobCancel},
 * {@link #setSpeed}, {@link #complete}, {@link #finalizeJob}, {@link #dismiss}, {@link #change}),
 * checked against QEMU's verb table with QEMU's messages. When the run ends the job finalizes as
 * the platform's transactions do: {@code prepare}, then {@code commit} or {@code abort}, then
 * {@code clean}, with a {@link RecordingGraphEdit}; then what it held is given back.
 *
 * <p>Scripting: {@link #at} runs an action on the job's thread when it reaches a pause point (the
 * first is 1), before the pause point takes effect, so "cancel at pause point 7" is exact;
 * {@link #breakAt} holds the job there until the test calls {@link #go}, for a test that acts from
 * its own thread (a client's writes while copies are in flight).
 *
 * <p>The harness also checks the job keeps the SDK's rules (see {@link #violations()}): the
 * context and copiers are used from the job's thread only, copiers are closed before
 * {@code run} returns, progress never goes back, only completable bodies say ready.
 */
public final class HarnessJob {
    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    private static final Set<BlockPermission> NONE = EnumSet.noneOf(BlockPermission.class);

    /** A pause the job made: where, and what was still in flight when it reported itself paused. */
    public record Pause(int pausePoint, JobStatus status, int copiesInFlight, int requestsInFlight) {
    }

    /** QMP's {@code BlockJobInfo}, as {@code query-block-jobs} shows the job. */
    public record Info(String type, String device, long len, long offset, boolean busy, boolean paused, long speed,
                       String ioStatus, boolean ready, JobStatus status, boolean autoFinalize, boolean autoDismiss,
                       String error) {
    }

    /**
     * How a job ended.
     *
     * @param status        its status at the end ({@code concluded}, or {@code null} once dismissed)
     * @param completed     it ended with {@code BLOCK_JOB_COMPLETED} and no error
     * @param cancelled     it ended with {@code BLOCK_JOB_CANCELLED}
     * @param error         the error {@code BLOCK_JOB_COMPLETED} carried, or null
     * @param failure       what {@code run} (or {@code prepare}) threw, other than a cancel; or null
     * @param progressDone  the last progress reported
     * @param progressTotal the last total reported
     * @param throttledBytes bytes accounted against the speed limit
     * @param sleptNanos    time the speed limit slept, on the fake clock
     * @param pausePoints   pause points the job went through
     * @param errorActions  the policy's decision for each I/O error ({@code report}, {@code ignore}, {@code stop})
     * @param hooks         the body's hooks the harness called, in order
     * @param events        the job's events, in order
     * @param violations    rules of the SDK the job broke
     */
    public record Outcome(JobStatus status, boolean completed, boolean cancelled, String error, Throwable failure,
                          long progressDone, long progressTotal, long throttledBytes, long sleptNanos, int pausePoints,
                          List<String> errorActions, List<String> hooks, List<JobEvent> events,
                          List<String> violations) {

        /** The statuses of the job's {@code JOB_STATUS_CHANGE} events, in order. */
        public List<String> statuses() {
            return events.stream().filter(e -> e.name().equals("JOB_STATUS_CHANGE")).map(e -> e.get("status")).toList();
        }

        /** The names of the events other than status changes, in order. */
        public List<String> blockJobEvents() {
            return events.stream().map(JobEvent::name).filter(n -> !n.equals("JOB_STATUS_CHANGE")).toList();
        }
    }

    private final JobHarness harness;
    private final HarnessGraph graph;
    private final FakeClock clock;
    private final String id;
    private final String type;
    private final boolean autoFinalize;
    private final boolean autoDismiss;
    private final OnError onSourceError;
    private final OnError onTargetError;
    private final Logger log;
    private final Object owner = new Object(); // the job's frozen links and graph edits
    private final RecordingGraphEdit edit;
    private final Context ctx = new Context();
    private final Setup setup = new Setup();
    private volatile JobBody body;

    // what the job holds in the graph until it ends
    private final List<RootEdge> edges = new CopyOnWriteArrayList<>();
    private final List<BlockNode> used = new CopyOnWriteArrayList<>();
    private final List<AutoCloseable> frozen = new CopyOnWriteArrayList<>();
    private final List<String> filters = new CopyOnWriteArrayList<>();
    private final List<Runnable> releases = new CopyOnWriteArrayList<>(); // bitmaps used or made
    private final List<HarnessGraph.Undo> edits = new CopyOnWriteArrayList<>();
    private final List<HarnessCopier> copiers = new CopyOnWriteArrayList<>();

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final RateLimit rateLimit = new RateLimit();
    private final Runnable clockListener = this::wake;
    private JobStatus status = JobStatus.UNDEFINED;
    private int pauseCount;
    private boolean userPaused;
    private boolean cancelled;
    private boolean softCancel;
    private boolean completeRequested;
    private boolean busy = true;
    private boolean sleeping;
    private boolean waitingForWrites;
    /** {@link JobContext#wake} was called since the job's last sleep began. */
    private boolean woken;
    private boolean finalizing;
    private boolean concluded;
    private boolean ended;
    private boolean started;
    private int kicks;
    /** {@link #kicks} when the job last reached a pause point: a verb after it is still to be seen. */
    private int kicksAtPausePoint;
    private long speed;
    private long done;
    private long total;
    private String error;
    private String ioStatus = "ok";
    private int pausePoints;
    private long throttled;
    private long slept;
    private long largestThrottle;
    private int heldAt;
    private Throwable failure;
    private String partnerFailure;
    private Thread thread;
    private final List<JobEvent> events = new ArrayList<>();
    private final List<String> hooks = new ArrayList<>();
    private final List<String> violations = new ArrayList<>();
    private final List<String> errorActions = new ArrayList<>();
    private final List<Pause> pauses = new ArrayList<>();
    private final List<Throwable> actionErrors = new ArrayList<>();
    private final Map<Integer, List<Consumer<HarnessJob>>> actions = new HashMap<>();
    private final Set<Integer> breakpoints = new java.util.HashSet<>();

    HarnessJob(JobHarness harness, HarnessGraph graph, FakeClock clock, String id, String type, boolean autoFinalize,
               boolean autoDismiss, long speed, OnError onSourceError, OnError onTargetError) {
        this.harness = harness;
        this.graph = graph;
        this.clock = clock;
        this.id = id;
        this.type = type;
        this.autoFinalize = autoFinalize;
        this.autoDismiss = autoDismiss;
        this.onSourceError = onSourceError;
        this.onTargetError = onTargetError;
        this.speed = speed;
        this.rateLimit.setSpeed(speed);
        this.log = LoggerFactory.getLogger("io.blockjobs.job." + type);
        this.edit = new RecordingGraphEdit(this);
    }

    // ---- identity ------------------------------------------------------------------------------

    /** The job's id. */
    public String id() {
        return id;
    }

    /** The job type, as {@code query-jobs} shows it. */
    public String type() {
        return type;
    }

    /** The body the command's factory returned. */
    public JobBody body() {
        return body;
    }

    /** The job's policy for failed reads: {@code on-error}, or {@code on-source-error} where the job has it. */
    public OnError onError() {
        return onSourceError;
    }

    /** The job's policy for failed writes: {@code on-error}, or {@code on-target-error} where the job has it. */
    public OnError onTargetError() {
        return onTargetError;
    }

    /** Whether the job finalizes by itself. */
    public boolean autoFinalize() {
        return autoFinalize;
    }

    /** Whether the job disappears by itself once concluded. */
    public boolean autoDismiss() {
        return autoDismiss;
    }

    /** The graph edit the job's {@code prepare}, {@code commit} and {@code abort} got. */
    public RecordingGraphEdit graphEdit() {
        return edit;
    }

    /** The root edges the job holds now (what its factory {@code use}d). */
    public List<RootEdge> edges() {
        return List.copyOf(edges);
    }

    JobSetup setup() {
        return setup;
    }

    void attachBody(JobBody b) {
        this.body = b;
    }

    Object owner() {
        return owner;
    }

    HarnessGraph graph() {
        return graph;
    }

    void addEdit(HarnessGraph.Undo undo) {
        edits.add(undo);
    }

    void forgetFilter(String name) {
        filters.remove(name);
    }

    Set<RootEdge> ownEdges() {
        return Set.copyOf(edges);
    }

    boolean holds(BlockNode node) {
        return used.contains(node);
    }

    // ---- scripting (before start) --------------------------------------------------------------

    /**
     * Runs {@code action} on the job's thread when the job reaches pause point {@code pausePoint}
     * (1 is the first), before the pause point takes effect: a verb issued there is met by that
     * very pause point.
     */
    public HarnessJob at(int pausePoint, Consumer<HarnessJob> action) {
        lock.lock();
        try {
            actions.computeIfAbsent(pausePoint, k -> new ArrayList<>()).add(action);
        } finally {
            lock.unlock();
        }
        return this;
    }

    /** Holds the job at pause point {@code pausePoint} until {@link #go}: see {@link #awaitBreak}. */
    public HarnessJob breakAt(int pausePoint) {
        lock.lock();
        try {
            breakpoints.add(pausePoint);
        } finally {
            lock.unlock();
        }
        return this;
    }

    /**
     * Puts a second member in the job's transaction whose {@code prepare} fails with
     * {@code message} after this job's {@code prepare} succeeded: the transaction aborts, this job's
     * graph edits are undone and it ends as cancelled, as QEMU's {@code job_completed_txn_abort}.
     */
    public HarnessJob withFailingPartner(String message) {
        this.partnerFailure = message;
        return this;
    }

    /** Starts the job: {@code created}, {@code running}, and its body on a virtual thread. */
    public HarnessJob start() {
        lock.lock();
        try {
            if (started) {
                throw new IllegalStateException("job " + id + " was started already");
            }
            started = true;
        } finally {
            lock.unlock();
        }
        clock.onAdvance(clockListener);
        transition(JobStatus.CREATED);
        transition(JobStatus.RUNNING);
        thread = Thread.ofVirtual().name("job-" + id).unstarted(this::runToEnd);
        thread.start();
        return this;
    }

    // ---- verbs (the test's thread, or an action's) ---------------------------------------------

    /** {@code job-pause}. */
    public void pause() {
        harness.onMainLoop(() -> {
            lock.lock();
            try {
                checkVerb(JobVerb.PAUSE);
                if (userPaused) {
                    throw new CommandException("Job is already paused");
                }
                userPaused = true;
                pauseCount++;
                kick();
            } finally {
                lock.unlock();
            }
        });
    }

    /** {@code job-resume}. */
    public void resume() {
        harness.onMainLoop(() -> {
            lock.lock();
            try {
                checkVerb(JobVerb.RESUME);
                if (!userPaused) {
                    throw new CommandException("Can't resume a job that was not paused");
                }
                userPaused = false;
                pauseCount--;
                ioStatus = "ok";
                kick();
            } finally {
                lock.unlock();
            }
        });
    }

    /** {@code job-cancel}: a forced cancel. */
    public void cancel() {
        cancel(true);
    }

    /**
     * {@code block-job-cancel}: refused for a paused job unless forced; a soft cancel
     * ({@code force: false}) of a ready job whose body keeps it soft finishes the job as
     * completed without its switch-over.
     */
    public void blockJobCancel(boolean force) {
        lock.lock();
        try {
            if (!force && userPaused) {
                throw new CommandException("The block job for device '" + id + "' is currently paused");
            }
        } finally {
            lock.unlock();
        }
        cancel(force);
    }

    private void cancel(boolean force) {
        boolean[] pending = new boolean[1];
        harness.onMainLoop(() -> {
            lock.lock();
            try {
                checkVerb(JobVerb.CANCEL);
                pending[0] = status == JobStatus.PENDING;
                boolean ready = status == JobStatus.READY || status == JobStatus.STANDBY;
                hook("cancel");
                boolean forced = body.cancel(force);
                softCancel = !forced && ready;
                cancelled = true;
                if (userPaused) { // cancelling a paused job resumes it
                    userPaused = false;
                    pauseCount--;
                }
                kick();
            } finally {
                lock.unlock();
            }
            if (pending[0]) {
                abortTransaction(); // waiting for job-finalize: the transaction aborts at once
            }
        });
    }

    /** {@code block-job-set-speed}. */
    public void setSpeed(long bytesPerSecond) {
        harness.onMainLoop(() -> {
            lock.lock();
            try {
                checkVerb(JobVerb.SET_SPEED);
                if (bytesPerSecond < 0) {
                    throw new CommandException("Parameter 'speed' expects a non-negative value");
                }
                speed = bytesPerSecond;
                rateLimit.setSpeed(bytesPerSecond);
                kick();
            } finally {
                lock.unlock();
            }
        });
    }

    /** {@code job-complete}: refused unless the job is ready, then the body's {@code complete} decides. */
    public void complete() {
        harness.onMainLoop(() -> {
            lock.lock();
            try {
                checkVerb(JobVerb.COMPLETE);
                if (cancelled) {
                    throw new CommandException("The active block job '" + id + "' cannot be completed");
                }
                hook("complete");
                body.complete(ctx);
                completeRequested = true;
                kick();
            } finally {
                lock.unlock();
            }
        });
    }

    /** {@code job-finalize}, for a job started with {@code auto-finalize: false}. */
    public void finalizeJob() {
        harness.onMainLoop(() -> {
            checkVerb(JobVerb.FINALIZE);
            finalizeTransaction();
        });
    }

    /** {@code job-dismiss}, for a job started with {@code auto-dismiss: false}. */
    public void dismiss() {
        harness.onMainLoop(() -> {
            checkVerb(JobVerb.DISMISS);
            transition(JobStatus.NULL);
            harness.forget(this);
        });
    }

    /** {@code block-job-change}. */
    public void change(Map<String, Object> options) {
        harness.onMainLoop(() -> {
            checkVerb(JobVerb.CHANGE);
            hook("change");
            body.change(options);
        });
    }

    private void checkVerb(JobVerb verb) {
        JobStatus s = status();
        if (!verb.allowedIn(s)) {
            throw new CommandException("Job '" + id + "' in state '" + s.qmpName() + "' cannot accept command verb '"
                    + verb.qmpName() + "'");
        }
    }

    // ---- waiting -------------------------------------------------------------------------------

    /** Waits until the job is in one of {@code wanted}; fails if it ends elsewhere first. */
    public JobStatus awaitStatus(JobStatus... wanted) {
        Set<JobStatus> set = EnumSet.noneOf(JobStatus.class);
        set.addAll(List.of(wanted));
        return await(() -> set.contains(status) ? status : null, () -> ended && !set.contains(status),
                "status " + set);
    }

    /** Waits until the job sent an event named {@code name}; returns the first. */
    public JobEvent awaitEvent(String name) {
        return await(() -> events.stream().filter(e -> e.name().equals(name)).findFirst().orElse(null),
                () -> concluded, "an event " + name);
    }

    /** Waits until the job is held at a breakpoint; returns the pause point. */
    public int awaitBreak() {
        return await(() -> heldAt > 0 ? heldAt : null, () -> ended, "a breakpoint");
    }

    /** Lets a job held at a breakpoint go on. */
    public void go() {
        lock.lock();
        try {
            heldAt = 0;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Waits until the job sleeps in its speed limit on a manual clock. */
    public void awaitSleeping() {
        await(() -> sleeping ? Boolean.TRUE : null, () -> ended, "the job to sleep in its speed limit");
    }

    /**
     * Waits until the job's thread waits in the harness: for clients' writes, in its speed limit,
     * paused, or at a breakpoint. A ready job should wait for writes there, not spin.
     */
    public void awaitIdle() {
        await(() -> !busy || ended ? Boolean.TRUE : null, () -> false, "the job to wait (a ready job should wait for writes,"
                + " with JobContext.sleep or WriteTracker.awaitDirty, rather than spin)");
    }

    /** Waits until the job waits for clients' writes ({@link WriteTracker#awaitDirty}). */
    public void awaitWaitingForWrites() {
        await(() -> waitingForWrites ? Boolean.TRUE : null, () -> ended, "the job to wait for writes");
    }

    /**
     * Waits until the job concluded (or was dismissed) and returns how it ended. Errors thrown by
     * scripted actions are thrown here.
     */
    public Outcome awaitEnd() {
        await(() -> concluded ? Boolean.TRUE : null, () -> {
            if (ended && status == JobStatus.PENDING && !autoFinalize) {
                throw new AssertionError("job " + id + " is pending: it was started with auto-finalize false;"
                        + " call finalizeJob()");
            }
            return false;
        }, "the job to conclude");
        lock.lock();
        try {
            if (!actionErrors.isEmpty()) {
                Throwable t = actionErrors.get(0);
                if (t instanceof Error e) {
                    throw e;
                }
                throw new AssertionError("a scripted action failed: " + t, t);
            }
        } finally {
            lock.unlock();
        }
        return outcome();
    }

    private interface Probe<T> {
        T get();
    }

    private interface Stop {
        boolean get();
    }

    private <T> T await(Probe<T> probe, Stop stop, String what) {
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        lock.lock();
        try {
            while (true) {
                T v = probe.get();
                if (v != null) {
                    return v;
                }
                if (stop.get()) {
                    throw new AssertionError("job " + id + " ended before " + what + ": " + describe());
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError("job " + id + ": no " + what + " after " + TIMEOUT.toSeconds() + " s: "
                            + describe());
                }
                try {
                    changed.awaitNanos(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new AssertionError("interrupted waiting for " + what);
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /** The job's state in words, for failure messages. */
    public String describe() {
        lock.lock();
        try {
            return "status " + status.qmpName() + (heldAt > 0 ? ", held at pause point " + heldAt : "")
                    + (sleeping ? ", sleeping in its speed limit" : "") + (waitingForWrites ? ", waiting for writes" : "")
                    + ", pause points " + pausePoints + ", progress " + done + "/" + total + ", events " + events
                    + (failure != null ? ", failure " + failure : "") + (violations.isEmpty() ? "" : ", violations " + violations);
        } finally {
            lock.unlock();
        }
    }

    // ---- state ---------------------------------------------------------------------------------

    /** The status now. */
    public JobStatus status() {
        return locked(() -> status);
    }

    /** What {@code query-block-jobs} would show. */
    public Info info() {
        lock.lock();
        try {
            boolean ready = status == JobStatus.READY || status == JobStatus.STANDBY;
            return new Info(type, id, total, done, busy, pauseCount > 0, speed, ioStatus, ready, status, autoFinalize,
                    autoDismiss, error);
        } finally {
            lock.unlock();
        }
    }

    /** Pause points reached so far. */
    public int pausePoints() {
        return locked(() -> pausePoints);
    }

    /** The pauses the job made, with what was in flight when it reported itself paused. */
    public List<Pause> pauses() {
        return locked(() -> List.copyOf(pauses));
    }

    /** Copies in flight in the job's copiers now. */
    public int copiesInFlight() {
        int n = 0;
        for (HarnessCopier c : copiers) {
            n += c.inFlight();
        }
        return n;
    }

    /** The job's events so far. */
    public List<JobEvent> events() {
        return locked(() -> List.copyOf(events));
    }

    /** Rules of the SDK the job broke so far. */
    public List<String> violations() {
        return locked(() -> List.copyOf(violations));
    }

    /** Bytes accounted against the speed limit so far. */
    public long throttledBytes() {
        return locked(() -> throttled);
    }

    /** The largest single amount the job accounted at once. */
    public long largestThrottle() {
        return locked(() -> largestThrottle);
    }

    /** Time slept in the speed limit so far, on the fake clock. */
    public long sleptNanos() {
        return locked(() -> slept);
    }

    /** The bytes a 100 ms slice may carry at the current speed (0: unlimited). */
    public long sliceQuota() {
        return locked(() -> rateLimit.sliceQuota());
    }

    /** The outcome so far (final once {@link #awaitEnd} returned). */
    public Outcome outcome() {
        lock.lock();
        try {
            boolean completed = false;
            boolean wasCancelled = false;
            String err = null;
            for (JobEvent e : events) {
                if (e.name().equals("BLOCK_JOB_COMPLETED")) {
                    err = e.get("error");
                    completed = err == null;
                } else if (e.name().equals("BLOCK_JOB_CANCELLED")) {
                    wasCancelled = true;
                }
            }
            return new Outcome(status, completed, wasCancelled, err, failure, done, total, throttled, slept, pausePoints,
                    List.copyOf(errorActions), List.copyOf(hooks), List.copyOf(events), List.copyOf(violations));
        } finally {
            lock.unlock();
        }
    }

    // ---- the job's thread ----------------------------------------------------------------------

    private void runToEnd() {
        String err = null;
        boolean wasCancelled = false;
        try {
            hook("run");
            body.run(ctx);
            lock.lock();
            try {
                wasCancelled = cancelled && !softCancel;
            } finally {
                lock.unlock();
            }
        } catch (JobCancelledException e) {
            wasCancelled = true;
        } catch (Throwable e) {
            err = e.getMessage() == null ? e.toString() : e.getMessage();
            log.info("job {} failed: {}", id, err);
            lock.lock();
            try {
                failure = e;
            } finally {
                lock.unlock();
            }
        }
        for (HarnessCopier c : copiers) {
            violation("a copier was not closed before run returned");
            c.awaitIdle();
        }
        try {
            completed(err, wasCancelled);
        } catch (RuntimeException | Error e) {
            violation("finalizing failed: " + e);
            lock.lock();
            try {
                if (failure == null) {
                    failure = e;
                }
            } finally {
                lock.unlock();
            }
        } finally {
            clock.removeListener(clockListener);
            lock.lock();
            try {
                ended = true;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** QEMU's {@code job_completed}: the run ended. */
    private void completed(String err, boolean wasCancelled) {
        harness.onMainLoop(() -> {
            if (err != null) {
                lock.lock();
                try {
                    error = err;
                } finally {
                    lock.unlock();
                }
            }
            if (err != null || wasCancelled) {
                abortTransaction();
                return;
            }
            transition(JobStatus.WAITING);
            transition(JobStatus.PENDING); // the partner, if any, has done its work too
            if (autoFinalize) {
                finalizeTransaction();
            } else {
                event("BLOCK_JOB_PENDING", map("type", type, "id", id));
            }
        });
    }

    /** QEMU's {@code job_do_finalize}: prepare every member; commit all, or abort all if one failed. */
    private void finalizeTransaction() {
        lock.lock();
        try {
            if (finalizing) {
                return;
            }
            finalizing = true;
        } finally {
            lock.unlock();
        }
        boolean soft = softCancelled();
        if (!soft) {
            edit.phase("prepare");
            try {
                hook("prepare");
                body.prepare(edit);
            } catch (Exception e) {
                String message = e.getMessage() == null ? e.toString() : e.getMessage();
                log.info("job {} failed to prepare: {}", id, message);
                lock.lock();
                try {
                    error = message;
                    if (failure == null) {
                        failure = e;
                    }
                } finally {
                    lock.unlock();
                }
                abortMembers();
                return;
            }
            if (partnerFailure != null) { // the other member fails to prepare: everyone aborts
                log.info("job {}: its transaction's other member failed to prepare: {}", id, partnerFailure);
                lock.lock();
                try {
                    cancelled = true;
                } finally {
                    lock.unlock();
                }
                abortMembers();
                return;
            }
        }
        try {
            if (soft) {
                edit.phase("abort");
                hook("abort");
                body.abort(edit); // a soft-cancelled job finishes without its switch-over
            } else {
                edit.phase("commit");
                hook("commit");
                body.commit(edit);
            }
        } catch (Exception e) {
            log.warn("job {}: commit failed after prepare: {}", id, e.getMessage());
            violation("commit threw after prepare: " + e);
        }
        clean();
        event("BLOCK_JOB_COMPLETED", blockJobEventData());
        conclude();
    }

    /** QEMU's {@code job_completed_txn_abort} for this job. */
    private void abortTransaction() {
        lock.lock();
        try {
            if (finalizing) {
                return;
            }
            finalizing = true;
        } finally {
            lock.unlock();
        }
        abortMembers();
    }

    private void abortMembers() {
        if (status() != JobStatus.ABORTING) {
            transition(JobStatus.ABORTING);
        }
        edit.phase("abort");
        try {
            hook("abort");
            body.abort(edit);
        } catch (RuntimeException e) {
            log.warn("job {}: abort failed: {}", id, e.getMessage());
            violation("abort threw: " + e);
        }
        for (int i = edits.size() - 1; i >= 0; i--) {
            try {
                edits.get(i).undo();
            } catch (RuntimeException e) {
                log.warn("undoing a graph edit failed: {}", e.getMessage());
            }
        }
        edits.clear();
        clean();
        Map<String, Object> data = blockJobEventData();
        String err;
        lock.lock();
        try {
            err = error;
        } finally {
            lock.unlock();
        }
        if (err != null) {
            data.put("error", err);
            event("BLOCK_JOB_COMPLETED", data);
        } else {
            event("BLOCK_JOB_CANCELLED", data);
        }
        conclude();
    }

    /** QEMU's {@code .clean}, then what the job held goes, after its graph edits. */
    private void clean() {
        edit.phase("clean");
        try {
            hook("clean");
            body.clean();
        } catch (RuntimeException e) {
            log.warn("job {}: clean failed: {}", id, e.getMessage());
            violation("clean threw: " + e);
        }
        release();
    }

    /** Gives everything back: links unfrozen, filters left behind removed, edges detached, nodes free. */
    void release() {
        for (AutoCloseable f : frozen) {
            try {
                f.close();
            } catch (Exception e) {
                log.warn("unfreezing failed: {}", e.getMessage());
            }
        }
        frozen.clear();
        for (String f : filters) {
            graph.removeFilter(f);
        }
        filters.clear();
        for (RootEdge e : edges) {
            graph.detachRoot(e);
        }
        edges.clear();
        used.clear();
        for (WriteTrackerImpl t : trackers) {
            t.detach();
        }
        trackers.clear();
        releases.forEach(Runnable::run);
        releases.clear();
    }

    private void conclude() {
        transition(JobStatus.CONCLUDED);
        if (autoDismiss) {
            transition(JobStatus.NULL);
            harness.forget(this);
        }
        lock.lock();
        try {
            concluded = true;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private boolean softCancelled() {
        return locked(() -> softCancel);
    }

    private void transition(JobStatus next) {
        lock.lock();
        try {
            if (!status.canBecome(next)) {
                throw new IllegalStateException("job " + id + ": " + status + " cannot become " + next);
            }
            status = next;
            event("JOB_STATUS_CHANGE", map("id", id, "status", next.qmpName()));
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private Map<String, Object> blockJobEventData() {
        return locked(() -> map("type", type, "device", id, "len", total, "offset", done, "speed", speed));
    }

    private void event(String name, Map<String, Object> data) {
        JobEvent e = new JobEvent(name, data);
        lock.lock();
        try {
            events.add(e);
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        harness.record(e);
    }

    private static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    private void hook(String name) {
        lock.lock();
        try {
            hooks.add(name);
        } finally {
            lock.unlock();
        }
    }

    private void violation(String what) {
        lock.lock();
        try {
            violations.add(what);
        } finally {
            lock.unlock();
        }
    }

    /** Records a violation if the caller is not the job's thread. */
    void checkJobThread(String what) {
        if (Thread.currentThread() != thread) {
            violation(what + " was called on thread '" + Thread.currentThread().getName()
                    + "', not the job's (the SDK's rule: job context and copiers belong to the job's thread)");
        }
    }

    /** Wakes a sleeping job (a verb arrived, or the clock moved). */
    private void wake() {
        lock.lock();
        try {
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** A verb arrived: as QEMU's {@code job_enter}, a sleeping job wakes to look. */
    private void kick() {
        kicks++;
        changed.signalAll();
    }

    // ---- the JobContext ------------------------------------------------------------------------

    private void pausePoint() {
        checkJobThread("pausePoint");
        int index;
        List<Consumer<HarnessJob>> todo;
        boolean hold;
        lock.lock();
        try {
            index = ++pausePoints;
            kicksAtPausePoint = kicks;
            todo = actions.remove(index);
            hold = breakpoints.remove(index);
        } finally {
            lock.unlock();
        }
        if (todo != null) {
            for (Consumer<HarnessJob> action : todo) {
                try {
                    action.accept(this);
                } catch (Throwable t) {
                    lock.lock();
                    try {
                        actionErrors.add(t);
                    } finally {
                        lock.unlock();
                    }
                }
            }
        }
        if (hold) {
            lock.lock();
            try {
                heldAt = index;
                busy = false;
                changed.signalAll();
                while (heldAt == index) {
                    changed.awaitUninterruptibly();
                }
                busy = true;
            } finally {
                lock.unlock();
            }
        }
        boolean pausing;
        lock.lock();
        try {
            pausing = pauseCount > 0 && !cancelled;
        } finally {
            lock.unlock();
        }
        int requestsInFlight = 0;
        if (pausing) {
            copiers.forEach(HarnessCopier::awaitIdle); // in-flight work settles before the job reports paused
            hook("pause");
            body.pause();
            requestsInFlight = harness.requestsInFlight(); // outside the lock: the graph may be busy
        }
        lock.lock();
        try {
            if (cancelled && !softCancel) {
                throw new JobCancelledException();
            }
            boolean recorded = false;
            while (pauseCount > 0 && !cancelled) {
                if (status == JobStatus.RUNNING) {
                    transition(JobStatus.PAUSED);
                } else if (status == JobStatus.READY) {
                    transition(JobStatus.STANDBY);
                }
                if (!recorded) {
                    pauses.add(new Pause(index, status, copiesInFlight(), requestsInFlight));
                    recorded = true;
                }
                busy = false;
                changed.signalAll();
                changed.awaitUninterruptibly();
            }
            if (status == JobStatus.PAUSED) {
                transition(JobStatus.RUNNING);
            } else if (status == JobStatus.STANDBY) {
                transition(JobStatus.READY);
            }
            busy = true;
            if (cancelled && !softCancel) {
                throw new JobCancelledException();
            }
        } finally {
            lock.unlock();
        }
        if (pausing) {
            hook("resume");
            body.resume();
        }
    }

    private void throttle(long bytes) {
        checkJobThread("throttle");
        long delay;
        long speedBefore;
        lock.lock();
        try {
            throttled += bytes;
            largestThrottle = Math.max(largestThrottle, bytes);
            delay = rateLimit.calculateDelay(bytes, clock.nanoTime());
            speedBefore = speed;
        } finally {
            lock.unlock();
        }
        if (delay > 0) {
            if (clock.autoAdvances()) {
                clock.advance(delay);
                lock.lock();
                try {
                    slept += delay;
                } finally {
                    lock.unlock();
                }
            } else {
                lock.lock();
                try {
                    long start = clock.nanoTime();
                    long deadline = start + delay;
                    // sleep as QEMU's job_sleep_ns: woken early by cancel, pause or a new speed
                    sleeping = true;
                    busy = false;
                    changed.signalAll();
                    while (clock.nanoTime() < deadline && !cancelled && pauseCount == 0 && speed == speedBefore) {
                        changed.awaitUninterruptibly();
                    }
                    sleeping = false;
                    busy = true;
                    slept += Math.min(clock.nanoTime(), deadline) - start;
                } finally {
                    lock.unlock();
                }
            }
        }
        pausePoint();
    }

    private void progress(long d, long t) {
        checkJobThread("progress");
        lock.lock();
        try {
            if (d < done) {
                violations.add("progress went back from " + done + " to " + d);
            }
            done = d;
            total = t;
        } finally {
            lock.unlock();
        }
    }

    private void ready() {
        checkJobThread("ready");
        if (!body.completable()) {
            violation("ready() was called by a body that is not completable()");
        }
        lock.lock();
        try {
            if (status == JobStatus.RUNNING) {
                transition(JobStatus.READY);
                event("BLOCK_JOB_READY", blockJobEventData());
            }
        } finally {
            lock.unlock();
        }
    }

    private boolean completeRequestedNow() {
        return locked(() -> completeRequested || softCancel);
    }

    /**
     * The error policy, as the platform applies it (for a read the source's, {@code on-error} or
     * {@code on-source-error}; for a write the target's): {@code report} rethrows;
     * {@code ignore} goes on; {@code stop} pauses the job (io-status failed, or nospace for
     * ENOSPC) until {@code job-resume}, then retries; {@code enospc} and {@code auto} stop on
     * ENOSPC and report anything else. Each error is announced as {@code BLOCK_JOB_ERROR}.
     */
    ErrorAction applyErrorPolicy(IOException e, boolean read) throws IOException {
        boolean noSpace = Errno.of(e) == Errno.ENOSPC;
        String action = switch (read ? onSourceError : onTargetError) {
            case REPORT -> "report";
            case IGNORE -> "ignore";
            case STOP -> "stop";
            case ENOSPC, AUTO -> noSpace ? "stop" : "report";
        };
        lock.lock();
        try {
            errorActions.add(action);
        } finally {
            lock.unlock();
        }
        event("BLOCK_JOB_ERROR", map("device", id, "operation", read ? "read" : "write", "action", action));
        switch (action) {
            case "ignore" -> {
                return ErrorAction.IGNORE;
            }
            case "stop" -> {
                lock.lock();
                try {
                    ioStatus = noSpace ? "nospace" : "failed";
                    if (!userPaused) {
                        userPaused = true;
                        pauseCount++;
                    }
                } finally {
                    lock.unlock();
                }
                pausePoint(); // until job-resume
                return ErrorAction.RETRY;
            }
            default -> throw e;
        }
    }

    void forget(HarnessCopier c) {
        copiers.remove(c);
    }

    /** The job's side of the platform, handed to {@code run}. */
    private final class Context implements JobContext {
        @Override
        public String id() {
            return id;
        }

        @Override
        public void pausePoint() {
            HarnessJob.this.pausePoint();
        }

        @Override
        public void throttle(long bytes) {
            HarnessJob.this.throttle(bytes);
        }

        @Override
        public void progress(long d, long t) {
            HarnessJob.this.progress(d, t);
        }

        @Override
        public void ready() {
            HarnessJob.this.ready();
        }

        @Override
        public boolean completeRequested() {
            return completeRequestedNow();
        }

        @Override
        public ErrorAction onIoError(IOException e, boolean read) throws IOException {
            checkJobThread("onIoError");
            return applyErrorPolicy(e, read);
        }

        @Override
        public Copier copier(int maxInFlight, int bufferSize) {
            checkJobThread("copier");
            HarnessCopier c = new HarnessCopier(HarnessJob.this, maxInFlight, bufferSize);
            copiers.add(c);
            return c;
        }

        @Override
        public Logger log() {
            return log;
        }

        @Override
        public void sleep(long millis) {
            checkJobThread("sleep");
            HarnessJob.this.sleep(millis);
        }

        @Override
        public void wake() {
            lock.lock();
            try {
                woken = true;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** A {@link JobContext#sleep}: on the job's clock, not busy, ended by a wake or a verb (as awaitDirty). */
    private void sleep(long millis) {
        lock.lock();
        try {
            long deadline = clock.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
            int kicksBefore = kicksAtPausePoint; // a verb since the last pause point ends it at once
            waitingForWrites = true;
            busy = false;
            changed.signalAll();
            try {
                while (!woken && clock.nanoTime() < deadline && kicks == kicksBefore) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                woken = false;
                waitingForWrites = false;
                busy = true;
            }
        } finally {
            lock.unlock();
        }
    }

    // ---- the JobSetup --------------------------------------------------------------------------

    private final List<WriteTrackerImpl> trackers = new CopyOnWriteArrayList<>();

    /** What the job's factory may do, as the platform's {@code JobManager.Setup}. */
    private final class Setup implements JobSetup {
        private static final int READ = HarnessGraph.bit(BlockPermission.CONSISTENT_READ);
        private static final int WRITE = HarnessGraph.bit(BlockPermission.WRITE);
        private static final int UNCHANGED = HarnessGraph.bit(BlockPermission.WRITE_UNCHANGED);

        @Override
        public BlockNode use(String nodeName, String role, Set<BlockPermission> perm, Set<BlockPermission> shared) {
            BlockNode node = graph.requireDevice(nodeName);
            HarnessJob holder = harness.holderOf(node);
            // As the platform's: a job may use one node in several roles (QEMU's jobs do), never twice in one.
            boolean sameRole = edges.stream().anyMatch(e -> e.target() == node && e.role().equals(role));
            if ((holder != null && holder != HarnessJob.this) || sameRole) {
                String holderType = holder != null ? holder.type() : type;
                throw new CommandException("Node '" + nodeName + "' is busy: block device is in use by block job: "
                        + holderType);
            }
            String user = role.equals("root") ? "an unnamed block device" : type + " job '" + id + "'";
            RootEdge edge = graph.attachRoot(new RootEdge(user, role, node, perm, shared, false));
            edges.add(edge);
            if (!used.contains(node)) {
                used.add(node);
            }
            return edge;
        }

        @Override
        public BlockNode claim(String nodeName) {
            return use(nodeName, "intermediate node", NONE, HarnessGraph.perms(READ | UNCHANGED));
        }

        @Override
        public BlockNode claimWritable(String nodeName) {
            reopenReadWrite(nodeName);
            return use(nodeName, "root", HarnessGraph.perms(READ | WRITE), HarnessGraph.perms(READ | UNCHANGED));
        }

        @Override
        public void reopenReadWrite(String nodeName) {
            BlockNode node = graph.requireDevice(nodeName);
            BlockNode image = HarnessGraph.skipFilters(node);
            if (image instanceof MemoryNode m) {
                m.reopenReadWrite();
            } else if (image.isReadOnly()) {
                throw new CommandException("Could not reopen '" + nodeName + "' for writing: " + image.driver()
                        + " nodes cannot be reopened by the harness");
            }
        }

        @Override
        public List<ChainLink> chain(String nodeName) {
            BlockNode top = graph.requireDevice(nodeName);
            List<ChainLink> links = new ArrayList<>();
            for (BlockNode g = top; g != null; g = chainNext(g)) {
                BlockNode image = HarnessGraph.skipFilters(g);
                links.add(new ChainLink(g.nodeName(), g, image.filename(), image.driver()));
            }
            return links;
        }

        private BlockNode chainNext(BlockNode n) {
            if (HarnessGraph.isFilter(n)) {
                return chainNext(HarnessGraph.below(n));
            }
            return HarnessGraph.below(n);
        }

        @Override
        public WriteTracker trackWrites(String nodeName, String filterNodeName) {
            WriteTrackerImpl tracker = new WriteTrackerImpl();
            HarnessFilter f = (HarnessFilter) graph.insertFilter(nodeName, "mirror_top", filterNodeName, Map.of(),
                    List.of(tracker), Set.copyOf(edges), true);
            filters.add(f.nodeName());
            tracker.attach(f);
            trackers.add(tracker);
            return tracker;
        }

        @Override
        public BlockNode insertFilter(String nodeName, FilterSpec filter) {
            BlockNode f = graph.insertFilter(nodeName, filter.driver(), filter.nodeName(), filter.options(),
                    filter.hooks(), Set.copyOf(edges), !filter.driver().equals("commit_top"));
            filters.add(f.nodeName());
            return f;
        }

        @Override
        public void freezeBackingChain(String topNode, String baseNode) {
            frozen.add(graph.freeze(owner, topNode, baseNode));
        }

        @Override
        public DirtyBitmap useBitmap(String nodeName, String bitmapName) {
            HarnessBitmap b = harness.bitmap(nodeName, bitmapName);
            b.claim();
            releases.add(b::releaseFromJob);
            return b;
        }

        @Override
        public io.blockjobs.sdk.job.Drain drain(String nodeName) {
            BlockNode node = graph.requireDevice(nodeName);
            return () -> graph.drain(node);
        }

        @Override
        public DirtyBitmap createBitmap(String nodeName, long granularity) {
            BlockNode node = graph.requireDevice(nodeName);
            if (!(HarnessGraph.skipFilters(node) instanceof MemoryNode m)) {
                throw new CommandException(nodeName + ": the harness keeps bitmaps of memory nodes only");
            }
            long g = granularity == 0 ? Math.min(65536, Math.max(4096, m.clusterSize() > 0 ? m.clusterSize() : 65536))
                    : granularity;
            if (g < 512 || Long.bitCount(g) != 1) {
                throw new CommandException("Granularity must be power of 2 and at least 512");
            }
            HarnessBitmap b = new HarnessBitmap(m, null, Long.numberOfTrailingZeros(g), m.size());
            releases.add(b::drop);
            return b;
        }
    }

    /**
     * The write tracker of a converging job: an after-write hook on its {@code mirror_top} filter
     * that marks every range clients changed, by the node's cluster size (at least 4 KiB), as the
     * platform's {@code DirtyTracker}. Waiting for writes times out on the fake clock, and wakes for
     * a write or a verb.
     */
    private final class WriteTrackerImpl implements WriteTracker, WriteHook {
        private final BitSet dirty = new BitSet();
        private volatile int granularity = 64 * 1024;
        private volatile HarnessFilter filter;

        void attach(HarnessFilter f) {
            this.filter = f;
            this.granularity = Math.max(4096, f.clusterSize());
        }

        void detach() {
            lock.lock();
            try {
                dirty.clear();
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void after(WriteRequest request, boolean succeeded) {
            if (request.length() == 0) {
                return;
            }
            int g = granularity;
            lock.lock();
            try {
                dirty.set((int) (request.offset() / g), (int) ((request.end() + g - 1) / g));
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }

        @Override
        public String filterNodeName() {
            return filter.nodeName();
        }

        @Override
        public List<Range> takeDirty() {
            int g = granularity;
            lock.lock();
            try {
                List<Range> ranges = new ArrayList<>();
                for (int i = dirty.nextSetBit(0); i >= 0; ) {
                    int end = dirty.nextClearBit(i);
                    ranges.add(new Range((long) i * g, (long) (end - i) * g));
                    i = dirty.nextSetBit(end);
                }
                dirty.clear();
                return ranges;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public boolean awaitDirty(long millis) throws InterruptedException {
            lock.lock();
            try {
                long deadline = clock.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
                // A verb that came since the last pause point (a pause between it and this call)
                // must end the wait at once, or the fake clock would keep the job asleep for good.
                int kicksBefore = kicksAtPausePoint;
                waitingForWrites = true;
                busy = false;
                changed.signalAll();
                try {
                    while (dirty.isEmpty() && clock.nanoTime() < deadline && kicks == kicksBefore) {
                        changed.await();
                    }
                } finally {
                    waitingForWrites = false;
                    busy = true;
                }
                return !dirty.isEmpty();
            } finally {
                lock.unlock();
            }
        }

        @Override
        public AutoCloseable blockWrites() {
            return graph.drain(filter); // clients of the filter wait; the job's own requests go on
        }
    }

    /** {@code value} read under the job's lock. */
    private <T> T locked(java.util.function.Supplier<T> value) {
        lock.lock();
        try {
            return value.get();
        } finally {
            lock.unlock();
        }
    }

}
