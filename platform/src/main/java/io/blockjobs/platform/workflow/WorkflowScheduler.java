package io.blockjobs.platform.workflow;

import com.cronutils.model.Cron;
import com.cronutils.model.CronType;
import com.cronutils.model.definition.CronDefinitionBuilder;
import com.cronutils.model.time.ExecutionTime;
import com.cronutils.parser.CronParser;
import io.blockjobs.sdk.error.CommandException;
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

/**
 * Runs workflows unattended on cron schedules: five fields as in crontab ({@code 0 2 * * *}),
 * six with seconds first ({@code *&#47;10 * * * * *}), or {@code @hourly}, {@code @daily},
 * {@code @weekly}, {@code @monthly}, {@code @yearly}. Times are the daemon's local time. A
 * schedule whose previous run is still going skips that turn, as a backup policy must not
 * overlap itself.
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

    /** A registered schedule, as {@code query-workflow-schedules} shows it. */
    public record ScheduleInfo(String name, String script, String schedule, Optional<String> nextRun,
                               Optional<String> lastRun, long runs) {
    }

    private final class Entry {
        final String name;
        final String schedule;
        final ExecutionTime times;
        final WorkflowEngine.Request request;
        final AtomicLong runs = new AtomicLong();
        volatile ZonedDateTime next;
        volatile String lastRun;
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

    public WorkflowScheduler(WorkflowEngine engine, ScheduledExecutorService timer) {
        this.engine = engine;
        this.timer = timer;
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

    /** Registers (or replaces) a schedule; the script must exist now. */
    public synchronized ScheduleInfo add(String name, String schedule, WorkflowEngine.Request request) {
        if (name.isEmpty()) {
            throw new CommandException("Invalid schedule name ''");
        }
        ExecutionTime times = parse(schedule);
        engine.checkScript(request.script());
        remove(name, false);
        Entry e = new Entry(name, schedule, times, request);
        entries.put(name, e);
        e.arm(ZonedDateTime.now());
        return info(e);
    }

    /** Removes a schedule; a run it started goes on. */
    public synchronized void remove(String name, boolean mustExist) {
        Entry e = entries.remove(name);
        if (e == null) {
            if (mustExist) {
                throw new CommandException("Schedule '" + name + "' not found");
            }
            return;
        }
        if (e.future != null) {
            e.future.cancel(false);
        }
    }

    public synchronized List<ScheduleInfo> query() {
        return entries.values().stream().map(WorkflowScheduler::info).toList();
    }

    private static ScheduleInfo info(Entry e) {
        return new ScheduleInfo(e.name, e.request.script(), e.schedule,
                Optional.ofNullable(e.next).map(t -> t.toOffsetDateTime().toString()),
                Optional.ofNullable(e.lastRun), e.runs.get());
    }

    @Override
    public synchronized void close() {
        for (String name : List.copyOf(entries.keySet())) {
            remove(name, false);
        }
    }
}
