package io.blockjobs.platform.job;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.event.QmpEvent;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ErrorAction;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCancelledException;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.OnError;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * One job and its place in QEMU's state machine. Verbs arrive on the main loop; the body runs
 * on its own virtual thread and meets them at pause points. Every change of status is checked
 * against {@link JobStatus#canBecome} and announced as {@code JOB_STATUS_CHANGE}.
 */
public final class Job implements JobContext {
    private final String id;
    private final String type;
    private final EventBus events;
    private final boolean blockJob;
    private final boolean autoFinalize;
    private final boolean autoDismiss;
    private final OnError onError;
    /** The policy for failed writes, where the command names it apart (mirror's on-target-error). */
    private final OnError onWriteError;
    private final JobBody body;
    private final Logger log;
    private final java.util.concurrent.Executor threads;
    private final List<CopierImpl> copiers = new java.util.concurrent.CopyOnWriteArrayList<>();
    /** What the job holds in the graph until it ends: root edges, frozen links, filters. */
    final JobResources resources = new JobResources();
    /** The job's transaction; a lone job has one of its own. */
    volatile JobTxn txn;
    /** Who the job's frozen links and graph edits belong to. */
    volatile Object owner;

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final RateLimit rateLimit = new RateLimit();
    private JobStatus status = JobStatus.UNDEFINED;
    private int pauseCount;
    private boolean userPaused;
    private boolean cancelled;
    private boolean softCancel;
    private boolean completeRequested;
    private boolean busy;
    /** {@link #wake} was called since the job's last {@link #sleep} began. */
    private boolean woken;
    /** The body's run has returned or thrown (its completion may still wait for the main loop). */
    private boolean runEnded;
    private long speed;
    private long offset;
    private long length;
    private String error;
    private String ioStatus = "ok";

    Job(String id, String type, EventBus events, boolean blockJob, boolean autoFinalize, boolean autoDismiss,
        long speed, OnError onError, JobBody body, java.util.concurrent.Executor threads) {
        this(id, type, events, blockJob, autoFinalize, autoDismiss, speed, onError, onError, body, threads);
    }

    /** A job whose reads and writes fail under different policies (mirror's on-source-error, on-target-error). */
    Job(String id, String type, EventBus events, boolean blockJob, boolean autoFinalize, boolean autoDismiss,
        long speed, OnError onReadError, OnError onWriteError, JobBody body, java.util.concurrent.Executor threads) {
        this.threads = threads;
        this.onWriteError = onWriteError;
        this.id = id;
        this.type = type;
        this.events = events;
        this.blockJob = blockJob;
        this.autoFinalize = autoFinalize;
        this.autoDismiss = autoDismiss;
        this.onError = onReadError;
        this.body = body;
        this.log = LoggerFactory.getLogger("io.blockjobs.job." + type);
        setSpeedUnchecked(speed);
    }

    @Override
    public String id() {
        return id;
    }

    public String type() {
        return type;
    }

    public boolean blockJob() {
        return blockJob;
    }

    public JobStatus status() {
        lock.lock();
        try {
            return status;
        } finally {
            lock.unlock();
        }
    }

    boolean autoFinalize() {
        return autoFinalize;
    }

    boolean autoDismiss() {
        return autoDismiss;
    }

    JobBody body() {
        return body;
    }

    void transition(JobStatus next) {
        lock.lock();
        try {
            if (!status.canBecome(next)) {
                throw new IllegalStateException("job " + id + ": " + status + " cannot become " + next);
            }
            status = next;
            events.publish(new QmpEvent.JobStatusChange(next.qmpName(), id));
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Throws QEMU's error if this job does not accept {@code verb} now. */
    void checkVerb(JobVerb verb) {
        JobStatus s = status();
        if (!verb.allowedIn(s)) {
            throw new CommandException("Job '" + id + "' in state '" + s.qmpName()
                    + "' cannot accept command verb '" + verb.qmpName() + "'");
        }
    }

    // ---- verbs (main loop) ---------------------------------------------------------------------

    void pause() {
        lock.lock();
        try {
            checkVerb(JobVerb.PAUSE);
            if (userPaused) {
                throw new CommandException("Job is already paused");
            }
            userPaused = true;
            pauseCount++;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    void resume() {
        lock.lock();
        try {
            checkVerb(JobVerb.RESUME);
            if (!userPaused) {
                throw new CommandException("Can't resume a job that was not paused");
            }
            userPaused = false;
            pauseCount--;
            ioStatus = "ok";
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** An internal pause (a drained section); nests with the user's. */
    void pauseInternal() {
        lock.lock();
        try {
            pauseCount++;
            changed.signalAll(); // a sleeping job wakes and pauses, as QEMU's job_enter does
        } finally {
            lock.unlock();
        }
    }

    void resumeInternal() {
        lock.lock();
        try {
            pauseCount--;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Cancels. A soft cancel of a ready, completable job finishes it as completed without
     * switching over, as QEMU does for mirror.
     */
    void cancel(boolean force) {
        lock.lock();
        try {
            checkVerb(JobVerb.CANCEL);
            boolean ready = status == JobStatus.READY || status == JobStatus.STANDBY;
            boolean forced = body == null || body.cancel(force);
            softCancel = !forced && ready;
            cancelled = true;
            resources.wakers.forEach(Runnable::run);
            if (userPaused) { // cancelling a paused job resumes it
                userPaused = false;
                pauseCount--;
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    boolean userPaused() {
        lock.lock();
        try {
            return userPaused;
        } finally {
            lock.unlock();
        }
    }

    void setSpeed(long bytesPerSecond) {
        lock.lock();
        try {
            checkVerb(JobVerb.SET_SPEED);
            if (bytesPerSecond < 0) {
                throw new CommandException("Parameter 'speed' expects a non-negative value");
            }
            setSpeedUnchecked(bytesPerSecond);
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private void setSpeedUnchecked(long bytesPerSecond) {
        speed = bytesPerSecond;
        rateLimit.setSpeed(bytesPerSecond);
    }

    /** {@code block-job-change}, on the main loop. */
    void change(java.util.Map<String, Object> options) {
        lock.lock();
        try {
            checkVerb(JobVerb.CHANGE);
        } finally {
            lock.unlock();
        }
        if (body == null) {
            throw new CommandException("Job type does not support change");
        }
        body.change(options);
    }

    void complete() {
        lock.lock();
        try {
            checkVerb(JobVerb.COMPLETE);
            if (body == null || cancelled) {
                throw new CommandException("The active block job '" + id + "' cannot be completed");
            }
            body.complete(this);
            completeRequested = true;
            changed.signalAll();
            resources.wakers.forEach(Runnable::run); // a converged job waiting for writes looks now
        } finally {
            lock.unlock();
        }
    }

    /**
     * A forced cancel without the verb's checks: another member of the transaction failed (QEMU
     * cancels the others with force), or the run ended by a cancel. The job ends as cancelled.
     */
    void markForceCancelled() {
        lock.lock();
        try {
            cancelled = true;
            softCancel = false;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    boolean cancelled() {
        lock.lock();
        try {
            return cancelled;
        } finally {
            lock.unlock();
        }
    }

    boolean softCancelled() {
        lock.lock();
        try {
            return softCancel;
        } finally {
            lock.unlock();
        }
    }

    void fail(String message) {
        lock.lock();
        try {
            error = message;
        } finally {
            lock.unlock();
        }
    }

    // ---- JobContext (the job's thread) -----------------------------------------------------------

    @Override
    public void pausePoint() {
        boolean pausing;
        lock.lock();
        try {
            pausing = pauseCount > 0 && !cancelled;
        } finally {
            lock.unlock();
        }
        if (pausing) {
            copiers.forEach(CopierImpl::awaitIdle); // in-flight work settles before the job reports paused
            if (body != null) {
                body.pause();
            }
        }
        lock.lock();
        try {
            if (cancelled && !softCancel) {
                throw new JobCancelledException();
            }
            while (pauseCount > 0 && !cancelled) {
                if (status == JobStatus.RUNNING) {
                    transition(JobStatus.PAUSED);
                } else if (status == JobStatus.READY) {
                    transition(JobStatus.STANDBY);
                }
                busy = false;
                changed.signalAll(); // a drain waits for this
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
        if (pausing && body != null) {
            body.resume();
        }
    }

    @Override
    public io.blockjobs.sdk.job.Copier copier(int maxInFlight, int bufferSize) {
        CopierImpl c = new CopierImpl(this, threads, maxInFlight, bufferSize);
        copiers.add(c);
        return c;
    }

    void forget(CopierImpl c) {
        copiers.remove(c);
    }

    /** Waits for every copier's work in flight (the job failed or ended). */
    void settleCopiers() {
        copiers.forEach(CopierImpl::awaitIdle);
    }

    /** QEMU's {@code job_sleep_ns} for a converged job: not busy; a wake, a verb or the time ends it. */
    @Override
    public void sleep(long millis) {
        lock.lock();
        try {
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(millis);
            long left = deadline - System.nanoTime();
            while (!woken && !cancelled && pauseCount == 0 && !completeRequested && left > 0) {
                busy = false;
                try {
                    changed.awaitNanos(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new JobCancelledException();
                }
                left = deadline - System.nanoTime();
            }
            woken = false;
            busy = true;
        } finally {
            lock.unlock();
        }
    }

    /** QEMU's {@code job_enter}: a client wrote; the sleeping job looks now (or at its next sleep). */
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

    @Override
    public void throttle(long bytes) {
        lock.lock();
        try {
            long delay = rateLimit.processed(bytes, System.nanoTime());
            long deadline = System.nanoTime() + delay;
            long speedBefore = speed;
            // Sleep as QEMU's job_sleep_ns: woken early by cancel, pause or a new speed.
            while (delay > 0 && !cancelled && pauseCount == 0 && speed == speedBefore) {
                busy = false;
                try {
                    changed.awaitNanos(delay);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new JobCancelledException();
                }
                delay = deadline - System.nanoTime();
            }
            busy = true;
        } finally {
            lock.unlock();
        }
        pausePoint();
    }

    @Override
    public void progress(long done, long total) {
        lock.lock();
        try {
            offset = done;
            length = total;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void ready() {
        lock.lock();
        try {
            if (status == JobStatus.RUNNING) {
                transition(JobStatus.READY);
                events.publish(new QmpEvent.BlockJobReady(type, id, length, offset, speed));
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public boolean completeRequested() {
        lock.lock();
        try {
            return completeRequested || softCancel;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public ErrorAction onIoError(IOException e, boolean read) throws IOException {
        boolean noSpace = io.blockjobs.sdk.block.Errno.of(e) == io.blockjobs.sdk.block.Errno.ENOSPC;
        OnError policy = read ? onError : onWriteError;
        String action = switch (policy) {
            case REPORT -> "report";
            case IGNORE -> "ignore";
            case STOP -> "stop";
            case ENOSPC, AUTO -> noSpace ? "stop" : "report";
        };
        events.publish(new QmpEvent.BlockJobError(id, read ? "read" : "write", action));
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

    @Override
    public Logger log() {
        return log;
    }

    // ---- reporting -------------------------------------------------------------------------------

    /** {@code BLOCK_JOB_COMPLETED}, with {@code error} if the job failed (null: it did not). */
    QmpEvent.BlockJobCompleted completedEvent(String error) {
        lock.lock();
        try {
            return new QmpEvent.BlockJobCompleted(type, id, length, offset, speed, java.util.Optional.ofNullable(error));
        } finally {
            lock.unlock();
        }
    }

    /** {@code BLOCK_JOB_CANCELLED}. */
    QmpEvent.BlockJobCancelled cancelledEvent() {
        lock.lock();
        try {
            return new QmpEvent.BlockJobCancelled(type, id, length, offset, speed);
        } finally {
            lock.unlock();
        }
    }

    String error() {
        lock.lock();
        try {
            return error;
        } finally {
            lock.unlock();
        }
    }

    /** QMP's {@code JobInfo}. */
    public JobInfo info() {
        lock.lock();
        try {
            return new JobInfo(id, type, status, offset, length, error);
        } finally {
            lock.unlock();
        }
    }

    /** QMP's {@code BlockJobInfo}. */
    public BlockJobInfo blockInfo() {
        lock.lock();
        try {
            boolean ready = status == JobStatus.READY || status == JobStatus.STANDBY;
            java.util.Optional<io.blockjobs.sdk.job.Convergence> c = body == null ? java.util.Optional.empty()
                    : body.convergence();
            // QEMU 8.2's BlockJobInfo has actively-synced in mirror's branch of its union only
            return new BlockJobInfo(type, id, length, offset, busy, pauseCount > 0, speed, ioStatus, ready, status,
                    autoFinalize, autoDismiss, error,
                    c.filter(x -> type.equals("mirror")).map(io.blockjobs.sdk.job.Convergence::activelySynced),
                    c.map(io.blockjobs.sdk.job.Convergence::dirtyBytes));
        } finally {
            lock.unlock();
        }
    }

    /** The job's thread: the body's run is over; what follows is the main loop's. */
    void endRun() {
        lock.lock();
        try {
            runEnded = true;
            busy = false;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until the job is not running: paused at a pause point, or done with its work (its
     * completion may wait for the main loop, which may be the caller).
     */
    void awaitQuiescent() {
        lock.lock();
        try {
            while ((status == JobStatus.RUNNING || status == JobStatus.READY) && !runEnded) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /** Waits (bounded) for the body's run to end, if it ever started; for shutdown. */
    boolean awaitRunEnded(long millis) throws InterruptedException {
        lock.lock();
        try {
            long nanos = TimeUnit.MILLISECONDS.toNanos(millis);
            while (!runEnded && status != JobStatus.UNDEFINED && nanos > 0) { // undefined: prepared, never started
                nanos = changed.awaitNanos(nanos);
            }
            return runEnded;
        } finally {
            lock.unlock();
        }
    }

    /** QMP's {@code JobInfo} record. */
    public record JobInfo(String id, String type, JobStatus status, long currentProgress, long totalProgress,
                          String error) {
    }

    /**
     * QMP's {@code BlockJobInfo} record, with QEMU 8.2's {@code actively-synced} for mirror jobs
     * and blockjobs' {@code x-dirty-bytes} for converging jobs that report it (mirror): the bytes
     * still to copy, which stay high while clients write faster than the job copies.
     */
    public record BlockJobInfo(String type, String device, long len, long offset, boolean busy, boolean paused,
                               long speed, String ioStatus, boolean ready, JobStatus status, boolean autoFinalize,
                               boolean autoDismiss, String error, java.util.Optional<Boolean> activelySynced,
                               java.util.Optional<Long> xDirtyBytes) {
    }
}
