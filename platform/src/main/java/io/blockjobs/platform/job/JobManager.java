package io.blockjobs.platform.job;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.event.QmpEvent;
import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.bitmap.NodeBitmaps;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.GraphEdit;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCancelledException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.job.WriteTracker;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry of jobs. It walks each job through QEMU's lifecycle: created, running (paused,
 * ready, standby), waiting, pending, then concluded, or aborting on failure or cancel; it
 * announces the block-job events, holds the nodes a job uses (permissions and op blockers)
 * until the job's graph edits are done, and keeps the job until it is dismissed.
 *
 * <p>Every job belongs to a transaction ({@link JobTxn}), a lone job to one of its own, as in
 * QEMU's {@code job.c}: when every member has done its work, every member prepares; if all
 * prepared, all commit, otherwise all abort. A member that fails or is cancelled while it runs
 * cancels the others, and then all abort.
 *
 * <p>A job's body runs on its own thread; everything after the run (the job's completion, its
 * transaction's prepare, commit, abort and clean, the events) happens on the main loop, as in
 * QEMU, so verbs (which arrive there too) see a transaction either before or after such a step.
 */
public final class JobManager implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(JobManager.class);
    private static final Pattern ID = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,127}");
    private static final int READ = Perm.CONSISTENT_READ.bit();
    private static final int WRITE = Perm.WRITE.bit();
    private static final int UNCHANGED = Perm.WRITE_UNCHANGED.bit();

    /** A job's work without a context (such as blockdev-create's). */
    @FunctionalInterface
    public interface Body {
        void run(Job job) throws Exception;
    }

    /**
     * Runs work on the daemon's main loop and waits for it (graph changes happen only there);
     * called on the main loop itself, it runs the work at once.
     */
    @FunctionalInterface
    public interface MainLoop {
        <T> T call(java.util.concurrent.Callable<T> task) throws Exception;
    }

    private final EventBus events;
    private final BlockGraph graph;
    private final Bitmaps bitmaps;
    private final MainLoop mainLoop;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final Map<GraphNode, Job> claimedNodes = new java.util.HashMap<>();
    private final ExecutorService threads = Executors.newVirtualThreadPerTaskExecutor();

    public JobManager(EventBus events, BlockGraph graph, MainLoop mainLoop) {
        this(events, graph, new Bitmaps(graph), mainLoop);
    }

    public JobManager(EventBus events, BlockGraph graph, Bitmaps bitmaps, MainLoop mainLoop) {
        this.events = events;
        this.graph = graph;
        this.bitmaps = bitmaps;
        this.mainLoop = mainLoop;
    }

    /** Starts a job that is not a block job (blockdev-create's {@code create}). */
    public Job start(String id, String type, boolean autoFinalize, boolean autoDismiss, Body body) {
        Job job = register(id, type, false, autoFinalize, autoDismiss, 0, OnError.REPORT, null);
        job.txn = new JobTxn(List.of(job));
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

        public Job job() {
            return job;
        }
    }

    /** Starts a block job from a plugin's command, on the main loop. */
    public <A extends JobArgs> Job startBlockJob(JobCommand<A> command, A args) {
        Prepared p = prepare(command, args);
        startAll(List.of(p), false);
        return p.job;
    }

    /**
     * Prepares a block job: checks its id and speed, runs its factory (which uses nodes, puts in
     * filters and freezes links) and registers it. Undo with {@link #discard} if a later step of
     * a transaction fails.
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
        JobResources held = new JobResources();
        Object owner = held; // frozen links and edits are the job's own
        JobSetup setup = new Setup(id, command.jobType(), held, owner);
        JobBody body;
        try {
            body = command.factory().prepare(args, setup);
        } catch (RuntimeException e) {
            release(held);
            throw e;
        }
        OnError onError = args.onError().orElse(OnError.REPORT);
        Job job = register(id, command.jobType(), true, args.autoFinalize().orElse(true),
                args.autoDismiss().orElse(true), speed, args.onSourceError().orElse(onError),
                args.onTargetError().orElse(onError), body);
        synchronized (this) {
            job.resources.edges.addAll(held.edges);
            job.resources.used.addAll(held.used);
            job.resources.frozen.addAll(held.frozen);
            job.resources.filters.addAll(held.filters);
            job.resources.bitmaps.addAll(held.bitmaps);
            job.resources.wakers.addAll(held.wakers);
            for (GraphNode n : held.used) {
                claimedNodes.put(n, job);
            }
        }
        job.owner = owner;
        return new Prepared(job, () -> launch(job, () -> body.run(job)));
    }

    /** What a job's factory may do, on the main loop. */
    private final class Setup implements JobSetup {
        private final String id;
        private final String type;
        private final JobResources held;
        private final Object owner;

        Setup(String id, String type, JobResources held, Object owner) {
            this.id = id;
            this.type = type;
            this.held = held;
            this.owner = owner;
        }

        @Override
        public BlockNode use(String nodeName, String role, Set<BlockPermission> perm, Set<BlockPermission> shared) {
            return JobManager.this.use(id, type, nodeName, role, mask(perm), mask(shared), held);
        }

        @Override
        public BlockNode claim(String nodeName) {
            return JobManager.this.use(id, type, nodeName, "intermediate node", 0, READ | UNCHANGED, held);
        }

        @Override
        public BlockNode claimWritable(String nodeName) {
            reopenReadWrite(nodeName);
            return JobManager.this.use(id, type, nodeName, "root", READ | WRITE, READ | UNCHANGED, held);
        }

        @Override
        public void reopenReadWrite(String nodeName) {
            GraphNode node = requireDevice(nodeName);
            try {
                graph.reopenReadWrite(node);
            } catch (IOException | UnsupportedOperationException e) {
                throw new CommandException("Could not reopen '" + nodeName + "' for writing: " + e.getMessage());
            }
        }

        @Override
        public List<ChainLink> chain(String nodeName) {
            GraphNode top = requireDevice(nodeName);
            List<ChainLink> links = new ArrayList<>();
            for (GraphNode g = top; g != null; g = g.chainNext()) {
                GraphNode image = g.skipFilters();
                links.add(new ChainLink(g.name(), g, image.filename(), image.driver()));
            }
            return links;
        }

        @Override
        public WriteTracker trackWrites(String nodeName, String filterNodeName) {
            DirtyTracker tracker = new DirtyTracker();
            GraphNode f = graph.insertFilter(nodeName, "mirror_top", filterNodeName, Map.of(), List.of(tracker),
                    Set.copyOf(held.edges), true);
            held.filters.add(f.name());
            held.wakers.add(tracker::wake);
            tracker.attach(f, graph);
            return tracker;
        }

        @Override
        public BlockNode insertFilter(String nodeName, FilterSpec filter) {
            GraphNode f = graph.insertFilter(nodeName, filter.driver(), filter.nodeName(), filter.options(),
                    filter.hooks(), Set.copyOf(held.edges), !filter.driver().equals("commit_top"));
            held.filters.add(f.name());
            return f;
        }

        @Override
        public void freezeBackingChain(String topNode, String baseNode) {
            held.frozen.add(graph.freeze(owner, topNode, baseNode));
        }

        @Override
        public DirtyBitmap useBitmap(String nodeName, String bitmapName) {
            requireDevice(nodeName);
            Bitmap b = bitmaps.lookup(nodeName, bitmapName);
            b.claimForJob();
            held.bitmaps.add(b::releaseFromJob);
            return b;
        }

        @Override
        public BlockNode createImage(io.blockjobs.sdk.job.NewImage image) {
            String format = image.format();
            if (!format.equals("qcow2") && !format.equals("raw")) {
                throw new CommandException(graph.drivers().get(format) == null
                        ? "Unknown file format '" + format + "'"
                        : "Format driver '" + format + "' does not support image creation");
            }
            java.nio.file.Path file = java.nio.file.Path.of(image.filename());
            try {
                if (format.equals("raw")) {
                    if (image.backingFile() != null) {
                        throw new CommandException("Backing file not supported for file format 'raw'");
                    }
                    io.blockjobs.platform.image.Images.createRaw(file, image.size());
                } else {
                    io.blockjobs.platform.image.Qcow2CreateOptions o =
                            io.blockjobs.platform.image.Qcow2CreateOptions.of(image.size());
                    if (image.backingFile() != null) {
                        o = o.withBacking(image.backingFile(), image.backingFormat());
                    }
                    io.blockjobs.platform.image.Images.createQcow2(file, o);
                }
            } catch (IOException e) {
                throw new CommandException("Could not create '" + image.filename() + "': " + e.getMessage());
            }
            return openImage(image.filename(), format, image.nodeName(), image.optionsFrom());
        }

        @Override
        public BlockNode openImage(String filename, String format, String nodeName, String optionsFrom) {
            return graph.openForJob(filename, format, nodeName, optionsFrom == null ? null : requireDevice(optionsFrom));
        }

        @Override
        public void checkReplaceable(String nodeName) {
            GraphNode node = requireDevice(nodeName);
            for (Edge e : node.parents()) {
                if (e.parent() != null && e.name().equals("backing")) {
                    throw new CommandException("Node '" + nodeName + "' is busy: node is used as backing hd of '"
                            + e.parent().name() + "'");
                }
            }
            String blocked = blocker(nodeName);
            if (blocked != null) {
                throw new CommandException(blocked);
            }
        }

        @Override
        public boolean reachesThroughFilters(String fromNode, String nodeName) {
            GraphNode target = requireDevice(nodeName);
            for (GraphNode n = requireDevice(fromNode); n != null; ) {
                if (n == target) {
                    return true;
                }
                Edge f = n.filteredEdge();
                n = f == null ? null : f.child();
            }
            return false;
        }

        @Override
        public boolean isRootNode(String nodeName) {
            return requireDevice(nodeName).parents().stream().allMatch(e -> e.parent() == null);
        }

        @Override
        public io.blockjobs.sdk.job.Drain drain(String nodeName) {
            GraphNode node = requireDevice(nodeName);
            return () -> graph.drain(node);
        }

        @Override
        public DirtyBitmap createBitmap(String nodeName, long granularity) {
            GraphNode node = requireDevice(nodeName);
            long g = granularity == 0 ? Bitmaps.defaultGranularity(node) : granularity;
            if (g < 512 || Long.bitCount(g) != 1 || g > 1L << 31) {
                throw new CommandException("Granularity must be power of 2 and at least 512");
            }
            long size;
            try {
                size = node.size();
            } catch (IOException e) {
                throw new CommandException("could not get length of device: " + e.getMessage());
            }
            NodeBitmaps nb = bitmaps.of(node);
            Bitmap b = nb.create(null, Long.numberOfTrailingZeros(g), size);
            held.bitmaps.add(() -> nb.release(b));
            return b;
        }
    }

    private static int mask(Set<BlockPermission> perms) {
        int m = 0;
        for (BlockPermission p : perms) {
            m |= Perm.valueOf(p.name()).bit();
        }
        return m;
    }

    private GraphNode requireDevice(String nodeName) {
        GraphNode node = graph.find(nodeName);
        if (node == null) {
            throw new CommandException(ErrorClass.DEVICE_NOT_FOUND, "Device '" + nodeName + "' not found");
        }
        return node;
    }

    /**
     * The job uses a node: an op blocker for other jobs and a root edge with its permissions. A
     * job may use one node in several roles, as QEMU's jobs hold a BlockBackend beside their
     * {@code main node}, {@code base} or {@code target} child; the same role twice is refused.
     */
    private synchronized BlockNode use(String jobId, String type, String nodeName, String role, int perm, int shared,
                                       JobResources held) {
        GraphNode node = requireDevice(nodeName);
        Job holder = claimedNodes.get(node);
        boolean sameRole = held.edges.stream().anyMatch(e -> e.child() == node && e.name().equals(role));
        if (holder != null || sameRole) {
            String holderType = holder != null ? holder.type() : type;
            throw new CommandException("Node '" + nodeName + "' is busy: block device is in use by block job: " + holderType);
        }
        BlockGraph.RootUser user = role.equals("root") ? BlockGraph.RootUser.export(jobId)
                : BlockGraph.RootUser.job(type, jobId);
        Edge edge = graph.attachRoot(user, role, node, perm, shared, false);
        held.edges.add(edge);
        if (!held.used.contains(node)) {
            held.used.add(node);
        }
        return edge;
    }

    /** Forgets prepared jobs that will not start (a transaction failed): their nodes are free again. */
    public void discard(List<Prepared> prepared) {
        for (int i = prepared.size() - 1; i >= 0; i--) {
            Prepared p = prepared.get(i);
            release(p.job.resources);
            synchronized (this) {
                jobs.remove(p.job.id());
            }
        }
    }

    /**
     * Starts prepared jobs. With {@code grouped}, as QEMU's {@code completion-mode: grouped},
     * they share one transaction: they finalize together, and if one fails or is cancelled the
     * others are cancelled. Otherwise each has a transaction of its own.
     */
    public void startAll(List<Prepared> prepared, boolean grouped) {
        if (grouped) {
            JobTxn txn = new JobTxn(prepared.stream().map(p -> p.job).toList());
            prepared.forEach(p -> p.job.txn = txn);
        } else {
            prepared.forEach(p -> p.job.txn = new JobTxn(List.of(p.job)));
        }
        prepared.forEach(p -> p.run.run());
    }

    private synchronized void release(JobResources held) {
        for (GraphNode n : held.used) {
            claimedNodes.remove(n);
        }
        held.release(graph);
    }

    private void checkNewId(String id) {
        if (id == null || !ID.matcher(id).matches()) {
            throw new CommandException("Invalid job ID '" + (id == null ? "" : id) + "'");
        }
        if (jobs.containsKey(id)) {
            throw new CommandException("Job ID '" + id + "' already in use");
        }
    }

    private Job register(String id, String type, boolean blockJob, boolean autoFinalize, boolean autoDismiss,
                         long speed, OnError onError, JobBody body) {
        return register(id, type, blockJob, autoFinalize, autoDismiss, speed, onError, onError, body);
    }

    private Job register(String id, String type, boolean blockJob, boolean autoFinalize, boolean autoDismiss,
                         long speed, OnError onReadError, OnError onWriteError, JobBody body) {
        Job job;
        synchronized (this) {
            checkNewId(id);
            job = new Job(id, type, events, blockJob, autoFinalize, autoDismiss, speed, onReadError, onWriteError,
                    body, threads);
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

    /**
     * The job's thread: its work; then its completion, which is the main loop's (QEMU's
     * {@code job_exit} bottom half), so that a transaction changes state in one place only and a
     * verb never lands between two of its steps.
     */
    private void runToEnd(Job job, Work work) {
        String error = null;
        boolean cancelled = false;
        try {
            work.run();
        } catch (JobCancelledException e) {
            cancelled = true;
        } catch (Exception | Error e) {
            error = jobError(e);
            LOG.info("job {} failed: {}", job.id(), e.getMessage() == null ? e.toString() : e.getMessage());
        }
        job.settleCopiers();
        job.endRun(); // a drain or shutdown need not wait for the main loop to take this in
        String failure = error;
        boolean cancelledAtPausePoint = cancelled;
        try {
            onMainLoop(() -> completed(job, failure, cancelledAtPausePoint));
        } catch (Exception e) {
            LOG.warn("job {}: completion did not run: {}", job.id(), e.toString());
        }
    }

    /**
     * What {@code query-jobs} and {@code BLOCK_JOB_COMPLETED} say a failed job's error was: for a
     * failed request, its errno's text, as QEMU's {@code strerror(-ret)} ("No space left on
     * device"); the details (which image, which offset) go to the log. Other failures, and an
     * image's own complaints ({@link io.blockjobs.platform.image.ImageException}: a bad cluster
     * size, damaged metadata), keep their message.
     */
    static String jobError(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof io.blockjobs.sdk.block.BlockIoException b
                    && !(t instanceof io.blockjobs.platform.image.ImageException)) {
                return b.errno().message();
            }
        }
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }

    /** QEMU's {@code job_completed}, on the main loop: the job's run ended. */
    private void completed(Job job, String error, boolean cancelledAtPausePoint) {
        JobTxn txn = job.txn;
        if (error != null) {
            job.fail(error);
        }
        // A cancel that came after the job's last pause point counts too (QEMU's job_update_rc).
        boolean cancelled = cancelledAtPausePoint || (job.cancelled() && !job.softCancelled());
        if (cancelled) {
            job.markForceCancelled();
        }
        txn.runEnded(job);
        if (error != null || cancelled || txn.aborting) {
            toAborting(job);
        }
        if (txn.aborting) {
            // Another member failed or was cancelled and cancelled this one; the last to stop aborts all.
            if (txn.allRunsEnded()) {
                abortMembers(txn);
            }
            return;
        }
        if (error != null || cancelled) {
            abortTxn(txn, job);
            return;
        }
        job.transition(JobStatus.WAITING);
        if (txn.allRunsEnded()) {
            allWaiting(txn);
        }
    }

    /** Every member did its work: all become pending, then finalize unless one waits for job-finalize. */
    private void allWaiting(JobTxn txn) {
        for (Job m : txn.members) {
            m.transition(JobStatus.PENDING);
            if (m.blockJob() && !m.autoFinalize()) {
                events.publish(new QmpEvent.BlockJobPending(m.type(), m.id()));
            }
        }
        if (txn.members.stream().allMatch(Job::autoFinalize)) {
            finalizeTxn(txn);
        }
    }

    /**
     * QEMU's {@code job_do_finalize}, on the main loop and in one go: prepare every member;
     * commit all, or abort all if one failed.
     */
    private void finalizeTxn(JobTxn txn) {
        if (txn.finalizing || txn.aborting) {
            return;
        }
        txn.finalizing = true;
        Job failed = null;
        for (Job m : txn.members) {
            JobBody body = m.body();
            if (body == null || m.softCancelled()) {
                continue; // a soft-cancelled job finishes without its switch-over
            }
            try {
                onMainLoop(() -> body.prepare(edit(m)));
            } catch (Exception e) {
                String message = e.getMessage() == null ? e.toString() : e.getMessage();
                LOG.info("job {} failed to prepare: {}", m.id(), message);
                if (e instanceof io.blockjobs.sdk.job.EditsKeptException) {
                    m.resources.edits.clear(); // its graph changes stand (QEMU's mirror after its prepare)
                }
                m.fail(message);
                failed = m;
                break;
            }
        }
        if (failed != null) {
            txn.aborting = true;
            for (Job m : txn.members) {
                if (m != failed) {
                    m.markForceCancelled();
                }
            }
            abortMembers(txn);
            return;
        }
        for (Job m : txn.members) { // QEMU's job_finalize_single, member by member
            JobBody body = m.body();
            if (body != null) {
                try {
                    onMainLoop(() -> {
                        if (m.softCancelled()) {
                            body.abort(edit(m));
                        } else {
                            body.commit(edit(m));
                        }
                    });
                } catch (Exception e) {
                    LOG.warn("job {}: commit failed after prepare: {}", m.id(), e.getMessage());
                }
            }
            clean(m);
            if (m.blockJob()) {
                events.publish(m.completedEvent(null));
            }
            conclude(m);
        }
    }

    /**
     * QEMU's {@code job_completed_txn_abort}, on the main loop: the others are cancelled (forced);
     * once every member's run has ended, every member aborts. The main loop does not wait for
     * them: the last member whose run ends does the aborting.
     */
    private void abortTxn(JobTxn txn, Job culprit) {
        txn.aborting = true;
        for (Job m : txn.members) {
            if (m == culprit) {
                continue;
            }
            m.markForceCancelled();
            if (!txn.hasRunEnded(m)) {
                try {
                    m.cancel(true);
                } catch (RuntimeException e) {
                    LOG.debug("transaction cancel of {}: {}", m.id(), e.getMessage());
                }
            }
        }
        if (txn.allRunsEnded()) {
            abortMembers(txn);
        }
    }

    /**
     * QEMU's {@code job_update_rc}: a job that aborts without an error of its own (it was
     * cancelled) reports "Operation canceled" in query-jobs from now on.
     */
    private static void toAborting(Job m) {
        if (m.error() == null) {
            m.fail(Errno.ECANCELED.message());
        }
        if (m.status() != JobStatus.ABORTING) {
            m.transition(JobStatus.ABORTING);
        }
    }

    private void abortMembers(JobTxn txn) {
        for (Job m : txn.members) {
            toAborting(m);
            JobBody body = m.body();
            if (body != null) {
                try {
                    onMainLoop(() -> {
                        body.abort(edit(m));
                        m.resources.undoEdits();
                    });
                } catch (Exception e) {
                    LOG.warn("job {}: undoing its graph changes failed: {}", m.id(), e.getMessage());
                }
            }
            clean(m);
            if (m.blockJob()) { // as QEMU's job_finalize_single: cancelled, or completed with its error
                events.publish(m.cancelled() && !m.softCancelled() ? m.cancelledEvent() : m.completedEvent(m.error()));
            }
            conclude(m);
        }
    }

    /** QEMU's {@code .clean}, then what the job held goes, after its graph edits. */
    private void clean(Job m) {
        JobBody body = m.body();
        try {
            onMainLoop(() -> {
                if (body != null) {
                    body.clean();
                }
                release(m.resources);
            });
        } catch (Exception e) {
            LOG.warn("job {}: clean failed: {}", m.id(), e.getMessage());
        }
    }

    private interface MainLoopTask {
        void run() throws Exception;
    }

    private void onMainLoop(MainLoopTask task) throws Exception {
        mainLoop.call(() -> {
            task.run();
            return null;
        });
    }

    /** The graph edits a job makes when it finalizes or aborts, recorded to undo. */
    private GraphEdit edit(Job job) {
        Object owner = job.owner != null ? job.owner : job;
        Set<Edge> own = new HashSet<>(job.resources.edges);
        return new GraphEdit() {
            @Override
            public void setBacking(String overlayNode, String backingNode, String backingFile) {
                setBacking(overlayNode, backingNode, backingFile, false);
            }

            @Override
            public void setBacking(String overlayNode, String backingNode, String backingFile, boolean maskProtocol) {
                job.resources.edits.add(graph.setBacking(owner, overlayNode, backingNode, backingFile, maskProtocol));
            }

            @Override
            public void openBacking(String overlayNode) {
                job.resources.edits.add(graph.openBacking(overlayNode));
            }

            @Override
            public void replaceUsers(String fromNode, String toNode) {
                job.resources.edits.add(graph.replaceUsers(fromNode, toNode, own));
            }

            @Override
            public void dropUses(String nodeName) {
                synchronized (JobManager.this) {
                    for (java.util.Iterator<Edge> it = job.resources.edges.iterator(); it.hasNext(); ) {
                        Edge e = it.next();
                        if (e.child().name().equals(nodeName)) {
                            graph.detachRoot(e);
                            it.remove();
                        }
                    }
                }
            }

            @Override
            public void removeFilter(String filterNodeName) {
                graph.removeFilter(filterNodeName);
                job.resources.filters.remove(filterNodeName);
            }
        };
    }

    private void conclude(Job job) {
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

    /** {@code block-job-change}: new values for a running job's options. */
    public void change(Job job, Map<String, Object> options) {
        job.change(options);
    }

    /**
     * Cancel, on the main loop. A job still at work meets the cancel at its next pause point; one
     * whose run has ended (waiting for the others, or pending) aborts its transaction at once, as
     * QEMU's {@code job_cancel_locked} does for a job deferred to the main loop.
     */
    public void cancel(Job job, boolean force) {
        job.cancel(force);
        JobTxn txn = job.txn;
        if (txn.hasRunEnded(job) && !txn.aborting && !txn.finalizing && job.cancelled() && !job.softCancelled()) {
            abortTxn(txn, job);
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

    /** {@code job-finalize}: finalizes the job's whole transaction, as QEMU does. */
    public void finalizeJob(Job job) {
        job.checkVerb(JobVerb.FINALIZE);
        JobTxn txn = job.txn;
        if (!txn.members.stream().allMatch(m -> m.status() == JobStatus.PENDING)) {
            return; // the others are still running: they finalize together when the last is done
        }
        finalizeTxn(txn);
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
    public BlockGraph.Drained drain() {
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

    /** QEMU's op blocker for graph changes: refused while a job uses the node. */
    public synchronized void checkNotClaimed(String nodeName) {
        GraphNode node = graph.find(nodeName);
        Job holder = node == null ? null : claimedNodes.get(node);
        if (holder != null) {
            throw new CommandException("Node '" + nodeName + "' is busy: block device is in use by block job: "
                    + holder.type());
        }
    }

    /** The op blocker's message for a node a job uses, or null. */
    public synchronized String blocker(String nodeName) {
        GraphNode node = graph.find(nodeName);
        Job holder = node == null ? null : claimedNodes.get(node);
        return holder == null ? null
                : "Node '" + nodeName + "' is busy: block device is in use by block job: " + holder.type();
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

    /** Cancels every job (on the main loop) and waits a little for their runs to end, as QEMU does at exit. */
    @Override
    public void close() {
        for (Job j : all()) {
            try {
                onMainLoop(() -> {
                    if (JobVerb.CANCEL.allowedIn(j.status())) {
                        cancel(j, true);
                    }
                });
            } catch (Exception e) {
                LOG.debug("cancel {} at exit: {}", j.id(), e.getMessage());
            }
        }
        for (Job j : all()) {
            try {
                j.awaitRunEnded(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        threads.shutdownNow();
    }
}
