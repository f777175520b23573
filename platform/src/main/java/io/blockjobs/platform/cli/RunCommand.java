package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;
import sun.misc.Signal;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;
import tools.jackson.databind.node.StringNode;

/**
 * {@code blockjobs run}: starts a workflow ({@code workflow-run}) and follows it to its
 * {@code WORKFLOW_FINISHED}: its log lines ({@code WORKFLOW_LOG}) as they come, and a progress bar
 * per job it started ({@code query-workflows}' {@code jobs}, progress from {@code query-jobs}).
 * Ctrl-C asks the daemon to cancel the workflow and waits for it to finish; a second Ctrl-C quits.
 */
@Command(name = "run", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Runs a workflow and follows it: its log lines, a progress bar per job it starts, then its result.",
                "Exit status 0 if it completed, 1 if it failed or was cancelled. Ctrl-C cancels it (and waits for it to end)."})
final class RunCommand implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(RunCommand.class);

    @ParentCommand
    BlockjobsClient client;

    @Parameters(index = "0", paramLabel = "SCRIPT",
            description = "a script of the distribution's scripts/ folder (compact-chain.js), or a path to one")
    String script;

    @Option(names = "--arg", paramLabel = "KEY=VALUE",
            description = "an argument of the workflow; VALUE is taken as JSON if it is (42, true, [1,2]), else as a string")
    List<String> arg = new ArrayList<>();

    @Option(names = "--args", paramLabel = "JSON", description = "the workflow's arguments as a JSON object (--arg adds to them)")
    String argsJson;

    @Option(names = "--id", paramLabel = "ID", description = "the workflow's id (the daemon picks one by default)")
    String id;

    @Option(names = "--timeout", paramLabel = "SECONDS", description = "how long the workflow may run")
    Integer timeout;

    private volatile boolean interrupted;

    @Override
    public Integer call() throws Exception {
        ObjectNode request = Json.object().put("script", scriptArgument());
        ObjectNode args = arguments(argsJson, arg);
        if (!args.isEmpty()) {
            request.set("args", args);
        }
        if (id != null) {
            request.put("id", id);
        }
        if (timeout != null) {
            request.put("timeout", timeout);
        }
        PrintStream out = System.out;
        try (QmpConnection qmp = client.connect()) {
            onInterrupt();
            String wid;
            try {
                wid = qmp.execute("workflow-run", request).path("id").asString();
            } catch (QmpConnection.QmpError e) {
                return client.qmpError(e);
            }
            Follow follow = client.json ? null : new Follow(out, Terminal.stdoutIsTerminal());
            // The daemon announces WORKFLOW_STARTED before it replies; events of an earlier run of
            // the same id that were still on their way are not this run's.
            boolean startSeen = false;
            boolean cancelSent = false;
            long nextPoll = System.nanoTime();
            while (true) {
                if (interrupted && !cancelSent) {
                    cancelSent = true;
                    say(follow, "blockjobs: cancelling workflow " + wid + " (Ctrl-C again to quit at once)");
                    try {
                        qmp.execute("workflow-cancel", Json.object().put("id", wid));
                    } catch (QmpConnection.QmpError e) {
                        say(follow, "blockjobs: workflow-cancel: " + e.desc()); // it has just finished, say
                    }
                }
                long wait = TimeUnit.NANOSECONDS.toMillis(nextPoll - System.nanoTime());
                JsonNode event = qmp.nextEvent(Math.max(0, Math.min(wait, JobsCommand.REFRESH_MILLIS)));
                if (event == null) {
                    if (wait <= 0) {
                        if (follow != null) {
                            try {
                                follow.poll(qmp, wid);
                            } catch (QmpConnection.ClosedError e) {
                                // events already received (WORKFLOW_FINISHED among them) still come first
                            }
                        }
                        nextPoll = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(JobsCommand.REFRESH_MILLIS);
                    }
                    continue;
                }
                String name = event.path("event").asString();
                JsonNode data = event.path("data");
                boolean ours = name.startsWith("WORKFLOW_") && data.path("id").asString().equals(wid);
                if (ours && name.equals("WORKFLOW_STARTED")) {
                    startSeen = true;
                }
                if (ours && !startSeen) {
                    continue;
                }
                if (client.json) {
                    if (ours) {
                        out.println(event);
                        out.flush();
                    }
                } else if (ours && name.equals("WORKFLOW_LOG")) {
                    follow.log(data.path("message").asString());
                } else if (!ours) {
                    follow.event(event);
                }
                if (ours && name.equals("WORKFLOW_FINISHED")) {
                    if (follow != null) {
                        try {
                            follow.poll(qmp, wid); // the jobs' last state, if the daemon is still there to say
                        } catch (IOException e) {
                            LOG.debug("last poll: {}", e.toString());
                        }
                    }
                    return finished(data, out);
                }
            }
        } catch (QmpConnection.ClosedError e) {
            throw new BlockjobsClient.ClientError("the daemon closed the connection before the workflow finished", 2);
        }
    }

    /** A message for the person at the terminal, above the live block so the next redraw keeps it. */
    private static void say(Follow follow, String message) {
        if (follow != null && follow.block != null) {
            follow.block.printAbove(message);
        } else {
            System.err.println(message);
        }
    }

    /** A path to an existing file is sent absolute (the daemon has its own working folder); a name as it is. */
    private String scriptArgument() {
        if (script.contains("/")) {
            Path p = Path.of(script);
            if (Files.exists(p)) {
                return p.toAbsolutePath().normalize().toString();
            }
        }
        return script;
    }

    /** {@code --args} then each {@code --arg k=v}, the value as JSON if it parses, else as a string. */
    static ObjectNode arguments(String json, List<String> pairs) throws BlockjobsClient.ClientError {
        ObjectNode args = json == null ? Json.object() : BlockjobsClient.parseObject(json, "--args");
        for (String pair : pairs) {
            int eq = pair.indexOf('=');
            if (eq <= 0) {
                throw new BlockjobsClient.ClientError("--arg takes KEY=VALUE, not '" + pair + "'", 2);
            }
            String value = pair.substring(eq + 1);
            JsonNode parsed;
            try {
                parsed = Json.MAPPER.readTree(value);
            } catch (JacksonException e) {
                parsed = null;
            }
            args.set(pair.substring(0, eq), parsed == null || parsed.isMissingNode() ? StringNode.valueOf(value) : parsed);
        }
        return args;
    }

    private int finished(JsonNode data, PrintStream out) {
        String state = data.path("state").asString();
        String wid = data.path("id").asString();
        switch (state) {
            case "completed" -> {
                JsonNode result = data.get("result");
                if (!client.json && result != null && !result.isNull()) {
                    out.println(BlockjobsClient.pretty(result));
                }
                return 0;
            }
            case "failed" -> {
                if (!client.json) {
                    JsonNode error = data.path("error");
                    System.err.println("blockjobs: workflow " + wid + " failed: " + error.path("class").asString("GenericError")
                            + ": " + error.path("desc").asString());
                }
                return 1;
            }
            default -> {
                if (!client.json) {
                    System.err.println("blockjobs: workflow " + wid + " " + state);
                }
                return 1;
            }
        }
    }

    /**
     * Ctrl-C: the first asks for the workflow to be cancelled (by the main loop, which owns the
     * screen, even if the workflow's id has not come back yet), the second quits at once.
     */
    private void onInterrupt() {
        try {
            Signal.handle(new Signal("INT"), signal -> {
                if (interrupted) {
                    System.exit(130);
                }
                interrupted = true;
            });
        } catch (IllegalArgumentException e) {
            LOG.debug("cannot handle SIGINT: {}", e.getMessage());
        }
    }

    /** What a person sees: log lines, and below them a progress bar per job of the workflow. */
    private static final class Follow {
        private final PrintStream out;
        final Terminal.LiveBlock block;
        private final JobsCommand.LineView lines;
        private final JobTable table = new JobTable();
        private final List<String> jobs = new ArrayList<>();

        Follow(PrintStream out, boolean terminal) {
            this.out = out;
            this.block = terminal ? new Terminal.LiveBlock(out) : null;
            this.lines = terminal ? null : new JobsCommand.LineView(out, "job ");
        }

        void log(String message) {
            if (block != null) {
                block.printAbove(message);
                show();
            } else {
                out.println(message);
                out.flush();
            }
        }

        void event(JsonNode event) {
            if (table.event(event)) {
                show();
            }
        }

        void poll(QmpConnection qmp, String wid) throws Exception {
            for (JsonNode w : qmp.execute("query-workflows", null)) {
                if (w.path("id").asString().equals(wid)) {
                    for (JsonNode j : w.path("jobs")) {
                        if (!jobs.contains(j.asString())) {
                            jobs.add(j.asString());
                        }
                    }
                }
            }
            table.update(qmp.execute("query-jobs", null), System.nanoTime());
            show();
        }

        private void show() {
            List<JobTable.Row> rows = jobs.stream().map(table::row).filter(r -> r != null).toList();
            if (block != null) {
                block.show(rows.isEmpty() ? List.of() : JobTable.table(rows, Terminal.columns() - 1));
            } else {
                lines.show(rows);
            }
        }
    }
}
