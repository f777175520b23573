package io.blockjobs.platform.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParentCommand;
import tools.jackson.databind.JsonNode;

/**
 * {@code blockjobs jobs}: follows every job until all have ended. Progress comes from
 * {@code query-jobs} a few times a second (a display refresh); endings and how they ended come
 * from the job events, so jobs that vanish on conclusion (auto-dismiss) are told right.
 */
@Command(name = "jobs", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Shows the daemon's jobs live (progress bar, percent, speed, ETA) until every job seen has ended",
                "or waits for the operator (ready for job-complete, or paused), as virsh blockjob --wait does.",
                "On a terminal the table is redrawn in place; otherwise a line is printed per status change; "
                        + "with --json, the job list as JSON per change.",
                "Exit status 0 if every job ended without error (or there were none), 1 if one failed or was cancelled."})
final class JobsCommand implements Callable<Integer> {
    static final long REFRESH_MILLIS = 200;

    @ParentCommand
    BlockjobsClient client;

    @Override
    public Integer call() throws Exception {
        PrintStream out = System.out;
        try (QmpConnection qmp = client.connect()) {
            JobTable table = new JobTable();
            table.update(qmp.execute("query-jobs", null), System.nanoTime());
            if (table.isEmpty()) {
                out.println(client.json ? "[]" : "no jobs");
                return 0;
            }
            View view = client.json ? new JsonView(out) : Terminal.stdoutIsTerminal() ? new TableView(out) : new LineView(out);
            view.show(table);
            long nextPoll = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(REFRESH_MILLIS);
            while (!table.allEndedOrWaiting()) {
                long wait = TimeUnit.NANOSECONDS.toMillis(nextPoll - System.nanoTime());
                JsonNode event = qmp.nextEvent(Math.max(0, wait)); // when the refresh is due, what has come first
                if (event != null) {
                    if (table.event(event)) {
                        view.show(table);
                    }
                } else if (wait <= 0) {
                    try {
                        table.update(qmp.execute("query-jobs", null), System.nanoTime());
                    } catch (QmpConnection.ClosedError e) {
                        continue; // the events that came before the end are still to be read
                    }
                    view.show(table);
                    nextPoll = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(REFRESH_MILLIS);
                }
            }
            try {
                // Jobs left concluded (no auto-dismiss) show their error in query-jobs; late events may still tell more.
                table.update(qmp.execute("query-jobs", null), System.nanoTime());
                for (JsonNode event; (event = qmp.nextEvent(0)) != null; ) {
                    table.event(event);
                }
            } catch (QmpConnection.ClosedError e) {
                // every job has ended: what we know will do
            }
            view.show(table);
            for (JobTable.Row r : table.rows()) {
                if (!r.ended()) {
                    System.err.println("blockjobs: job " + r.id + " is " + r.status + " and waits for you: "
                            + (r.status.equals("ready") ? "finish it with job-complete, or cancel it with job-cancel"
                                    : "resume it with job-resume, or cancel it with job-cancel"));
                }
            }
            return table.anyFailed() ? 1 : 0;
        } catch (QmpConnection.ClosedError e) {
            throw new BlockjobsClient.ClientError("the daemon closed the connection before every job ended", 2);
        }
    }

    /** How the table reaches stdout. */
    interface View {
        void show(JobTable table) throws IOException;
    }

    /** A terminal: the whole table, redrawn in place. */
    static final class TableView implements View {
        private final Terminal.LiveBlock block;

        TableView(PrintStream out) {
            this.block = new Terminal.LiveBlock(out);
        }

        @Override
        public void show(JobTable table) {
            block.show(JobTable.table(table.rows(), Terminal.columns() - 1));
        }
    }

    /** A pipe or file: a line each time a job's status changes. */
    static final class LineView implements View {
        private final PrintStream out;
        private final String prefix;
        private final Map<String, String> shown = new HashMap<>();

        LineView(PrintStream out) {
            this(out, "");
        }

        LineView(PrintStream out, String prefix) {
            this.out = out;
            this.prefix = prefix;
        }

        @Override
        public void show(JobTable table) {
            show(table.rows());
        }

        void show(Iterable<JobTable.Row> rows) {
            for (JobTable.Row r : rows) {
                if (!r.label().equals(shown.put(r.id, r.label()))) {
                    out.println(prefix + JobTable.line(r));
                }
            }
            out.flush();
        }
    }

    /** {@code --json}: the job list as one JSON line whenever it changes. */
    static final class JsonView implements View {
        private final PrintStream out;
        private String last;

        JsonView(PrintStream out) {
            this.out = out;
        }

        @Override
        public void show(JobTable table) {
            String key = table.rows().stream().map(r -> r.id + ' ' + r.label() + ' ' + r.current + '/' + r.total + ' ' + r.error)
                    .toList().toString(); // the speed alone is no change
            if (!key.equals(last)) {
                last = key;
                out.println(JobTable.json(table.rows()));
                out.flush();
            }
        }
    }
}
