package io.blockjobs.platform.workflow;

import com.cronutils.model.Cron;
import com.cronutils.model.CronType;
import com.cronutils.model.definition.CronDefinitionBuilder;
import com.cronutils.model.time.ExecutionTime;
import com.cronutils.parser.CronParser;
import io.blockjobs.platform.Json;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * Runs workflows unattended on cron schedules: five fields as in crontab ({@code 0 2 * * *}),
 * six with seconds first ({@code *&#47;10 * * * * *}), or {@code @hourly}, {@code @daily},
 * {@code @weekly}, {@code @monthly}, {@code @yearly}. Times are the daemon's local time. A
 * schedule whose previous run is still going skips that turn, as a backup policy must not
 * overlap itself.
 *
 * <p>With a schedule file ({@code blockjobd --schedule-file FILE}) the schedules made over QMP are
 * kept there, with each one's last run and its result, and come back when the daemon restarts.
 */
public final class WorkflowScheduler implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(WorkflowScheduler.class);
    private static final CronParser FIVE_FIELDS = new CronParser(CronDefinitionBuilder.instanceDefinitionFor(CronType.UNIX));
    private static final CronParser SIX_FIELDS = new CronParser(CronDefinitionBuilder.instanceDefinitionFor(CronType.SPRING53));
    private static final Map<String, String> NICKNAMES = Map.of(
            "@hourly", "0 * * * *", "@daily", "0 0 * * *", "@midnight", "0 0 * * *",
            "@weekly", "0 0 * * 0", "@monthly", "0 0 1 * *", "@yearly", "0 0 1 1 *", "@annually", "0 0 1 1 *");

    private final WorkflowEngine engine;
    private final ScheduledExecutorService timer;
    private final Map<String, Entry> entries = new TreeMap<>();
    private Path file; // where schedules are kept across restarts, or null

    /**
     * A registered schedule, as {@code query-workflow-schedules} shows it: its next run, and its
     * last run (id, start time, and result: {@code running}, {@code completed}, {@code failed},
     * {@code cancelled}, or {@code interrupted} if the daemon stopped during it).
     */
    public record ScheduleInfo(String name, String script, String schedule, Optional<String> nextRun,
                               Optional<String> lastRun, Optional<String> lastStarted, Optional<String> lastResult,
                               Optional<String> lastError, long runs) {
    }

    private final class Entry {
        final String name;
        final String schedule;
        final ExecutionTime times;
        final WorkflowEngine.Request request;
        final AtomicLong runs = new AtomicLong();
        volatile ZonedDateTime next;
        volatile String lastRun;
        volatile String lastStarted;
        volatile String lastResult; // as kept in the schedule file, for a run the engine no longer knows
        volatile String lastError;
        ScheduledFuture<?> future;

        Entry(String name, String schedule, ExecutionTime times, WorkflowEngine.Request request) {
            this.name = name;
            this.schedule = schedule;
            this.times = times;
            this.request = request;
        }

        /** Arms the timer for the first time after {@code from}. */
        void arm(ZonedDateTime from) {
            next = nextAfter(times, from, ZoneId.systemDefault());
            if (next == null) {
                LOG.info("schedule {} has no further run", name);
                return;
            }
            long delay = Math.max(0, Duration.between(ZonedDateTime.now(), next).toMillis());
            future = timer.schedule(this::fire, delay, TimeUnit.MILLISECONDS);
        }

        void fire() {
            ZonedDateTime due = next;
            synchronized (WorkflowScheduler.this) {
                if (entries.get(name) != this) {
                    return; // unscheduled meanwhile
                }
                if (ZonedDateTime.now().isBefore(due)) { // the timer ran early (the clock was set back): not yet
                    long delay = Math.max(1, Duration.between(ZonedDateTime.now(), due).toMillis());
                    future = timer.schedule(this::fire, delay, TimeUnit.MILLISECONDS);
                    return;
                }
            }
            try {
                if (lastRun != null && engine.isRunning(lastRun)) {
                    LOG.warn("schedule {}: run {} is still going; skipping this turn", name, lastRun);
                } else {
                    String id = name + "-" + runs.incrementAndGet();
                    lastStarted = ZonedDateTime.now().toOffsetDateTime().toString();
                    lastResult = null;
                    lastError = null;
                    lastRun = engine.start(new WorkflowEngine.Request(request.script(), request.args(),
                            Optional.of(id), request.timeoutSeconds(), request.statementLimit(), request.cpuSeconds(),
                            Optional.of(name)));
                }
            } catch (Throwable e) { // a schedule must stay armed whatever one turn met
                LOG.warn("schedule {}: cannot start {}: {}", name, request.script(), e.toString());
            }
            synchronized (WorkflowScheduler.this) {
                if (entries.get(name) == this) {
                    ZonedDateTime now = ZonedDateTime.now();
                    arm(now.isAfter(due) ? now : due);
                }
                save();
            }
        }
    }

    /**
     * The first time after {@code from} that the schedule names, read on the local wall clock as
     * cron does: a time that a daylight-saving change skips runs right after the change (02:30
     * becomes 03:30), and a time that it repeats runs once.
     */
    static ZonedDateTime nextAfter(ExecutionTime times, ZonedDateTime from, ZoneId zone) {
        ZonedDateTime wall = from.withZoneSameInstant(zone).toLocalDateTime().atZone(ZoneOffset.UTC);
        return times.nextExecution(wall)
                .map(t -> ZonedDateTime.ofLocal(t.toLocalDateTime(), zone, null))
                .orElse(null);
    }

    public WorkflowScheduler(WorkflowEngine engine, ScheduledExecutorService timer,
                             io.blockjobs.platform.event.EventBus events) {
        this.engine = engine;
        this.timer = timer;
        // A scheduled run's end goes into the schedule file at once (off the publishing thread).
        events.subscribe(e -> {
            if (e.event() instanceof io.blockjobs.platform.event.QmpEvent.WorkflowFinished f) {
                timer.execute(() -> finished(f.id()));
            }
        });
    }

    private synchronized void finished(String run) {
        if (file != null && entries.values().stream().anyMatch(e -> run.equals(e.lastRun))) {
            save();
        }
    }

    /** Parses a schedule; throws with the parser's complaint. */
    static ExecutionTime parse(String schedule) {
        String s = NICKNAMES.getOrDefault(schedule.trim(), schedule.trim());
        int fields = s.isEmpty() ? 0 : s.split("\\s+").length;
        try {
            Cron cron = (fields == 6 ? SIX_FIELDS : FIVE_FIELDS).parse(s).validate();
            return ExecutionTime.forCron(cron);
        } catch (IllegalArgumentException e) {
            throw new CommandException("Invalid schedule '" + schedule + "': " + e.getMessage()
                    + " (use five crontab fields such as '0 2 * * *', six with seconds first, or @daily)");
        }
    }

    /** Registers (or changes) a schedule; the script must exist now. A changed schedule keeps its history. */
    public synchronized ScheduleInfo add(String name, String schedule, WorkflowEngine.Request request) {
        Entry e = register(name, schedule, request);
        save();
        return info(e);
    }

    private Entry register(String name, String schedule, WorkflowEngine.Request request) {
        if (name.isEmpty()) {
            throw new CommandException("Invalid schedule name ''");
        }
        ExecutionTime times = parse(schedule);
        engine.checkScript(request.script());
        Entry old = entries.get(name);
        cancel(name);
        Entry e = new Entry(name, schedule, times, request);
        if (old != null) { // a schedule changed keeps its history (and its run numbers go on)
            e.runs.set(old.runs.get());
            ScheduleInfo i = info(old);
            e.lastRun = old.lastRun;
            e.lastStarted = old.lastStarted;
            e.lastResult = i.lastResult().orElse(null);
            e.lastError = i.lastError().orElse(null);
        }
        entries.put(name, e);
        e.arm(ZonedDateTime.now());
        return e;
    }

    /** Removes a schedule; a run it started goes on. */
    public synchronized void remove(String name, boolean mustExist) {
        if (!cancel(name) && mustExist) {
            throw new CommandException("Schedule '" + name + "' not found");
        }
        save();
    }

    private boolean cancel(String name) {
        Entry e = entries.remove(name);
        if (e == null) {
            return false;
        }
        if (e.future != null) {
            e.future.cancel(false);
        }
        return true;
    }

    public synchronized List<ScheduleInfo> query() {
        return entries.values().stream().map(this::info).toList();
    }

    private ScheduleInfo info(Entry e) {
        String result = e.lastResult;
        String error = e.lastError;
        if (e.lastRun != null) {
            for (WorkflowInfo w : engine.query()) {
                if (w.id().equals(e.lastRun)) {
                    result = w.state();
                    error = w.error().map(WorkflowError::desc).orElse(null);
                }
            }
        }
        return new ScheduleInfo(e.name, e.request.script(), e.schedule,
                Optional.ofNullable(e.next).map(t -> t.toOffsetDateTime().toString()),
                Optional.ofNullable(e.lastRun), Optional.ofNullable(e.lastStarted), Optional.ofNullable(result),
                Optional.ofNullable(error), e.runs.get());
    }

    /**
     * Keeps the schedules in {@code file} from now on, after registering those it already holds
     * (a schedule that no longer parses, or whose script is gone, is logged and dropped).
     */
    public synchronized void keepIn(Path file) throws IOException {
        this.file = file;
        if (Files.exists(file)) {
            JsonNode saved;
            try {
                saved = Json.MAPPER.readTree(Files.readString(file, StandardCharsets.UTF_8));
            } catch (RuntimeException e) {
                throw new IOException(file + " is not a schedule file: " + e.getMessage());
            }
            for (JsonNode s : saved.path("schedules")) {
                String name = s.path("name").asString();
                try {
                    WorkflowEngine.Request r = new WorkflowEngine.Request(s.path("script").asString(),
                            s.hasNonNull("args") ? s.get("args") : null, Optional.empty(), optLong(s, "timeout"),
                            optLong(s, "max-statements"), optLong(s, "cpu-time"), Optional.of(name));
                    Entry e = register(name, s.path("schedule").asString(), r);
                    e.runs.set(s.path("runs").asLong());
                    e.lastRun = s.hasNonNull("last-run") ? s.get("last-run").asString() : null;
                    e.lastStarted = s.hasNonNull("last-started") ? s.get("last-started").asString() : null;
                    e.lastResult = s.hasNonNull("last-result") ? s.get("last-result").asString() : null;
                    e.lastError = s.hasNonNull("last-error") ? s.get("last-error").asString() : null;
                    if ("running".equals(e.lastResult)) {
                        e.lastResult = "interrupted"; // the daemon stopped while it ran
                        e.lastError = "the daemon stopped during the run";
                    }
                } catch (CommandException e) {
                    LOG.warn("schedule {} from {} dropped: {}", name, file, e.getMessage());
                }
            }
        }
        save();
    }

    private static Optional<Long> optLong(JsonNode n, String key) {
        return n.hasNonNull(key) ? Optional.of(n.get(key).asLong()) : Optional.empty();
    }

    /** Writes the schedules to the schedule file (beside it, then renamed over it: never half written). */
    private void save() {
        if (file == null) {
            return;
        }
        ObjectNode root = Json.object();
        ArrayNode list = root.putArray("schedules");
        for (Entry e : entries.values()) {
            ScheduleInfo i = info(e);
            ObjectNode s = list.addObject().put("name", e.name).put("script", e.request.script())
                    .put("schedule", e.schedule).put("runs", e.runs.get());
            if (e.request.args() != null) {
                s.set("args", e.request.args());
            }
            e.request.timeoutSeconds().ifPresent(v -> s.put("timeout", v));
            e.request.statementLimit().ifPresent(v -> s.put("max-statements", v));
            e.request.cpuSeconds().ifPresent(v -> s.put("cpu-time", v));
            i.lastRun().ifPresent(v -> s.put("last-run", v));
            i.lastStarted().ifPresent(v -> s.put("last-started", v));
            i.lastResult().ifPresent(v -> s.put("last-result", v));
            i.lastError().ifPresent(v -> s.put("last-error", v));
        }
        Path tmp = file.resolveSibling("." + file.getFileName() + ".tmp");
        try {
            Files.writeString(tmp, Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(root),
                    StandardCharsets.UTF_8);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            LOG.warn("cannot write the schedule file {}: {}", file, e.getMessage());
        }
    }

    /** Stops every timer; the schedule file keeps the schedules (with their last results) for the next start. */
    @Override
    public synchronized void close() {
        save();
        for (String name : List.copyOf(entries.keySet())) {
            cancel(name);
        }
    }
}
