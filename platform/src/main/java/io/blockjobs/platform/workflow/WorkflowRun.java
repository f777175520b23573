package io.blockjobs.platform.workflow;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.Event;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.ScheduledFuture;
import org.graalvm.polyglot.Context;
import org.graalvm.polyglot.PolyglotException;
import org.graalvm.polyglot.ResourceLimits;
import org.graalvm.polyglot.SandboxPolicy;
import org.graalvm.polyglot.Source;
import org.graalvm.polyglot.Value;
import org.graalvm.polyglot.proxy.ProxyExecutable;
import org.graalvm.polyglot.proxy.ProxyObject;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * One run of a workflow: its own thread and sandboxed context, and a queue of tasks (QMP
 * replies, events, timers) that only that thread hands to the script, since a context is used by
 * one thread at a time. The run ends when the script's promise settles or when it is stopped
 * (cancelled, over budget); then the jobs it started and that are still running are cancelled.
 *
 * <p>What a run holds is bounded and let go when it ends: at most {@link #MAX_QMP_IN_FLIGHT}
 * {@code bj.qmp} calls between sending and the script having the reply (bj.js queues more in the
 * script's own heap), at most {@link #MAX_TIMERS} pending {@code bj.sleep} timers. The script's
 * callbacks live in this run's maps, never in a reply's future or a timer's task, so when the run
 * ends, however its promises stand, clearing those maps leaves nothing of its context reachable
 * from the daemon (a finished run stays in {@code query-workflows} with only what that shows).
 */
final class WorkflowRun {
    private static final Logger LOG = LoggerFactory.getLogger(WorkflowRun.class);
    private static final int LOG_TAIL = 50;
    private static final int MAX_LOG_LINE = 4096;
    private static final int MAX_LOG_LINES = 10_000;
    /**
     * QMP calls a run may have in flight. Commands run one at a time on the daemon's main loop, so
     * more in flight would not be faster, only delay other clients' commands and hold more replies.
     */
    static final int MAX_QMP_IN_FLIGHT = 32;
    /** Pending bj.sleep timers a run may have: far more than orchestration needs, few enough to cost nothing. */
    static final int MAX_TIMERS = 1000;

    /** How a run stands, by QMP's names. */
    enum State {
        RUNNING, COMPLETED, FAILED, CANCELLED;

        String qmpName() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** Why a run was stopped from outside its script. */
    record Stop(State state, String errorClass, String desc) {
    }

    final String id;
    final String script;
    final Optional<String> schedule;
    final Instant started = Instant.now();
    private final WorkflowEngine engine;
    private String source;
    private JsonNode args;
    private final Instant deadline;
    private final long statementLimit;
    private final long cpuNanos;
    private final BlockingQueue<Runnable> tasks = new LinkedBlockingQueue<>();
    /** Guards {@link #ended} and the maps of what the script waits for. */
    private final Object lock = new Object();
    /** The script's callbacks of QMP calls in flight, by call number. */
    private final Map<Long, Value> replies = new HashMap<>();
    /** Pending bj.sleep timers and their callbacks, by call number. */
    private final Map<Long, ScheduledFuture<?>> timers = new HashMap<>();
    private final Map<Long, Value> wakeUps = new HashMap<>();
    private long calls;
    /** Set once the run's thread is done with the script: nothing is queued or kept for it after. */
    private boolean ended;
    /** Set (under {@link #jobs}' monitor) once the run has cancelled its jobs: one confirmed later is cancelled too. */
    private boolean jobsCancelled;
    private volatile boolean statementLimitHit;
    private int logLines;
    private final Deque<String> logTail = new ArrayDeque<>();
    private final List<String> jobs = new ArrayList<>();
    /** Jobs the run started through bj.qmp (job commands, transactions): shown with its jobs, never cancelled by it. */
    private final List<String> otherJobs = new ArrayList<>();
    private final Thread thread;
    private volatile Context context;
    private volatile Value eventCallback;
    private volatile Stop stop;
    private volatile boolean settled;
    private volatile boolean announced;
    private volatile State state = State.RUNNING;
    private volatile Instant finished;
    private volatile JsonNode result;
    private volatile String errorClass;
    private volatile String errorDesc;
    /** Allocation by the run's thread when the watchdog last confirmed the heap after a GC. */
    volatile long allocatedAtMark;

    WorkflowRun(WorkflowEngine engine, String id, String script, String source, JsonNode args,
                Optional<String> schedule, long timeoutSeconds, long statementLimit, long cpuSeconds) {
        this.engine = engine;
        this.id = id;
        this.script = script;
        this.source = source;
        this.args = args;
        this.schedule = schedule;
        this.deadline = started.plusSeconds(timeoutSeconds);
        this.statementLimit = statementLimit;
        this.cpuNanos = TimeUnit.SECONDS.toNanos(cpuSeconds);
        this.thread = Thread.ofPlatform().name("workflow-" + id).daemon().unstarted(this::main);
    }

    void start() {
        thread.start();
    }

    State state() {
        return state;
    }

    long threadId() {
        return thread.threadId();
    }

    Instant deadline() {
        return deadline;
    }

    long cpuNanos() {
        return cpuNanos;
    }

    /** Waits at most {@code nanos} for the run's thread to end. */
    void awaitEnd(long nanos) {
        try {
            thread.join(java.time.Duration.ofNanos(nanos));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Hands an event to the script (events are delivered in the order they were published). */
    void deliver(Event event) {
        if (eventCallback != null && !settled) {
            enqueue(() -> {
                Value callback = eventCallback;
                if (callback != null) {
                    String timestamp = event.timestamp().toString();
                    callback.execute(event.name(), event.data() == null ? "" : Json.MAPPER.writeValueAsString(event.data()), timestamp);
                }
            });
        }
    }

    /** Queues a task for the script's thread, unless the run has ended (then nobody would run or free it). */
    private void enqueue(Runnable task) {
        synchronized (lock) {
            if (!ended) {
                tasks.add(task);
            }
        }
    }

    /**
     * Lets go of everything that leads to the script's context: callbacks of calls in flight,
     * timers, queued tasks, the source. Replies that come later find no callback and are dropped.
     */
    private void release() {
        synchronized (lock) {
            ended = true;
            timers.values().forEach(f -> f.cancel(false)); // the timer's queue forgets them (remove-on-cancel)
            timers.clear();
            wakeUps.clear();
            replies.clear();
            tasks.clear();
        }
        eventCallback = null;
        context = null;
        source = null;
        args = null;
    }

    /** A QMP reply for call {@code call}: hands it to the script's callback, if the run still waits for it. */
    private void replied(long call, String job, List<String> others, ObjectNode reply) {
        if (!others.isEmpty() && !reply.has("error")) {
            synchronized (jobs) {
                otherJobs.addAll(others);
            }
        }
        if (job != null && !reply.has("error")) {
            boolean cancel;
            synchronized (jobs) {
                jobs.add(job);
                cancel = jobsCancelled;
            }
            if (cancel && !engine.closing()) { // the run failed while the command was on its way: its job goes too
                LOG.info("workflow {}: job {} started after the run ended; cancelling it", id, job);
                engine.execute("job-cancel", Json.object().put("id", job));
            }
        }
        enqueue(() -> {
            Value callback;
            synchronized (lock) {
                callback = replies.remove(call);
            }
            if (callback == null) {
                return;
            }
            if (reply.has("error")) {
                callback.execute(Json.MAPPER.writeValueAsString(reply.get("error")), null);
            } else {
                callback.execute(null, Json.MAPPER.writeValueAsString(reply.get("return")));
            }
        });
    }

    /** A bj.sleep timer went off: its callback runs on the script's thread. */
    private void wokeUp(long call) {
        enqueue(() -> {
            Value callback;
            synchronized (lock) {
                timers.remove(call);
                callback = wakeUps.remove(call);
            }
            if (callback != null) {
                callback.execute();
            }
        });
    }

    /**
     * Stops the run from another thread: a script waiting for something wakes, a script that is
     * computing is cancelled where it stands. The first stop wins.
     */
    void stop(Stop why) {
        synchronized (this) {
            if (stop != null || settled) {
                return;
            }
            stop = why;
        }
        thread.interrupt();
        Context c = context;
        if (c != null) {
            Thread.ofPlatform().daemon().name("workflow-" + id + "-stop").start(() -> {
                try {
                    c.close(true); // cancels code that is executing; waits for it to unwind
                } catch (RuntimeException e) {
                    LOG.debug("closing workflow {}'s context", id, e);
                }
            });
        }
    }

    private void main() {
        try {
            execute();
        } catch (Throwable t) { // an Error in host code must still end the run
            if (stop == null && !settled) {
                LOG.warn("workflow {} failed in the host", id, t);
                settle(State.FAILED, null, "GenericError", "workflow failed in the host: " + t);
            }
        } finally {
            release(); // whatever the script's promises wait for, the daemon keeps nothing of it
            Thread.interrupted(); // the stop's wake-up call has been heard; cancelling jobs must not see it
            Stop why = stop;
            if (!settled && why != null) {
                cancelJobs();
                settle(why.state(), null, why.errorClass(), why.desc());
            } else if (!settled) {
                settle(State.FAILED, null, "GenericError", "workflow ended without a result");
            }
        }
    }

    private void execute() {
        try (Context c = Context.newBuilder("js")
                .engine(engine.polyglot())
                .sandbox(SandboxPolicy.CONSTRAINED)
                .out(new LineOutput(this::log))
                .err(new LineOutput(this::log))
                .option("js.esm-eval-returns-exports", "true")
                .resourceLimits(ResourceLimits.newBuilder().statementLimit(statementLimit, null)
                        .onLimit(e -> statementLimitHit = true).build())
                .build()) {
            context = c;
            if (stop != null) {
                return;
            }
            Value run = c.eval(Source.newBuilder("js", WorkflowEngine.prelude(), "bj.js").buildLiteral()).execute(new Bridge());
            Value module = c.eval(Source.newBuilder("js", source, script)
                    .mimeType("application/javascript+module").buildLiteral());
            run.execute(module.getMember("default"), Json.MAPPER.writeValueAsString(args));
            while (!settled && stop == null) {
                Runnable task = tasks.poll(1, TimeUnit.SECONDS);
                if (task != null && stop == null) {
                    task.run();
                }
            }
        } catch (InterruptedException e) {
            // stopped while waiting: stop says why
        } catch (PolyglotException e) {
            failFromScript(e);
        }
    }

    private void failFromScript(PolyglotException e) {
        if (stop != null) {
            return; // stopped on purpose: stop says why
        }
        String why;
        if (statementLimitHit) {
            why = "the workflow exceeded its statement budget of " + statementLimit + " statements and was stopped";
        } else if (e.isResourceExhausted()) {
            why = "the workflow ran out of resources (" + e.getMessage() + ") and was stopped";
        } else if (e.isCancelled()) {
            why = "the workflow was cancelled";
        } else {
            cancelJobs();
            settle(State.FAILED, null, "GenericError", e.isSyntaxError() ? syntaxError(e) : e.getMessage());
            return;
        }
        stop = new Stop(State.FAILED, "GenericError", why);
    }

    /**
     * A syntax error's file, line, column and the parser's complaint, without the script's text:
     * GraalJS quotes the source line and the token it met ({@code but found SECRET}), and the file
     * may not be what its name says.
     */
    private String syntaxError(PolyglotException e) {
        String first = String.valueOf(e.getMessage()).lines().findFirst().orElse("");
        String prefix = "SyntaxError: " + script + ":";
        if (!first.startsWith(prefix) || first.indexOf(' ', prefix.length()) < 0) {
            return "SyntaxError: " + script + " does not parse";
        }
        int space = first.indexOf(' ', prefix.length());
        String problem = first.substring(space + 1)
                .replaceAll(" but found .*$", "")           // the token met is the file's text
                .replaceAll("\\s*\"[^\"]*\"", "");             // so is a quoted name
        return first.substring(0, space) + " " + problem;
    }

    /** Cancels the jobs this run started that still exist; it does not wait for them to end. */
    private void cancelJobs() {
        if (engine.closing()) {
            return; // the daemon is stopping: it cancels every job itself, and its main loop is busy doing so
        }
        List<String> ids;
        synchronized (jobs) {
            jobsCancelled = true;
            ids = List.copyOf(jobs);
        }
        for (String job : ids) {
            try {
                ObjectNode reply = engine.execute("job-cancel", Json.object().put("id", job)).get(10, TimeUnit.SECONDS);
                if (!reply.has("error")) {
                    log("cancelled job " + job);
                }
            } catch (Exception e) {
                LOG.warn("workflow {}: cannot cancel job {}: {}", id, job, e.toString());
            }
        }
    }

    private void settle(State how, JsonNode value, String errClass, String desc) {
        synchronized (this) {
            if (settled) {
                return;
            }
            settled = true;
        }
        result = value;
        errorClass = errClass;
        errorDesc = desc;
        finished = Instant.now();
        state = how;
        engine.finished(this);
        announced = true;
    }

    /** True once WORKFLOW_FINISHED is out: only then may a new run take this id. */
    boolean announced() {
        return announced;
    }

    void log(String line) {
        String message = line.length() > MAX_LOG_LINE ? line.substring(0, MAX_LOG_LINE) + "..." : line;
        synchronized (logTail) {
            if (++logLines > MAX_LOG_LINES) {
                if (logLines == MAX_LOG_LINES + 1) {
                    LOG.warn("workflow {} logged more than {} lines; the rest are dropped", id, MAX_LOG_LINES);
                }
                return;
            }
            if (logTail.size() == LOG_TAIL) {
                logTail.removeFirst();
            }
            logTail.addLast(message);
        }
        LOG.info("workflow {}: {}", id, message);
        engine.logged(this, message);
    }

    /** What {@code query-workflows} shows. */
    public WorkflowInfo info() {
        List<String> tail;
        synchronized (logTail) {
            tail = List.copyOf(logTail);
        }
        List<String> jobIds = new ArrayList<>();
        synchronized (jobs) {
            jobIds.addAll(jobs);
            otherJobs.stream().filter(j -> !jobs.contains(j)).forEach(jobIds::add);
        }
        return new WorkflowInfo(id, script, state.qmpName(), started.toString(),
                Optional.ofNullable(finished).map(Instant::toString), schedule, jobIds, tail,
                Optional.ofNullable(result), error());
    }

    Optional<WorkflowError> error() {
        return errorClass == null ? Optional.empty() : Optional.of(new WorkflowError(errorClass, errorDesc));
    }

    Optional<JsonNode> result() {
        return Optional.ofNullable(result);
    }

    /** The job ids a QMP command names: its {@code job-id}, or those of a transaction's actions. */
    private static List<String> jobIdsIn(String command, JsonNode arguments) {
        if (arguments == null || !arguments.isObject()) {
            return List.of();
        }
        List<String> ids = new ArrayList<>();
        if (command.equals("transaction")) {
            for (JsonNode action : arguments.path("actions")) {
                if (action.path("data").path("job-id").isString()) {
                    ids.add(action.path("data").path("job-id").asString());
                }
            }
        } else if (arguments.path("job-id").isString()) {
            ids.add(arguments.path("job-id").asString());
        }
        return ids;
    }

    /** The host side of {@code bj.js}: functions of JSON strings and callbacks, nothing else. */
    private final class Bridge implements ProxyObject {
        private final Map<String, ProxyExecutable> members = Map.of(
                // Returns null once the command is on its way, or why it is not (bj.js keeps within the bound).
                "qmp", a -> {
                    String command = a[0].asString();
                    String json = a[1].asString();
                    // bj.job names the job it starts: it is this run's once the daemon said yes
                    String job = a.length > 3 && a[3].isString() ? a[3].asString() : null;
                    JsonNode arguments = json.isEmpty() ? null : Json.MAPPER.readTree(json);
                    long call;
                    synchronized (lock) {
                        if (ended) {
                            return "the workflow has ended";
                        }
                        if (replies.size() >= MAX_QMP_IN_FLIGHT) {
                            return "the workflow has " + MAX_QMP_IN_FLIGHT + " QMP calls in flight, the most it may have";
                        }
                        call = ++calls;
                        replies.put(call, a[2]);
                    }
                    // The future's continuation holds the call's number, not the script's callback.
                    List<String> others = job == null ? jobIdsIn(command, arguments) : List.of();
                    engine.execute(command, arguments).thenAccept(reply -> replied(call, job, others, reply));
                    return null;
                },
                "maxInFlight", a -> MAX_QMP_IN_FLIGHT,
                "subscribe", a -> {
                    eventCallback = a[0];
                    return null;
                },
                "newJobId", a -> engine.newJobId(id),
                "log", a -> {
                    log(a[0].asString());
                    return null;
                },
                // Returns null once the timer is set, or why it is not.
                "sleep", a -> {
                    double requested = a[0].asDouble();
                    // NaN sleeps not at all; beyond the run's wall-clock budget, the run ends first anyway
                    long ms = Double.isNaN(requested) ? 0 : (long) Math.min(Math.max(0, requested),
                            Math.max(0, java.time.Duration.between(Instant.now(), deadline).toMillis() + 1000));
                    synchronized (lock) {
                        if (ended) {
                            return "the workflow has ended";
                        }
                        if (timers.size() >= MAX_TIMERS) {
                            return "bj.sleep: the workflow has " + MAX_TIMERS + " timers pending, the most it may have";
                        }
                        long call = ++calls;
                        wakeUps.put(call, a[1]);
                        timers.put(call, engine.timer().schedule(() -> wokeUp(call), ms, TimeUnit.MILLISECONDS));
                    }
                    return null;
                },
                "id", a -> id,
                "script", a -> script,
                "finish", a -> {
                    String json = a[0].asString();
                    settle(State.COMPLETED, json.isEmpty() ? null : Json.MAPPER.readTree(json), null, null);
                    return null;
                },
                "fail", a -> {
                    cancelJobs();
                    settle(State.FAILED, null, a[0].asString(), a[1].asString());
                    return null;
                });

        @Override
        public Object getMember(String key) {
            return members.get(key);
        }

        @Override
        public Object getMemberKeys() {
            return members.keySet().toArray(new String[0]);
        }

        @Override
        public boolean hasMember(String key) {
            return members.containsKey(key);
        }

        @Override
        public void putMember(String key, Value value) {
            throw new UnsupportedOperationException("the host bridge is read-only");
        }
    }

    /** Turns what a script prints ({@code console.log}, {@code print}) into log lines. */
    private static final class LineOutput extends OutputStream {
        private final java.util.function.Consumer<String> sink;
        private final ByteArrayOutputStream line = new ByteArrayOutputStream();

        LineOutput(java.util.function.Consumer<String> sink) {
            this.sink = sink;
        }

        @Override
        public synchronized void write(int b) {
            if (b == '\n') {
                sink.accept(line.toString(StandardCharsets.UTF_8));
                line.reset();
            } else if (line.size() < 8192) {
                line.write(b);
            }
        }
    }
}
