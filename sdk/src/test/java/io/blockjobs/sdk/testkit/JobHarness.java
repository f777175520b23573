package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;
import java.util.regex.Pattern;

/**
 * Runs a job plugin's commands without a daemon, as the platform would: a graph of named
 * in-memory nodes, jobs prepared from their arguments (JSON text, as a QMP client sends them) by
 * the command's factory with a {@link io.blockjobs.sdk.job.JobSetup} that uses nodes with
 * permissions and op blockers, puts filters in ({@code copy-on-read}, {@code commit_top},
 * {@code mirror_top} with its write tracker, and filters of registered drivers), reopens and
 * freezes; each job runs on its own virtual thread under a {@link HarnessJob} that the test
 * drives with QMP's verbs; clients ({@link #client}) write beside it through whatever filter it
 * put in.
 *
 * <pre>{@code
 * JobHarness harness = new JobHarness().add(top);          // top and its backing chain
 * RootEdge guest = harness.client("top");                  // writes beside the job
 * HarnessJob job = harness.start(command, "{\"job-id\": \"j\", \"device\": \"top\"}");
 * HarnessJob.Outcome outcome = job.awaitEnd();
 * }</pre>
 *
 * <p>Block drivers a plugin contributes open as the platform opens them, once
 * {@linkplain #install installed} (or {@linkplain #register registered}): a job's
 * {@code insertFilter} with such a driver's name opens it over the node, and a test opens nodes
 * itself as {@code blockdev-add} would ({@link #open}), for a client to use:
 *
 * <pre>{@code
 * JobHarness harness = new JobHarness().install(new BackupPlugin()).add(disk, scratch);
 * harness.open(Map.of("driver", "copy-before-write", "node-name", "cbw", "file", "disk", "target", "scratch"));
 * harness.open(Map.of("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
 * RootEdge guest = harness.client("cbw");                  // the guest writes through the filter
 * RootEdge fleece = harness.client("acc");                 // reads the disk as it was
 * }</pre>
 *
 * <p>Time is a {@link FakeClock}: speed limits sleep on it, so nothing sleeps for real.
 */
public final class JobHarness implements AutoCloseable {
    private static final Pattern ID = Pattern.compile("[A-Za-z][A-Za-z0-9_.-]{0,127}");

    private final HarnessGraph graph = new HarnessGraph();
    private final FakeClock clock;
    private final ReentrantLock mainLoop = new ReentrantLock();
    private final Map<String, HarnessJob> jobs = new LinkedHashMap<>();
    private final List<JobEvent> events = new ArrayList<>();
    private final Map<String, HarnessBitmap> bitmaps = new LinkedHashMap<>(); // by "node/name"
    private final Map<String, JobCommand<?>> commands = new LinkedHashMap<>();

    /** A harness whose clock moves forward by each sleep at once. */
    public JobHarness() {
        this(FakeClock.autoAdvancing());
    }

    /** A harness on {@code clock}. */
    public JobHarness(FakeClock clock) {
        this.clock = clock;
    }

    /** The harness's clock. */
    public FakeClock clock() {
        return clock;
    }

    // ---- plugins ---------------------------------------------------------------------------------

    /**
     * Installs a plugin as the platform does when it starts one: its block drivers are registered
     * ({@link #register}) and its job commands can be run by name ({@link #command}). Its plain
     * QMP commands are not run by the harness.
     *
     * @throws IllegalArgumentException if a driver or command of that name is there already
     */
    public JobHarness install(BlockjobsPlugin plugin) {
        register(plugin.blockDrivers().toArray(BlockDriver[]::new));
        synchronized (commands) {
            for (JobCommand<?> c : plugin.jobCommands()) {
                if (commands.putIfAbsent(c.name(), c) != null) {
                    throw new IllegalArgumentException("a job command named '" + c.name() + "' is installed already");
                }
            }
        }
        return this;
    }

    /**
     * Registers block drivers: {@link #open} and a job's {@code insertFilter} open nodes of them
     * by name, with a {@link io.blockjobs.sdk.driver.DriverContext} over the harness as the
     * platform's: the options given (for a filter a job puts in, the filter's options and
     * {@code file}, the node), children by node name (the child's request entry point; the graph
     * moves the link as it moves any parent's), {@code read-only} (inherited by a job's filter
     * from its node), the generic flags, and objects ({@link #addObject}).
     *
     * @throws IllegalArgumentException if a driver of that name is registered already
     */
    public JobHarness register(BlockDriver... drivers) {
        for (BlockDriver d : drivers) {
            graph.register(d);
        }
        return this;
    }

    /**
     * The job command named {@code name} of an installed plugin.
     *
     * @throws CommandException QEMU's {@code CommandNotFound} if no installed plugin has it
     */
    public JobCommand<?> command(String name) {
        synchronized (commands) {
            JobCommand<?> c = commands.get(name);
            if (c == null) {
                throw new CommandException(ErrorClass.COMMAND_NOT_FOUND, "The command " + name + " has not been found");
            }
            return c;
        }
    }

