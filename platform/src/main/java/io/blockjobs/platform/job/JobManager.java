package io.blockjobs.platform.job;

import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.graph.BlockBackend;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCancelledException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry of jobs. It walks each job through QEMU's lifecycle: created, running (paused,
 * ready, standby), waiting, pending, then concluded, or aborting on failure or cancel; it
 * announces the block-job events, holds the nodes a job claimed (op blockers) until the job
 * ends, and keeps the job until it is dismissed.
 */
public final class JobManager implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(JobManager.class);
    private static final Pattern ID = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,127}");

    /** A job's work without a context (such as blockdev-create's). */
    @FunctionalInterface
    public interface Body {
        void run(Job job) throws Exception;
    }

    /** Runs work on the daemon's main loop and waits for it (graph changes happen only there). */
    @FunctionalInterface
    public interface MainLoop {
        <T> T call(java.util.concurrent.Callable<T> task) throws Exception;
    }

    private final EventBus events;
    private final BlockGraph graph;
    private final MainLoop mainLoop;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final Map<GraphNode, Job> claimedNodes = new HashMap<>();
    private final ExecutorService threads = Executors.newVirtualThreadPerTaskExecutor();

    public JobManager(EventBus events, BlockGraph graph, MainLoop mainLoop) {
        this.events = events;
        this.graph = graph;
        this.mainLoop = mainLoop;
    }

    /** Starts a job that is not a block job (blockdev-create's {@code create}). */
    public Job start(String id, String type, boolean autoFinalize, boolean autoDismiss, Body body) {
        Job job = register(id, type, false, autoFinalize, autoDismiss, 0, OnError.REPORT, null);
        launch(job, () -> body.run(job));
        return job;
    }

    /** A job prepared and holding its nodes, not started yet (see {@link #startAll}). */
    public final class Prepared {
        private final Job job;
        private final Runnable run;

        private Prepared(Job job, Runnable run) {
            this.job = job;
            this.run = run;
        }
    }

    /** Starts a block job from a plugin's command, on the main loop. */
    public <A extends JobArgs> Job startBlockJob(JobCommand<A> command, A args) {
        Prepared p = prepare(command, args);
        startAll(List.of(p), false);
        return p.job;
    }

    /**
     * Prepares a block job: checks its id and speed, runs its factory (which claims nodes) and
     * registers it. Undo with {@link #discard} if a later step of a transaction fails.
     */
    public <A extends JobArgs> Prepared prepare(JobCommand<A> command, A args) {
        String id = args.jobId().orElse(args.device());
        long speed = args.speed().orElse(0L);
        if (speed < 0) {
            throw new CommandException("Parameter 'speed' expects a non-negative value");
        }
        synchronized (this) {
            checkNewId(id);
        }
        List<BlockBackend> claims = new ArrayList<>();
        JobSetup setup = new JobSetup() {
            @Override
            public BlockNode claim(String nodeName) {
                return JobManager.this.claim(id, command.jobType(), nodeName, claims);
            }

            @Override
            public BlockNode claimWritable(String nodeName) {
                BlockNode node = claim(nodeName);
                try {
                    if (node instanceof io.blockjobs.platform.image.Qcow2Node q) {
                        q.reopenReadWrite();
                    } else if (node instanceof io.blockjobs.platform.image.RawNode r) {
                        r.reopenReadWrite();
                    } else if (node.isReadOnly()) {
                        throw new CommandException("Node '" + nodeName + "' is read-only");
                    }
                } catch (java.io.IOException e) {
                    throw new CommandException("Could not reopen '" + nodeName + "' for writing: " + e.getMessage());
                }
                return node;
            }

            @Override
            public io.blockjobs.sdk.job.WriteTracker trackWrites(String nodeName, String filterNodeName) {
                return graph.insertTracker(nodeName, filterNodeName, claims);
            }

            @Override
            public List<ChainLink> chain(String nodeName) {
                GraphNode top = graph.find(nodeName);
                if (top == null) {
                    throw new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Device '" + nodeName + "' not found");
                }
                List<ChainLink> links = new ArrayList<>();
                for (GraphNode g = top; g != null; g = g.chainNext()) {
                    links.add(new ChainLink(g.name(), g.node(), g.node().filename(), g.driver()));
                }
                return links;
            }
        };
        JobBody body;
        try {
            body = command.factory().prepare(args, setup);
        } catch (RuntimeException e) {
            release(claims);
            throw e;
        }
        Job job = register(id, command.jobType(), true, args.autoFinalize().orElse(true),
                args.autoDismiss().orElse(true), speed, args.onError().orElse(OnError.REPORT), body);
        synchronized (this) {
            job.claims.addAll(claims);
            for (BlockBackend b : claims) {
                claimedNodes.put(b.root(), job);
            }
        }
        return new Prepared(job, () -> launch(job, () -> body.run(job)));
    }

    /** Forgets prepared jobs that will not start (a transaction failed): their nodes are free again. */
    public void discard(List<Prepared> prepared) {
        for (Prepared p : prepared) {
            release(p.job.claims);
            synchronized (this) {
                jobs.remove(p.job.id());
            }
        }
    }

    /**
     * Starts prepared jobs. With {@code grouped}, as QEMU's {@code completion-mode: grouped}:
     * they finish together, and if one fails or is cancelled the others are cancelled.
     */
    public void startAll(List<Prepared> prepared, boolean grouped) {
        if (grouped && prepared.size() > 1) {
            Group group = new Group(prepared.stream().map(p -> p.job).toList());
            prepared.forEach(p -> groups.put(p.job, group));
        }
        prepared.forEach(p -> p.run.run());
    }

    /** Jobs of a grouped transaction. */
    private final class Group {
        final List<Job> members;
        int done;
        boolean aborted;

        Group(List<Job> members) {
            this.members = members;
        }

        /** A member finished its work: waits for the others; false if the group was aborted. */
        synchronized boolean finishedAndWait() throws InterruptedException {
            done++;
            notifyAll();
            while (done < members.size() && !aborted) {
                wait();
            }
            return !aborted;
        }

        /** A member failed or was cancelled: cancel the others. */
        void abort(Job failed) {
            synchronized (this) {
                if (aborted) {
                    return;
                }
                aborted = true;
                notifyAll();
            }
            for (Job j : members) {
                if (j != failed && JobVerb.CANCEL.allowedIn(j.status())) {
                    try {
                        j.cancel(true);
                    } catch (RuntimeException e) {
                        LOG.debug("group cancel of {}: {}", j.id(), e.getMessage());
                    }
                }
            }
        }
    }

    private final Map<Job, Group> groups = new java.util.concurrent.ConcurrentHashMap<>();

    private synchronized BlockNode claim(String jobId, String type, String nodeName, List<BlockBackend> claims) {
        GraphNode node = graph.find(nodeName);
        if (node == null) {
            throw new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Device '" + nodeName + "' not found");
        }
        Job holder = claimedNodes.get(node);
        if (holder != null || claims.stream().anyMatch(b -> b.root() == node)) {
            String holderType = holder != null ? holder.type() : type;
            throw new CommandException("Node '" + nodeName + "' is busy: block device is in use by block job: " + holderType);
        }
        BlockBackend backend = graph.attach("block job '" + jobId + "'", node);
        claims.add(backend);
        return node.node();
    }

    private synchronized void release(List<BlockBackend> claims) {
        for (BlockBackend b : claims) {
            graph.detach(b);
            claimedNodes.values().removeIf(j -> j.claims.contains(b));
        }
    }

    private void checkNewId(String id) {
        if (id == null || !ID.matcher(id).matches()) {
            throw new CommandException("Invalid job ID '" + id + "'");
        }
        if (jobs.containsKey(id)) {
            throw new CommandException("Job ID '" + id + "' already in use");
        }
    }

    private Job register(String id, String type, boolean blockJob, boolean autoFinalize, boolean autoDismiss,
                         long speed, OnError onError, JobBody body) {
        Job job;
        synchronized (this) {
            checkNewId(id);
            job = new Job(id, type, events, blockJob, autoFinalize, autoDismiss, speed, onError, body);
            jobs.put(id, job);
        }
        return job;
    }

    private interface Work {
        void run() throws Exception;
    }

    private void launch(Job job, Work work) {
        job.transition(JobStatus.CREATED);
        job.transition(JobStatus.RUNNING);
        threads.submit(() -> runToEnd(job, work));
    }

    private void runToEnd(Job job, Work work) {
        try {
            work.run();
            if (job.cancelled() && !job.softCancelled()) {
                throw new JobCancelledException();
            }
            job.transition(JobStatus.WAITING);
            Group group = groups.get(job);
            if (group != null && !group.finishedAndWait()) {
                throw new JobCancelledException(); // another member failed
            }
            job.transition(JobStatus.PENDING);
            if (job.autoFinalize()) {
                finalizeNow(job);
            } else if (job.blockJob()) {
                events.publish("BLOCK_JOB_PENDING", io.blockjobs.platform.Json.object()
                        .put("type", job.type()).put("id", job.id()));
            }
        } catch (JobCancelledException e) {
            abort(job, null);
        } catch (Exception | Error e) {
            String message = e.getMessage() == null ? e.toString() : e.getMessage();
            LOG.info("job {} failed: {}", job.id(), message);
            abort(job, message);
        }
    }

    /** The graph edits jobs make when they finalize or abort. */
    private final io.blockjobs.sdk.job.GraphEdit edit = new io.blockjobs.sdk.job.GraphEdit() {
        @Override
        public void setBacking(String overlayNode, String backingNode, String backingFile) {
            graph.setBacking(overlayNode, backingNode, backingFile);
        }

        @Override
        public void replaceUsers(String fromNode, String toNode) {
            graph.replaceUsers(fromNode, toNode);
        }

        @Override
        public void removeFilter(String filterNodeName) {
            graph.removeFilter(filterNodeName);
        }
    };

    private void abort(Job job, String error) {
        JobBody abortedBody = job.body();
        if (abortedBody != null) {
            try {
                mainLoop.call(() -> {
                    abortedBody.abort(edit);
                    return null;
                });
            } catch (Exception e) {
                LOG.warn("job {}: undoing its graph changes failed: {}", job.id(), e.getMessage());
            }
        }
        Group group = groups.remove(job);
        if (group != null) {
            group.abort(job);
        }
        if (job.status() != JobStatus.ABORTING) {
            job.transition(JobStatus.ABORTING);
        }
        release(job.claims);
        if (error != null) {
            job.fail(error);
        }
        if (job.blockJob()) {
            var data = job.blockJobEventData();
            if (error != null) {
                events.publish("BLOCK_JOB_COMPLETED", data.put("error", error));
            } else {
                events.publish("BLOCK_JOB_CANCELLED", data);
            }
        }
        conclude(job);
    }

    private void finalizeNow(Job job) {
        release(job.claims);
        JobBody body = job.body();
        if (body != null) {
            try {
                mainLoop.call(() -> {
                    if (job.softCancelled()) {
                        body.abort(edit); // cancelled after ready: completed, without a switch-over
                    } else {
                        body.commit(edit);
                    }
                    return null;
                });
            } catch (Exception e) {
                String message = e.getMessage() == null ? e.toString() : e.getMessage();
                LOG.info("job {} failed to finalize: {}", job.id(), message);
                abort(job, message);
                return;
            }
        }
        if (job.blockJob()) {
            events.publish("BLOCK_JOB_COMPLETED", job.blockJobEventData());
        }
        conclude(job);
    }

    private void conclude(Job job) {
        groups.remove(job);
        job.transition(JobStatus.CONCLUDED);
        if (job.autoDismiss()) {
            dismissNow(job);
        }
    }

    private void dismissNow(Job job) {
        job.transition(JobStatus.NULL);
        synchronized (this) {
            jobs.remove(job.id());
        }
    }

    // ---- verbs ------------------------------------------------------------------------------------

    /** {@code job-*}: the job with this id, or QEMU's "Job not found". */
    public synchronized Job get(String id) {
        Job job = jobs.get(id);
        if (job == null) {
            throw new CommandException("Job not found");
        }
        return job;
    }

    /** {@code block-job-*}: the block job of this device (its id), or QEMU's DeviceNotActive. */
    public synchronized Job getBlockJob(String device) {
        Job job = jobs.get(device);
        if (job == null || !job.blockJob()) {
            throw new CommandException(ErrorClass.DEVICE_NOT_ACTIVE, "Block job '" + device + "' not found");
        }
        return job;
    }

    public void pause(Job job) {
        job.pause();
    }

    public void resume(Job job) {
        job.resume();
    }

    public void setSpeed(Job job, long speed) {
        job.setSpeed(speed);
    }

    public void complete(Job job) {
        job.complete();
    }

    /** Cancel; in {@code pending} (waiting for job-finalize) the job aborts at once. */
    public void cancel(Job job, boolean force) {
        boolean pending = job.status() == JobStatus.PENDING;
        job.cancel(force);
        if (pending) {
            abort(job, null);
        }
    }

    /** {@code block-job-cancel}: refuses a user-paused job unless forced, as QEMU does. */
    public void blockJobCancel(Job job, boolean force) {
        if (!force && job.userPaused()) {
            throw new CommandException("The block job for device '" + job.id() + "' is currently paused");
        }
        cancel(job, force);
    }

    public void finalizeJob(String id) {
        finalizeJob(get(id));
    }

    public void finalizeJob(Job job) {
        job.checkVerb(JobVerb.FINALIZE);
        finalizeNow(job);
    }

    public void dismiss(String id) {
        dismiss(get(id));
    }

    public void dismiss(Job job) {
        job.checkVerb(JobVerb.DISMISS);
        dismissNow(job);
    }

    /**
     * Drains the jobs for a graph change, as QEMU's drained sections do: each running job pauses
     * at its next pause point (an internal pause, nested with the user's) until the returned
     * handle is closed.
     */
    public AutoCloseable drain() {
        List<Job> drained = new ArrayList<>();
        for (Job j : all()) {
            JobStatus s = j.status();
            if (j.blockJob() && (s == JobStatus.RUNNING || s == JobStatus.READY || s == JobStatus.PAUSED
                    || s == JobStatus.STANDBY)) {
                j.pauseInternal();
                drained.add(j);
            }
        }
        drained.forEach(Job::awaitQuiescent);
        return () -> drained.forEach(Job::resumeInternal);
    }

    /** QEMU's op blocker for graph changes: refused while a job holds the node. */
    public synchronized void checkNotClaimed(String nodeName) {
        GraphNode node = graph.find(nodeName);
        Job holder = node == null ? null : claimedNodes.get(node);
        if (holder != null) {
            throw new CommandException("Node '" + nodeName + "' is busy: block device is in use by block job: "
                    + holder.type());
        }
    }

    /** Every job, in creation order. */
    public synchronized List<Job> all() {
        return new ArrayList<>(jobs.values());
    }

    /** True while a job of one of these types exists (unloading its plugin must wait). */
    public synchronized String jobOfType(java.util.Set<String> types) {
        for (Job j : jobs.values()) {
            if (types.contains(j.type())) {
                return j.id();
            }
        }
        return null;
    }

    /** Cancels every job and waits a little for them to end, as QEMU does at exit. */
    @Override
    public void close() {
        for (Job j : all()) {
            try {
                if (JobVerb.CANCEL.allowedIn(j.status())) {
                    cancel(j, true);
                }
            } catch (RuntimeException e) {
                LOG.debug("cancel {} at exit: {}", j.id(), e.getMessage());
            }
        }
        for (Job j : all()) {
            try {
                j.awaitNot(JobStatus.RUNNING, 5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        threads.shutdownNow();
    }
}
