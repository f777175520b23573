package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;
import picocli.CommandLine.ScopeType;
import picocli.CommandLine.Spec;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * {@code blockjobs}: the client. Speaks QMP to a running {@code blockjobd} over its monitor
 * socket: one command ({@code qmp}), the event stream ({@code events}), a live view of the jobs
 * ({@code jobs}), a workflow followed to its end ({@code run}); and the built-in {@code demo}.
 * Only its output goes to stdout; messages go to stderr as {@code blockjobs: ...}.
 */
@Command(name = "blockjobs", mixinStandardHelpOptions = true, versionProvider = BlockjobsClient.VersionProvider.class,
        sortOptions = false,
        description = "The blockjobs client: QMP commands, events, jobs and workflows of a running blockjobd.",
        subcommands = {BlockjobsClient.QmpCall.class, BlockjobsClient.Events.class, JobsCommand.class, RunCommand.class,
                BackupsCommand.class, RestoreCommand.class,
                BlockjobsClient.DemoCommand.class},
        footer = {"", "The socket is the one blockjobd serves QMP on (--chardev socket,path=PATH,... --monitor).",
                "Exit status: 0 success; 1 a QMP error, or a job or workflow that failed or was cancelled;",
                "2 bad usage, bad JSON, or no connection to the daemon."})
public final class BlockjobsClient implements Callable<Integer> {

    @Option(names = "--socket", paramLabel = "PATH", scope = ScopeType.INHERIT, defaultValue = "${env:BLOCKJOBS_SOCKET}",
            description = "blockjobd's QMP socket (default: $BLOCKJOBS_SOCKET)")
    Path socket;

    @Option(names = "--json", scope = ScopeType.INHERIT, description = "machine-readable output: JSON, one value per line")
    boolean json;

    @Spec
    CommandLine.Model.CommandSpec spec;

    /** A failure the client explains in one line, with its exit status. */
    static final class ClientError extends Exception {
        final int exit;

        ClientError(String message, int exit) {
            super(message);
            this.exit = exit;
        }
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    static CommandLine commandLine() {
        return new CommandLine(new BlockjobsClient()).setExecutionExceptionHandler((e, cl, parsed) -> {
            if (e instanceof ClientError c) {
                cl.getErr().println("blockjobs: " + c.getMessage());
                return c.exit;
            }
            if (e instanceof IOException) {
                cl.getErr().println("blockjobs: " + (e.getMessage() == null ? e.toString() : e.getMessage()));
                return 2;
            }
            throw e;
        });
    }

    @Override
    public Integer call() {
        spec.commandLine().usage(System.out);
        return 0;
    }

    /** Connects to the daemon's monitor. */
    QmpConnection connect() throws ClientError {
        if (socket == null) {
            throw new ClientError("no QMP socket given: pass --socket PATH (blockjobd's monitor socket) or set BLOCKJOBS_SOCKET", 2);
        }
        try {
            return new QmpConnection(socket);
        } catch (IOException e) {
            throw new ClientError("cannot connect to " + socket + ": " + (e.getMessage() == null ? e.toString() : e.getMessage()), 2);
        }
    }

    /** Reports a QMP error: {@code blockjobs: Class: desc} on stderr, or the error object on stdout with --json. */
    int qmpError(QmpConnection.QmpError e) {
        if (json) {
            System.out.println(e.error);
            System.out.flush();
        } else {
            System.err.println("blockjobs: " + e.errorClass() + ": " + e.desc());
        }
        return 1;
    }

    /** Prints a JSON value: pretty, or on one line with --json. */
    void print(JsonNode value) {
        System.out.println(json ? value.toString() : pretty(value));
        System.out.flush();
    }

    static String pretty(JsonNode value) {
        return Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(value);
    }

    /** Parses a JSON object given on the command line. */
    static ObjectNode parseObject(String text, String what) throws ClientError {
        JsonNode node;
        try {
            node = Json.MAPPER.readTree(text);
        } catch (JacksonException e) {
            throw new ClientError("bad JSON in " + what + ": " + e.getOriginalMessage(), 2);
        }
        if (node == null || !node.isObject()) {
            throw new ClientError(what + " must be a JSON object, like {\"device\": \"disk0\"}", 2);
        }
        return (ObjectNode) node;
    }