    /** Prepares a job of an installed plugin's command from its arguments as JSON text; not started yet. */
    public HarnessJob prepare(String commandName, String argumentsJson) {
        return prepare(command(commandName), argumentsJson);
    }

    /** Prepares and starts a job of an installed plugin's command from its arguments as JSON text. */
    public HarnessJob start(String commandName, String argumentsJson) {
        return prepare(commandName, argumentsJson).start();
    }

    /**
     * Adds a user-creatable object ({@code object-add}, {@code --object}) that drivers find with
     * {@code DriverContext.object(id, type)}.
     */
    public JobHarness addObject(String id, Object object) {
        graph.addObject(id, object);
        return this;
    }

    // ---- the graph -----------------------------------------------------------------------------

    /** Adds nodes, each with the nodes beneath it, under their node names. */
    public JobHarness add(BlockNode... nodes) {
        for (BlockNode n : nodes) {
            graph.add(n);
        }
        return this;
    }

    /** Adds every layer of a chain. */
    public JobHarness add(MemoryChain chain) {
        chain.layers().forEach(graph::add);
        return this;
    }

    /**
     * Adds a named dirty bitmap to a memory node, recording from now on, as
     * {@code block-dirty-bitmap-add} would; jobs reach it by {@code JobSetup.useBitmap}.
     */
    public synchronized HarnessBitmap addBitmap(String nodeName, String name, long granularity) {
        if (!(graph.requireDevice(nodeName) instanceof MemoryNode m)) {
            throw new IllegalArgumentException(nodeName + ": the harness keeps bitmaps of memory nodes only");
        }
        if (bitmaps.containsKey(nodeName + "/" + name)) {
            throw new CommandException("Bitmap already exists: " + name);
        }
        HarnessBitmap b = new HarnessBitmap(m, name, Long.numberOfTrailingZeros(granularity), m.size());
        bitmaps.put(nodeName + "/" + name, b);
        return b;
    }

    /** The named bitmap of a node, or QEMU's messages. */
    synchronized HarnessBitmap bitmap(String nodeName, String name) {
        graph.requireDevice(nodeName);
        HarnessBitmap b = bitmaps.get(nodeName + "/" + name);
        if (b == null) {
            throw new CommandException("Dirty bitmap '" + name + "' not found");
        }
        return b;
    }

    /**
     * Opens a node of a registered driver as {@code blockdev-add} does, from its options as QMP
     * gives them: {@code driver} and {@code node-name} (both required), {@code read-only},
     * {@code auto-read-only} and {@code force-share}, and the driver's own; children are named by
     * node name (nodes added, or opened before). Members nobody read are refused with QEMU's
     * message. Returns the node; {@link #client} attaches users to it, {@link #delete} closes it,
     * and so does {@link #close()}.
     *
     * @throws CommandException for a driver that is not registered, a bad or taken name, bad
     *         options, a child that cannot be found or attached (QEMU's messages)
     */
    public BlockNode open(Map<String, ?> options) {
        return graph.open(options);
    }

    /**
     * Deletes a node as {@code blockdev-del} does, with QEMU's checks and messages: refused while
     * a client or a job uses it, another node has it as a child, or it is a job's filter. A node
     * of a driver is closed; a memory node only leaves the graph (the test may still read it).
     */
    public void delete(String nodeName) {
        graph.delete(nodeName, n -> {
            HarnessJob holder = holderOf(n);
            return holder == null ? null : "Node '" + nodeName + "' is busy: block device is in use by block job: "
                    + holder.type();
        });
    }

    /** The node named {@code name} now (an image, a filter a job put in, a node a driver opened), or null. */
    public BlockNode node(String name) {
        return graph.find(name);
    }

    /** The names of the nodes now. */
    public Set<String> nodeNames() {
        return graph.names();
    }

    /** The filters in the graph now. */
    public List<String> filters() {
        return graph.filterNames();
    }

    /** The frozen backing links now, as {@code parent -> child}. */
    public List<String> frozenLinks() {
        return graph.frozenLinks();
    }

    /** Every root edge now: clients' and jobs'. */
    public List<RootEdge> edges() {
        return graph.roots();
    }

    /** Requests in flight on every node now. */
    public int requestsInFlight() {
        int n = 0;
        for (BlockNode node : graph.all()) {
            if (node instanceof MemoryNode m) {
                n += m.requestsInFlight();
            } else if (node instanceof HarnessFilter f) {
                n += f.requestsInFlight();
            } else if (node instanceof HarnessDriverNode d) {
                n += d.requestsInFlight();
            }
        }
        return n;
    }

