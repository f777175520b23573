package io.blockjobs.platform.workflow;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.event.QmpEvent;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BiFunction;
import org.graalvm.polyglot.Engine;
import org.graalvm.polyglot.SandboxPolicy;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * Runs JavaScript workflows: ES modules whose default export {@code async function (bj, args)}
 * composes jobs through the {@code bj} object ({@code bj.js}). Each run has its own sandboxed
 * GraalJS context ({@link SandboxPolicy#CONSTRAINED}: no host classes, no files, processes or
 * sockets) on its own thread, a statement budget, a wall-clock budget and a memory rule, all
 * enforced by a watchdog. Contexts share one engine, so scripts are parsed once.
 */
public final class WorkflowEngine implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(WorkflowEngine.class);
    /** Enough for any orchestration; an endless loop meets it within seconds. */
    public static final long DEFAULT_STATEMENT_LIMIT = 50_000_000L;
    /** A day: long enough for a backup of a big disk, short enough that a stuck script ends. */
    public static final long DEFAULT_TIMEOUT_SECONDS = 24 * 3600L;
    /** Orchestration needs little CPU; a script computing for five minutes is most likely stuck. */
    public static final long DEFAULT_CPU_SECONDS = 300L;
    private static final long MAX_TIMEOUT_SECONDS = 366 * 24 * 3600L;
    private static final long MAX_SCRIPT_BYTES = 1 << 20;
    private static final int MAX_RUNNING = 32;
    private static final int KEEP_FINISHED = 100;
    private static final String PRELUDE = loadPrelude();

    private final EventBus events;
    private final BiFunction<String, JsonNode, CompletableFuture<ObjectNode>> qmp;
    private final Path scriptsDir;
    private final Map<String, WorkflowRun> runs = new LinkedHashMap<>();
    private final AtomicLong counter = new AtomicLong();
    private final AtomicLong jobCounter = new AtomicLong();
    private final ScheduledThreadPoolExecutor timer = new ScheduledThreadPoolExecutor(1,
            Thread.ofPlatform().name("workflow-timer").daemon().factory());
    private final AutoCloseable subscription;
    private final Object polyglotLock = new Object();
    private Engine polyglot;
    private volatile boolean closing;
    private long lastGc;
    /** The budget watchdog, ticking only while a run runs: an idle daemon does not wake for it. */
    private ScheduledFuture<?> watchdog;

    /**
     * @param events     the daemon's events: scripts see them, and workflow events go there
     * @param qmp        runs a QMP command as a monitor would, replying {@code {"return"}} or {@code {"error"}}
     * @param scriptsDir where {@code workflow-run} finds scripts given by name
     */
    public WorkflowEngine(EventBus events, BiFunction<String, JsonNode, CompletableFuture<ObjectNode>> qmp, Path scriptsDir) {
        this.events = events;
        this.qmp = qmp;
        this.scriptsDir = scriptsDir;
        timer.setRemoveOnCancelPolicy(true);
        this.subscription = events.subscribe(e -> {
            if (!e.name().equals("WORKFLOW_LOG")) {
                for (WorkflowRun r : running()) {
                    r.deliver(e);
                }
            }
        });
    }

    /** What a run is asked to do. */
    public record Request(String script, JsonNode args, Optional<String> id, Optional<Long> timeoutSeconds,
                          Optional<Long> statementLimit, Optional<Long> cpuSeconds, Optional<String> schedule) {
    }

    /** Starts a run; returns its id. The script runs on its own thread; this returns at once. */
    public String start(Request request) {
        if (closing) {
            throw new CommandException("The daemon is shutting down");
        }
        String source = read(request.script());
        JsonNode args = request.args() == null || request.args().isNull() ? Json.object() : request.args();
        if (!args.isObject()) {
            throw new CommandException("'args' must be an object");
        }
        long timeout = request.timeoutSeconds().orElse(DEFAULT_TIMEOUT_SECONDS);
        long statements = request.statementLimit().orElse(DEFAULT_STATEMENT_LIMIT);
        long cpu = request.cpuSeconds().orElse(DEFAULT_CPU_SECONDS);
        if (timeout <= 0 || timeout > MAX_TIMEOUT_SECONDS) {
            throw new CommandException("'timeout' must be between 1 and " + MAX_TIMEOUT_SECONDS + " seconds");
        }
        if (statements <= 0 || cpu <= 0 || cpu > MAX_TIMEOUT_SECONDS) {
            throw new CommandException("'max-statements' and 'cpu-time' must be positive");
        }
        WorkflowRun run;
        synchronized (this) {
            if (running().size() >= MAX_RUNNING) {
                throw new CommandException("Too many workflows are running (" + MAX_RUNNING + "); wait for one to finish");
            }
            String id = request.id().orElseGet(() -> "wf" + counter.incrementAndGet());
            if (id.isEmpty()) {
                throw new CommandException("Invalid workflow id ''");
            }
            WorkflowRun old = runs.get(id);
            if (old != null && (old.state() == WorkflowRun.State.RUNNING || !old.announced())) {
                throw new CommandException("Workflow '" + id + "' is already running");
            }
            if (watchdog == null) {
                try {
                    watchdog = timer.scheduleWithFixedDelay(this::watch, 20, 20, TimeUnit.MILLISECONDS);
                } catch (java.util.concurrent.RejectedExecutionException e) {
                    throw new CommandException("The daemon is shutting down"); // close() stopped the timer
                }
            }
            run = new WorkflowRun(this, id, request.script(), source, args, request.schedule(), timeout, statements, cpu);
            runs.remove(id); // a finished run of the same id gives way, after the new one exists
            runs.put(id, run);
            trimFinished();
        }
        events.publish(new QmpEvent.WorkflowStarted(run.id, run.script));
        run.start();
        return run.id;
    }

    /** Cancels a run: its script is stopped and the jobs it started are cancelled. */
    public void cancel(String id) {
        WorkflowRun run;
        synchronized (this) {
            run = runs.get(id);
        }
        if (run == null) {
            throw new CommandException("Workflow '" + id + "' not found");
        }
        if (run.state() != WorkflowRun.State.RUNNING) {
            throw new CommandException("Workflow '" + id + "' has already finished (" + run.state().qmpName() + ")");
        }
        run.stop(new WorkflowRun.Stop(WorkflowRun.State.CANCELLED, "GenericError", "cancelled by workflow-cancel"));
    }

    /** Running and recently finished runs, oldest first. */
    public synchronized List<WorkflowInfo> query() {
        return runs.values().stream().map(WorkflowRun::info).toList();
    }

    private synchronized List<WorkflowRun> running() {
        return runs.values().stream().filter(r -> r.state() == WorkflowRun.State.RUNNING).toList();
    }

    /** True while a run with this id is running. */
    public synchronized boolean isRunning(String id) {
        WorkflowRun r = runs.get(id);
        return r != null && r.state() == WorkflowRun.State.RUNNING;
    }

    private void trimFinished() {
        int finished = (int) runs.values().stream().filter(r -> r.state() != WorkflowRun.State.RUNNING).count();
        var it = runs.values().iterator();
        while (finished > KEEP_FINISHED && it.hasNext()) {
            if (it.next().state() != WorkflowRun.State.RUNNING) {
                it.remove();
                finished--;
            }
        }
    }

    /** A scheduler that starts runs of this engine. */
    public WorkflowScheduler scheduler() {
        return new WorkflowScheduler(this, timer, events);
    }

    /** Throws as {@code workflow-run} would if the script cannot be read. */
    public void checkScript(String script) {
        read(script);
    }

    /**
     * Reads a script. A workflow script is a regular file whose name ends in {@code .js} or
     * {@code .mjs}, of at most 1 MiB of UTF-8 text, and not in {@code /proc}, {@code /sys} or
     * {@code /dev} (after following links): so a QMP client cannot have the daemon evaluate, and
     * quote in an error, a file that is not a script ({@code /proc/self/environ}, a key). Errors
     * name the file and the problem, never what the file holds.
     */
    private String read(String script) {
        if (script.isEmpty()) {
            throw new CommandException("'script' must name a script in " + scriptsDir + " or give a path");
        }
        Path path = script.contains("/") ? Path.of(script) : scriptsDir.resolve(script);
        String name = path.getFileName() == null ? "" : path.getFileName().toString();
        if (!name.endsWith(".js") && !name.endsWith(".mjs")) {
            throw new CommandException("'" + path + "' is not a workflow script: its name must end in .js or .mjs");
        }
        try {
            Path real = path.toRealPath();
            for (String system : List.of("/proc", "/sys", "/dev")) {
                if (real.startsWith(system)) {
                    throw new CommandException("'" + path + "' is not a workflow script: scripts are not read from " + system);
                }
            }
            // Only a regular file of sensible size: a FIFO or a device would hold up the main loop.
            var attributes = Files.readAttributes(real, java.nio.file.attribute.BasicFileAttributes.class);
            if (!attributes.isRegularFile()) {
                throw new CommandException("'" + path + "' is not a regular file");
            }
            if (attributes.size() > MAX_SCRIPT_BYTES) {
                throw new CommandException("'" + path + "' is larger than " + (MAX_SCRIPT_BYTES >> 10) + " KiB; a workflow is a script, not data");
            }
            return Files.readString(real);
        } catch (NoSuchFileException e) {
            throw new CommandException("Could not open '" + path + "': No such file or directory");
        } catch (java.nio.file.AccessDeniedException e) {
            throw new CommandException("Could not open '" + path + "': Permission denied");
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new CommandException("Could not read '" + path + "': it is not UTF-8 text");
        } catch (java.nio.file.FileSystemException e) { // the system's reason, as "Is a directory"
            throw new CommandException("Could not read '" + path + "': " + (e.getReason() == null ? "I/O error" : e.getReason()));
        } catch (IOException | java.io.UncheckedIOException e) {
            // not the exception's message: it might come from what was read
            throw new CommandException("Could not read '" + path + "': I/O error (" + e.getClass().getSimpleName() + ")");
        }
    }

    /**
     * Stops runs past their time or CPU budget, and the run that fills the heap: when the heap is
     * more than half full, a GC tells garbage from what is kept (at most once a second); if it
     * stays more than half full, the run that allocated most since the last such check, if that
     * is more than an eighth of the heap, is stopped.
     */
    private void watch() {
        try {
            Instant now = Instant.now();
            List<WorkflowRun> live;
            synchronized (this) {
                live = running();
                if (live.isEmpty()) {
                    watchdog.cancel(false); // start() schedules it again, under this lock
                    watchdog = null;
                    return;
                }
            }
            for (WorkflowRun r : live) {
                if (now.isAfter(r.deadline())) {
                    r.stop(new WorkflowRun.Stop(WorkflowRun.State.FAILED, "GenericError",
                            "the workflow exceeded its time budget and was stopped"));
                } else if (cpuTime(r.threadId()) > r.cpuNanos()) {
                    r.stop(new WorkflowRun.Stop(WorkflowRun.State.FAILED, "GenericError",
                            "the workflow exceeded its CPU-time budget of " + TimeUnit.NANOSECONDS.toSeconds(r.cpuNanos())
                                    + " s and was stopped"));
                }
            }
            long max = Runtime.getRuntime().maxMemory();
            if (heapUsed() <= max / 2 || System.nanoTime() - lastGc < TimeUnit.SECONDS.toNanos(1)) {
                return;
            }
            WorkflowRun top = null;
            long most = 0;
            for (WorkflowRun r : live) {
                long allocated = allocatedBytes(r.threadId()) - r.allocatedAtMark;
                if (allocated > most) {
                    most = allocated;
                    top = r;
                }
            }
            if (top == null || most <= max / 8) {
                return;
            }
            System.gc(); // is it kept, or garbage?
            lastGc = System.nanoTime();
            for (WorkflowRun r : live) {
                r.allocatedAtMark = allocatedBytes(r.threadId());
            }
            if (heapUsed() > max / 2) {
                top.stop(new WorkflowRun.Stop(WorkflowRun.State.FAILED, "GenericError",
                        "the workflow allocated " + (most >> 20) + " MiB and the daemon's heap stayed more than half full ("
                                + (heapUsed() >> 20) + " of " + (max >> 20) + " MiB), so it was stopped"));
            }
        } catch (Throwable t) { // the watchdog must survive anything, or budgets stop being enforced
            LOG.warn("workflow watchdog", t);
        }
    }

    private static long heapUsed() {
        return ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
    }

    private static long cpuTime(long threadId) {
        long t = ManagementFactory.getThreadMXBean().getThreadCpuTime(threadId);
        return Math.max(t, 0);
    }

    static long allocatedBytes(long threadId) {
        if (ManagementFactory.getThreadMXBean() instanceof com.sun.management.ThreadMXBean t) {
            return t.getThreadAllocatedBytes(threadId);
        }
        return 0;
    }

    // --- called by runs ---

    /** The shared engine, built by the first run that needs it (on that run's thread, not QMP's). */
    Engine polyglot() {
        synchronized (polyglotLock) {
            if (closing) {
                throw new IllegalStateException("the daemon is shutting down");
            }
            if (polyglot == null) {
            polyglot = Engine.newBuilder("js")
                    .sandbox(SandboxPolicy.CONSTRAINED)
                    .out(OutputStream.nullOutputStream())
                    .err(OutputStream.nullOutputStream())
                    .option("engine.WarnInterpreterOnly", "false")
                    .build();
            }
            return polyglot;
        }
    }

    boolean closing() {
        return closing;
    }

    String newJobId(String runId) {
        return runId + "-job" + jobCounter.incrementAndGet();
    }

    CompletableFuture<ObjectNode> execute(String command, JsonNode arguments) {
        return qmp.apply(command, arguments);
    }

    ScheduledExecutorService timer() {
        return timer;
    }

    void logged(WorkflowRun run, String message) {
        events.publish(new QmpEvent.WorkflowLog(run.id, message));
    }

    void finished(WorkflowRun run) {
        LOG.info("workflow {} ({}) {}{}", run.id, run.script, run.state().qmpName(),
                run.error().map(e -> ": " + e.desc()).orElse(""));
        events.publish(new QmpEvent.WorkflowFinished(run.id, run.script, run.state().qmpName(),
                run.result().map(r -> (tools.jackson.databind.JsonNode) r),
                run.error().map(e -> new QmpEvent.ErrorInfo(e.errorClass(), e.desc()))));
    }

    static String prelude() {
        return PRELUDE;
    }

    private static String loadPrelude() {
        try (InputStream in = WorkflowEngine.class.getResourceAsStream("bj.js")) {
            if (in == null) {
                throw new IllegalStateException("bj.js is missing from the platform jar");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read bj.js", e);
        }
    }

    /**
     * Stops every run and the engine. Runs do not cancel their jobs now (this may run on the main
     * loop, which their commands would need): the job manager cancels every job next.
     */
    @Override
    public void close() {
        closing = true;
        List<WorkflowRun> all = running();
        for (WorkflowRun r : all) {
            r.stop(new WorkflowRun.Stop(WorkflowRun.State.CANCELLED, "GenericError", "the daemon is shutting down"));
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        for (WorkflowRun r : all) { // their WORKFLOW_FINISHED reaches the monitors before they close
            r.awaitEnd(Math.max(0, deadline - System.nanoTime()));
        }
        try {
            subscription.close();
        } catch (Exception e) {
            LOG.debug("unsubscribing", e);
        }
        timer.shutdownNow();
        Engine e;
        synchronized (polyglotLock) {
            e = polyglot;
        }
        if (e != null) {
            try {
                e.close(true);
            } catch (RuntimeException ex) {
                LOG.debug("closing the JavaScript engine", ex);
            }
        }
    }
}