    /** {@code blockjobs qmp COMMAND [JSON]}. */
    @Command(name = "qmp", mixinStandardHelpOptions = true, description = {"Runs one QMP command and prints its return value (pretty JSON; one line with --json).",
            "A QMP error prints 'blockjobs: ErrorClass: desc' on stderr (the error object on stdout with --json), exit status 1."})
    static final class QmpCall implements Callable<Integer> {
        @ParentCommand
        BlockjobsClient client;

        @Parameters(index = "0", paramLabel = "COMMAND", description = "the command, as QEMU names it: query-jobs, block-stream, ...")
        String command;

        @Parameters(index = "1", arity = "0..1", paramLabel = "JSON", description = "its arguments, a JSON object")
        String arguments;

        @Override
        public Integer call() throws Exception {
            ObjectNode args = arguments == null ? null : parseObject(arguments, "the arguments");
            try (QmpConnection qmp = client.connect()) {
                client.print(qmp.execute(command, args));
                return 0;
            } catch (QmpConnection.QmpError e) {
                return client.qmpError(e);
            }
        }
    }

    /** {@code blockjobs events}. */
    @Command(name = "events", mixinStandardHelpOptions = true, sortOptions = false,
            description = {"Prints QMP events as they come, one per line: TIME EVENT DATA (the event's JSON with --json).",
                    "Ends after --count events or an --until event (exit status 0; 2 if the daemon closes the connection first),",
                    "or, without them, when the daemon closes the connection or the reader goes away (exit status 0)."})
    static final class Events implements Callable<Integer> {
        private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSSSSS")
                .withZone(ZoneId.systemDefault());

        @ParentCommand
        BlockjobsClient client;

        @Option(names = "--count", paramLabel = "N", description = "stop after N events")
        Integer count;

        @Option(names = "--until", paramLabel = "EVENT", description = "stop after the first event of this name (JOB_STATUS_CHANGE, ...)")
        String until;

        @Override
        public Integer call() throws Exception {
            PrintStream out = System.out;
            try (QmpConnection qmp = client.connect()) {
                for (int n = 0; count == null || n < count; n++) {
                    JsonNode event;
                    try {
                        event = qmp.nextEvent();
                    } catch (QmpConnection.ClosedError e) {
                        if (until == null && count == null) {
                            return 0; // following until the daemon goes is what was asked
                        }
                        throw new ClientError("the daemon closed the connection before "
                                + (until != null ? until : count + " events"), 2);
                    }
                    out.println(client.json ? event.toString() : human(event));
                    out.flush();
                    if (out.checkError()) {
                        return 0; // the reader went away (| head): nothing more to do
                    }
                    if (event.path("event").asString().equals(until)) {
                        break;
                    }
                }
            }
            return 0;
        }

        static String human(JsonNode event) {
            JsonNode ts = event.path("timestamp");
            Instant when = Instant.ofEpochSecond(ts.path("seconds").asLong(), ts.path("microseconds").asLong() * 1000);
            JsonNode data = event.get("data");
            return TIME.format(when) + " " + event.path("event").asString() + " " + (data == null ? "{}" : data.toString());
        }
    }

    /** {@code blockjobs demo [DIR]}: needs no daemon, it starts one. */
    @Command(name = "demo", mixinStandardHelpOptions = true,
            description = {"Runs the built-in demo (needs no running daemon).",
                    "Builds a qcow2 backing chain in DIR (a new temporary folder by default) and writes to it, runs a job "
                            + "on it in a blockjobd of its own, and shows where each range's data lives."})
    static final class DemoCommand implements Callable<Integer> {
        @Parameters(arity = "0..1", paramLabel = "DIR", description = "where to put the images")
        String dir;

        @Override
        public Integer call() throws Exception {
            return Demo.run(dir == null ? new String[0] : new String[] {dir});
        }
    }

    static final class VersionProvider implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"blockjobs " + Version.get()};
        }
    }
}