    /**
     * A client of {@code nodeName}, as an export or a guest: it reads and writes, and lets others
     * read and write (not resize). Its requests follow the graph when a job puts a filter above
     * the node or switches its users over, and wait while a job drains them.
     */
    public RootEdge client(String nodeName) {
        return client(nodeName, EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE),
                EnumSet.of(BlockPermission.CONSISTENT_READ, BlockPermission.WRITE, BlockPermission.WRITE_UNCHANGED));
    }

    /** A client that takes {@code perm} and shares {@code shared}; refused on a conflict. */
    public RootEdge client(String nodeName, Set<BlockPermission> perm, Set<BlockPermission> shared) {
        BlockNode node = graph.requireDevice(nodeName);
        return graph.attachRoot(new RootEdge("an unnamed block device", "root", node, perm, shared, true));
    }

    /** Detaches a client. */
    public void detach(RootEdge client) {
        graph.detachRoot(client);
    }

    // ---- jobs ----------------------------------------------------------------------------------

    /** Prepares a job from its arguments as JSON text, as the platform would; not started yet. */
    public <A extends JobArgs> HarnessJob prepare(JobCommand<A> command, String argumentsJson) {
        return prepare(command, QmpArguments.parse(command.arguments(), argumentsJson));
    }

    /** Prepares and starts a job from its arguments as JSON text. */
    public <A extends JobArgs> HarnessJob start(JobCommand<A> command, String argumentsJson) {
        return prepare(command, argumentsJson).start();
    }

    /**
     * Prepares a job as the platform's {@code JobManager.prepare}: checks its id and speed, runs
     * its factory, and registers it; a factory that throws leaves nothing behind.
     */
    public <A extends JobArgs> HarnessJob prepare(JobCommand<A> command, A args) {
        String id = args.jobId().orElse(args.device());
        long speed = args.speed().orElse(0L);
        if (speed < 0) {
            throw new CommandException("Parameter 'speed' expects a non-negative value");
        }
        mainLoop.lock();
        try {
            checkNewId(id);
            HarnessJob job = new HarnessJob(this, graph, clock, id, command.jobType(), args.autoFinalize().orElse(true),
                    args.autoDismiss().orElse(true), speed, args.onSourceError().or(args::onError).orElse(OnError.REPORT),
                    args.onTargetError().or(args::onError).orElse(OnError.REPORT));
            JobBody body;
            try {
                body = command.factory().prepare(args, job.setup());
            } catch (RuntimeException e) {
                job.release();
                throw e;
            }
            if (body == null) {
                job.release();
                throw new IllegalStateException(command.name() + ": the factory returned no body");
            }
            job.attachBody(body);
            synchronized (jobs) {
                jobs.put(id, job);
            }
            return job;
        } finally {
            mainLoop.unlock();
        }
    }

    /** The live job with this id, or null. */
    public HarnessJob job(String id) {
        synchronized (jobs) {
            return jobs.get(id);
        }
    }

    /** Every event of every job, in order. */
    public List<JobEvent> events() {
        synchronized (events) {
            return List.copyOf(events);
        }
    }

    private void checkNewId(String id) {
        if (id == null || !ID.matcher(id).matches()) {
            throw new CommandException("Invalid job ID '" + (id == null ? "" : id) + "'");
        }
        synchronized (jobs) {
            if (jobs.containsKey(id)) {
                throw new CommandException("Job ID '" + id + "' already in use");
            }
        }
    }

    HarnessJob holderOf(BlockNode node) {
        synchronized (jobs) {
            for (HarnessJob j : jobs.values()) {
                if (j.holds(node)) {
                    return j;
                }
            }
        }
        return null;
    }

    void forget(HarnessJob job) {
        synchronized (jobs) {
            jobs.remove(job.id(), job);
        }
    }

    void record(JobEvent e) {
        synchronized (events) {
            events.add(e);
        }
    }

    /** Runs {@code task} as on the daemon's main loop: one at a time. */
    void onMainLoop(Runnable task) {
        mainLoop.lock();
        try {
            task.run();
        } finally {
            mainLoop.unlock();
        }
    }

    /**
     * Cancels the jobs still running and waits for them, then closes the nodes drivers opened: a
     * test that failed leaves no thread behind, nor an open driver node.
     */
    @Override
    public void close() {
        List<HarnessJob> live;
        synchronized (jobs) {
            live = new ArrayList<>(jobs.values());
        }
        for (HarnessJob j : live) {
            JobStatus s = j.status();
            if (s == JobStatus.UNDEFINED) {
                j.release();
                forget(j);
                continue;
            }
            try {
                if (JobVerb.CANCEL.allowedIn(s)) {
                    j.cancel();
                }
                j.go();
                j.awaitEnd();
            } catch (RuntimeException | AssertionError e) {
                // the test has failed already, or the job ended meanwhile
            }
        }
        graph.closeDrivers();
    }
}
