package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ArrayNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * The jobs the client follows, from {@code query-jobs} (progress) and the job events (how and
 * when each ended), and their rendering: table lines for a terminal, one line per change for a
 * pipe, JSON for {@code --json}.
 *
 * <p>Replies and events may reach the client in either order, so once a job's status has come
 * in an event, only events change it: {@code query-jobs} gives a job's first status and its
 * progress. A job has ended at {@code JOB_STATUS_CHANGE} {@code concluded} or {@code null}, or
 * if {@code query-jobs} shows it concluded before any event about it. How it ended:
 * {@code BLOCK_JOB_CANCELLED}, else an error ({@code BLOCK_JOB_COMPLETED}'s or
 * {@code query-jobs}'), else cancelled if it went through {@code aborting}, else completed; a late
 * event or error changes that verdict. A job that leaves {@code query-jobs} (auto-dismiss) is
 * kept until its events arrive.
 */
final class JobTable {
    /** How long a job may be missing from {@code query-jobs} without its end event before it counts as ended. */
    private static final long GONE_NANOS = TimeUnit.SECONDS.toNanos(5);
    /** The window over which speed is measured. */
    private static final long SPEED_WINDOW_NANOS = TimeUnit.SECONDS.toNanos(3);
    private static final int BAR = 20;
    private static final int MIN_BAR = 10;

    enum Outcome {
        COMPLETED, FAILED, CANCELLED;

        String label() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /** One job as last seen. */
    static final class Row {
        final String id;
        String type = "";
        String status = "created";
        long current;
        long total;
        String error;
        boolean aborting;
        boolean cancelled;
        /** Whether an event has told this job's status (then only events change it). */
        boolean statusByEvent;
        Outcome outcome;
        long goneSince = -1;
        /** Bytes per second over the last few seconds; negative until measured. */
        double speed = -1;
        private final ArrayDeque<long[]> samples = new ArrayDeque<>(); // {nanos, current-progress}

        Row(String id) {
            this.id = id;
        }

        boolean ended() {
            return outcome != null;
        }

        /** The status shown: QMP's while the job runs, then how it ended. */
        String label() {
            return outcome != null ? outcome.label() : status;
        }

        double fraction() {
            return total > 0 ? (double) current / total : outcome == Outcome.COMPLETED ? 1 : 0;
        }

        int percent() {
            return (int) Math.floor(fraction() * 100);
        }

        boolean moving() {
            return !ended() && (status.equals("running") || status.equals("ready"));
        }

        /** Seconds left at the current speed, or -1 if unknown. */
        long eta() {
            return moving() && speed > 0 && total >= current ? (long) Math.ceil((total - current) / speed) : -1;
        }

        private void end() {
            outcome = cancelled ? Outcome.CANCELLED : error != null ? Outcome.FAILED
                    : aborting ? Outcome.CANCELLED : Outcome.COMPLETED;
            speed = 0;
        }

        private void progress(long current, long total, long nanos) {
            if (current < this.current || total != this.total) {
                samples.clear(); // the job's length changed: measure afresh
            }
            this.current = current;
            this.total = total;
            samples.addLast(new long[] {nanos, current});
            while (samples.size() > 2 && nanos - samples.peekFirst()[0] > SPEED_WINDOW_NANOS) {
                samples.removeFirst();
            }
            long[] first = samples.peekFirst();
            long dt = nanos - first[0];
            if (dt >= TimeUnit.MILLISECONDS.toNanos(100)) {
                speed = (current - first[1]) / (dt / 1e9);
            }
        }
    }

    private final Map<String, Row> rows = new LinkedHashMap<>();

    Collection<Row> rows() {
        return rows.values();
    }

    Row row(String id) {
        return rows.get(id);
    }

    boolean isEmpty() {
        return rows.isEmpty();
    }

    boolean allEnded() {
        return rows.values().stream().allMatch(Row::ended);
    }

    /**
     * True when no job will move without the operator: each has ended, or is ready (waiting for
     * job-complete), paused or standby (waiting for job-resume).
     */
    boolean allEndedOrWaiting() {
        return rows.values().stream().allMatch(r -> r.ended()
                || r.status.equals("ready") || r.status.equals("paused") || r.status.equals("standby"));
    }

    /** True if any job failed or was cancelled. */
    boolean anyFailed() {
        return rows.values().stream().anyMatch(r -> r.ended() && r.outcome != Outcome.COMPLETED);
    }

    /** Takes in a {@code query-jobs} reply received at {@code nanos} ({@link System#nanoTime}). */
    void update(JsonNode jobs, long nanos) {
        java.util.Set<String> listed = new java.util.HashSet<>();
        for (JsonNode job : jobs) {
            Row r = rows.computeIfAbsent(job.path("id").asString(), Row::new);
            listed.add(r.id);
            r.type = job.path("type").asString(r.type);
            if (job.hasNonNull("error")) {
                r.error = job.get("error").asString();
            }
            if (r.ended()) {
                r.end(); // an error may come only now (query-jobs has it before any event for non-block jobs)
                continue;
            }
            r.goneSince = -1;
            r.progress(job.path("current-progress").asLong(), job.path("total-progress").asLong(), nanos);
            String status = job.path("status").asString(r.status);
            if (!r.statusByEvent) {
                r.status = status;
                r.aborting |= status.equals("aborting");
                if (status.equals("concluded")) {
                    r.end();
                }
            }
        }
        for (Row r : rows.values()) {
            if (!r.ended() && !listed.contains(r.id)) {
                if (r.goneSince < 0) {
                    r.goneSince = nanos;
                } else if (nanos - r.goneSince > GONE_NANOS) {
                    r.end(); // its end event never came
                }
            }
        }
    }

    /** Takes in a QMP event; returns true if it concerned a job. */
    boolean event(JsonNode event) {
        String name = event.path("event").asString();
        JsonNode data = event.path("data");
        switch (name) {
            case "JOB_STATUS_CHANGE" -> {
                Row r = rows.computeIfAbsent(data.path("id").asString(), Row::new);
                String status = data.path("status").asString();
                r.statusByEvent = true;
                r.aborting |= status.equals("aborting");
                if (r.ended()) {
                    r.end(); // a late event: judge again
                } else if (status.equals("concluded") || status.equals("null")) {
                    r.end();
                } else {
                    r.status = status;
                }
                return true;
            }
            case "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED" -> {
                Row r = rows.computeIfAbsent(data.path("device").asString(), Row::new);
                r.type = data.path("type").asString(r.type);
                r.current = data.path("offset").asLong(r.current);
                r.total = data.path("len").asLong(r.total);
                if (data.hasNonNull("error")) {
                    r.error = data.get("error").asString();
                }
                r.cancelled = name.equals("BLOCK_JOB_CANCELLED");
                if (r.ended()) {
                    r.end(); // a late event: judge again
                }
                return true;
            }
            default -> {
                return false;
            }
        }
    }

    /** The table for an 80-column terminal. */
    static List<String> table(Collection<Row> rows) {
        return table(rows, 79);
    }

    /**
     * The table: a header, then a line per job (and one for its error), within {@code width}
     * columns: the ID column is as wide as the longest id (up to 24), and the bar gives way
     * first when space is short.
     */
    static List<String> table(Collection<Row> rows, int width) {
        int idWidth = Math.max(2, Math.min(24, rows.stream().mapToInt(r -> r.id.length()).max().orElse(2)));
        // ID TYPE(8) STATUS(9) [BAR] PCT(4) SPEED(12) ETA(8), one space between columns
        int fixed = idWidth + 1 + 8 + 1 + 9 + 1 + 2 + 1 + 4 + 1 + 12 + 1 + 8;
        int bar = Math.max(MIN_BAR, Math.min(BAR, width - fixed));
        String format = "%-" + idWidth + "s %-8s %-9s %s %4s %12s %8s";
        List<String> lines = new ArrayList<>();
        lines.add(String.format(Locale.ROOT, format, "ID", "TYPE", "STATUS", String.format("%-" + (bar + 2) + "s", "PROGRESS"),
                "", "SPEED", "ETA").stripTrailing());
        for (Row r : rows) {
            long eta = r.eta();
            lines.add(String.format(Locale.ROOT, format, Terminal.fit(r.id, idWidth), Terminal.fit(r.type, 8), r.label(),
                    Terminal.bar(r.fraction(), bar), r.percent() + "%",
                    r.moving() && r.speed >= 0 ? Terminal.bytes(r.speed) + "/s" : "", eta >= 0 ? Terminal.duration(eta) : "").stripTrailing());
            if (r.outcome == Outcome.FAILED) {
                lines.add(Terminal.fit("  error: " + r.error, width));
            }
        }
        return lines;
    }

    /** One line for a pipe: {@code ID TYPE STATUS PERCENT%}, and the error if it failed. */
    static String line(Row r) {
        String line = r.id + " " + (r.type.isEmpty() ? "-" : r.type) + " " + r.label() + " " + r.percent() + "%";
        return r.outcome == Outcome.FAILED ? line + " error: " + r.error : line;
    }

    /** The jobs as JSON: query-jobs' members, the measured speed (bytes/s) and, once ended, the outcome. */
    static ArrayNode json(Collection<Row> rows) {
        ArrayNode list = Json.MAPPER.createArrayNode();
        for (Row r : rows) {
            ObjectNode o = list.addObject().put("id", r.id).put("type", r.type).put("status", r.status)
                    .put("current-progress", r.current).put("total-progress", r.total);
            if (r.error != null) {
                o.put("error", r.error);
            }
            o.put("speed", Math.max(0, Math.round(r.speed)));
            if (r.ended()) {
                o.put("status", "concluded").put("outcome", r.outcome.label());
            }
        }
        return list;
    }
}
