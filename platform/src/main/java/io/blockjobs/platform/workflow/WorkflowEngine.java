package io.blockjobs.platform.workflow;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryUsage;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
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
    private static final int MAX_RUNNING = 32;
    private static final int KEEP_FINISHED = 100;
    private static final String PRELUDE = loadPrelude();

    private final EventBus events;
    private final BiFunction<String, JsonNode, CompletableFuture<ObjectNode>> qmp;
    private final Path scriptsDir;
    private final Map<String, WorkflowRun> runs = new LinkedHashMap<>();
    private final AtomicLong counter = new AtomicLong();
    private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(
            Thread.ofPlatform().name("workflow-timer").daemon().factory());
    private final AutoCloseable subscription;
    private Engine polyglot;

    /**
     * @param events     the daemon's events: scripts see them, and workflow events go there
     * @param qmp        runs a QMP command as a monitor would, replying {@code {"return"}} or {@code {"error"}}
     * @param scriptsDir where {@code workflow-run} finds scripts given by name
     */
    public WorkflowEngine(EventBus events, BiFunction<String, JsonNode, CompletableFuture<ObjectNode>> qmp, Path scriptsDir) {
        this.events = events;
        this.qmp = qmp;
        this.scriptsDir = scriptsDir;
        this.subscription = events.subscribe(e -> {
            if (!e.name().equals("WORKFLOW_LOG")) {
                for (WorkflowRun r : running()) {
                    r.deliver(e);
                }
            }
        });
        timer.scheduleWithFixedDelay(this::watch, 20, 20, TimeUnit.MILLISECONDS);
    }

    /** What a run is asked to do. */
    public record Request(String script, JsonNode args, Optional<String> id, Optional<Long> timeoutSeconds,
                          Optional<Long> statementLimit, Optional<String> schedule) {
    }

    /** Starts a run; returns its id. */
    public String start(Request request) {
        String source = read(request.script());
        JsonNode args = request.args() == null || request.args().isNull() ? Json.object() : request.args();
        if (!args.isObject()) {
            throw new CommandException("'args' must be an object");
        }
        long timeout = request.timeoutSeconds().orElse(DEFAULT_TIMEOUT_SECONDS);
        long statements = request.statementLimit().orElse(DEFAULT_STATEMENT_LIMIT);
        if (timeout <= 0 || statements <= 0) {
            throw new CommandException("'timeout' and 'max-statements' must be positive");
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
            if (old != null && old.state() == WorkflowRun.State.RUNNING) {
                throw new CommandException("Workflow '" + id + "' is already running");
            }
            runs.remove(id);
            run = new WorkflowRun(this, id, request.script(), source, args, request.schedule(), timeout, statements);
            runs.put(id, run);
            trimFinished();
        }
        polyglot(); // built on first use, by the caller, so a failure to build is the caller's error
        events.publish("WORKFLOW_STARTED", Json.object().put("id", run.id).put("script", run.script));
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
        return new WorkflowScheduler(this, timer);
    }

    /** Throws as {@code workflow-run} would if the script cannot be read. */
    public void checkScript(String script) {
        read(script);
    }

    private String read(String script) {
        if (script.isEmpty()) {
            throw new CommandException("'script' must name a script in " + scriptsDir + " or give a path");
        }
        Path path = script.contains("/") ? Path.of(script) : scriptsDir.resolve(script);
        try {
            return Files.readString(path);
        } catch (NoSuchFileException e) {
            throw new CommandException("Could not open '" + path + "': No such file or directory");
        } catch (IOException | RuntimeException e) {
            throw new CommandException("Could not read '" + path + "': " + e.getMessage());
        }
    }

    /** Stops runs past their wall-clock budget, and the run that fills the heap. */
    private void watch() {
        try {
            Instant now = Instant.now();
            MemoryUsage heap = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage();
            long max = heap.getMax() > 0 ? heap.getMax() : Runtime.getRuntime().maxMemory();
            boolean heapHalfFull = heap.getUsed() > max / 2;
            for (WorkflowRun r : running()) {
                if (now.isAfter(r.deadline())) {
                    r.stop(new WorkflowRun.Stop(WorkflowRun.State.FAILED, "GenericError",
                            "the workflow exceeded its time budget and was stopped"));
                } else if (heapHalfFull && allocatedBytes(r.threadId()) - r.allocatedAtStart() > max / 8) {
                    r.stop(new WorkflowRun.Stop(WorkflowRun.State.FAILED, "GenericError",
                            "the workflow allocated more than " + (max / 8 >> 20)
                                    + " MiB while the daemon's heap was more than half full, and was stopped"));
                }
            }
        } catch (RuntimeException e) {
            LOG.warn("workflow watchdog", e);
        }
    }

    static long allocatedBytes(long threadId) {
        if (ManagementFactory.getThreadMXBean() instanceof com.sun.management.ThreadMXBean t) {
            return t.getThreadAllocatedBytes(threadId);
        }
        return 0;
    }

    // --- called by runs ---

    synchronized Engine polyglot() {
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

    CompletableFuture<ObjectNode> execute(String command, JsonNode arguments) {
        return qmp.apply(command, arguments);
    }

    ScheduledExecutorService timer() {
        return timer;
    }

    void logged(WorkflowRun run, String message) {
        events.publish("WORKFLOW_LOG", Json.object().put("id", run.id).put("message", message));
    }

    void finished(WorkflowRun run) {
        ObjectNode data = Json.object().put("id", run.id).put("script", run.script).put("state", run.state().qmpName());
        run.result().ifPresent(r -> data.set("result", r));
        run.error().ifPresent(e -> data.set("error", Json.MAPPER.valueToTree(e)));
        LOG.info("workflow {} ({}) {}{}", run.id, run.script, run.state().qmpName(),
                run.error().map(e -> ": " + e.desc()).orElse(""));
        events.publish("WORKFLOW_FINISHED", data);
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
     * Stops every run and the engine. It does not wait for the runs: it may be called on the main
     * loop, which their last QMP commands would need; the job manager cancels their jobs.
     */
    @Override
    public void close() {
        List<WorkflowRun> all = new ArrayList<>(running());
        for (WorkflowRun r : all) {
            r.stop(new WorkflowRun.Stop(WorkflowRun.State.CANCELLED, "GenericError", "the daemon is shutting down"));
        }

        try {
            subscription.close();
        } catch (Exception e) {
            LOG.debug("unsubscribing", e);
        }
        timer.shutdownNow();
        synchronized (this) {
            if (polyglot != null) {
                try {
                    polyglot.close(true);
                } catch (RuntimeException e) {
                    LOG.debug("closing the JavaScript engine", e);
                }
            }
        }
    }
}
