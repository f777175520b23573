package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * The client, {@code bin/blockjobs} from the distribution, run as a process against the real
 * daemon: {@code qmp}, {@code events}, {@code jobs} (under a pseudo-terminal made by util-linux
 * {@code script}, and on a pipe) and {@code run}. Jobs run on a qcow2 chain made by qemu-img and
 * are slowed down by {@code speed} until the client has shown them; the test then lets them
 * finish, cancels them or makes them fail. It waits for the client's output, its exit and QMP
 * events, never for time.
 */
class ClientIT {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    DaemonProcess daemon;
    QmpClient qmp;
    final List<Client> clients = new ArrayList<>();

    @BeforeEach
    void start() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "32M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 32M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x22 0 1M");
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + base,
                "--blockdev", "driver=qcow2,node-name=top,backing=base,file.driver=file,file.filename=" + top));
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        for (Client c : clients) {
            c.process.destroyForcibly();
        }
        qmp.close();
        daemon.close();
    }

    // ---------------------------------------------------------------- qmp

    @Test
    void qmpPrintsTheReturnValue() throws Exception {
        JsonNode version = qmp.ok("query-version");
        Client.Result pretty = run("qmp", "query-version");
        assertThat(pretty.exit()).as(pretty.toString()).isZero();
        assertThat(Qemu.JSON.readTree(pretty.out())).isEqualTo(version);
        assertThat(pretty.out().strip()).as("pretty-printed").contains("\n  \"qemu\"");
        assertThat(pretty.err()).isEmpty();

        Client.Result compact = run("--json", "qmp", "query-version");
        assertThat(compact.exit()).isZero();
        assertThat(compact.out()).isEqualTo(version + "\n");

        // Arguments reach the daemon; the socket can come from the environment.
        Path extra = dir.resolve("extra.raw");
        Qemu.img("create", "-f", "raw", extra.toString(), "1M");
        Client.Result add = start(env -> env.put("BLOCKJOBS_SOCKET", daemon.qmpSocket.toString()), "qmp", "blockdev-add",
                "{\"driver\": \"file\", \"node-name\": \"extra\", \"filename\": \"" + extra + "\"}").finish();
        assertThat(add.exit()).as(add.toString()).isZero();
        assertThat(qmp.ok("query-named-block-nodes").findValuesAsString("node-name")).contains("extra");
    }

    @Test
    void qmpErrorsBadJsonAndNoSocket() throws Exception {
        Client.Result notFound = run("qmp", "no-such-command");
        assertThat(notFound.exit()).isEqualTo(1);
        assertThat(notFound.err()).isEqualTo("blockjobs: CommandNotFound: The command no-such-command has not been found\n");
        assertThat(notFound.out()).isEmpty();

        Client.Result asJson = run("--json", "qmp", "block-job-pause", "{\"device\": \"nothing\"}");
        assertThat(asJson.exit()).isEqualTo(1);
        JsonNode error = Qemu.JSON.readTree(asJson.out());
        assertThat(error.get("class").asString()).isEqualTo("DeviceNotActive");
        assertThat(error.get("desc").asString()).isEqualTo("Block job 'nothing' not found");

        Client.Result badJson = run("qmp", "query-jobs", "{\"flat\": tru");
        assertThat(badJson.exit()).isEqualTo(2);
        assertThat(badJson.err()).startsWith("blockjobs: bad JSON in the arguments: ");
        Client.Result notObject = run("qmp", "query-jobs", "[1]");
        assertThat(notObject.exit()).isEqualTo(2);
        assertThat(notObject.err()).contains("must be a JSON object");

        Client.Result noSocket = start(env -> env.remove("BLOCKJOBS_SOCKET"), "qmp", "query-version").finish();
        assertThat(noSocket.exit()).isEqualTo(2);
        assertThat(noSocket.err()).contains("no QMP socket given").contains("--socket");
        Client.Result deadSocket = start(env -> { }, "--socket", dir.resolve("nothing.sock").toString(), "qmp", "query-version")
                .finish();
        assertThat(deadSocket.exit()).isEqualTo(2);
        assertThat(deadSocket.err()).startsWith("blockjobs: cannot connect to " + dir.resolve("nothing.sock"));
    }

    // ---------------------------------------------------------------- events

    @Test
    void eventsPrintsEventsAsTheyComeAndStopsAtCount() throws Exception {
        Client events = start("events", "--count", "2");
        runJobsUntil(() -> events.exited());
        Client.Result r = events.finish();
        assertThat(r.exit()).as(r.toString()).isZero();
        assertThat(r.out().lines().toList()).hasSize(2).allMatch(l -> Pattern.matches("\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{6} "
                + "(JOB_STATUS_CHANGE \\{\"status\":\"[a-z]+\",\"id\":\"ev\\d+\"}|BLOCK_JOB_COMPLETED \\{.*\"device\":\"ev\\d+\".*})", l),
                "TIME EVENT DATA");
    }

    @Test
    void eventsAsJsonStopsAtUntilOrWhenTheDaemonCloses() throws Exception {
        Client until = start("--json", "events", "--until", "BLOCK_JOB_COMPLETED");
        runJobsUntil(() -> until.exited());
        Client.Result r = until.finish();
        assertThat(r.exit()).as(r.toString()).isZero();
        List<JsonNode> events = r.out().lines().map(Qemu.JSON::readTree).toList();
        assertThat(events).extracting(e -> e.get("event").asString()).endsWith("BLOCK_JOB_COMPLETED")
                .containsOnlyOnce("BLOCK_JOB_COMPLETED");
        assertThat(events.getLast().at("/data/device").asString()).startsWith("ev");
        assertThat(events.getLast().at("/timestamp/seconds").asLong()).isPositive();

        Client all = start("events");
        runJobsUntil(() -> !all.out().isEmpty());
        qmp.ok("quit");
        Client.Result closed = all.finish();
        assertThat(closed.exit()).as(closed.toString()).isZero();
        assertThat(closed.out()).contains(" SHUTDOWN ");
    }

    // ---------------------------------------------------------------- jobs

    @Test
    void jobsOnATerminalRedrawsATableWithProgressUntilTheJobCompletes() throws Exception {
        qmp.ok("block-stream", map("job-id", "stream0", "device", "top", "speed", MIB));
        Client jobs = startOnTerminal("jobs");
        jobs.awaitOutput(Pattern.compile("stream0 +stream +running .*B/s")); // shown, with a measured speed
        qmp.ok("block-job-set-speed", map("device", "stream0", "speed", 0));
        Client.Result r = jobs.finish();
        assertThat(r.exit()).as(r.toString()).isZero();
        assertThat(r.out()).contains("ID", "TYPE", "STATUS", "PROGRESS", "SPEED", "ETA")
                .containsPattern("stream0 +stream +running +\\[#*-+] +\\d+% +\\d+(\\.\\d)? (B|KiB|MiB)/s")
                .containsPattern("stream0 +stream +completed +\\[#{20}] 100%")
                .contains("\u001b[2A"); // the two lines (header, job) redrawn in place
    }

    @Test
    void jobsExitsOneWhenAJobIsCancelled() throws Exception {
        startNull("c", MIB);
        Client jobs = startOnTerminal("jobs");
        jobs.awaitOutput(Pattern.compile("c +null +running"));
        qmp.ok("job-cancel", map("id", "c"));
        Client.Result r = jobs.finish();
        assertThat(r.exit()).as(r.toString()).isEqualTo(1);
        assertThat(r.out()).containsPattern("c +null +cancelled +\\[#*-+]");
    }

    @Test
    void jobsExitsOneWhenAJobFails() throws Exception {
        qmp.ok("blockdev-add", map("driver", "blkdebug", "node-name", "faulty", "image", "base",
                "inject-error", List.of(map("event", "read_aio", "errno", 5, "sector", 16 * MIB / 512))));
        qmp.ok("block-null", map("job-id", "f", "device", "faulty", "speed", MIB, "on-error", "report"));
        Client jobs = startOnTerminal("jobs");
        jobs.awaitOutput(Pattern.compile("f +null +running"));
        qmp.ok("block-job-set-speed", map("device", "f", "speed", 0)); // on to the bad sector
        Client.Result r = jobs.finish();
        assertThat(r.exit()).as(r.toString()).isEqualTo(1);
        assertThat(r.out()).containsPattern("f +null +failed +\\[#{10}-{10}]  50%").contains("error: Input/output error");
    }

    @Test
    void jobsOnAPipePrintsALinePerStatusChange() throws Exception {
        startNull("p", MIB);
        Client jobs = start("jobs");
        jobs.awaitOutput(Pattern.compile("p null running \\d+%\n"));
        qmp.ok("block-job-set-speed", map("device", "p", "speed", 0));
        Client.Result r = jobs.finish();
        assertThat(r.exit()).as(r.toString()).isZero();
        assertThat(r.out()).doesNotContain("\u001b");
        List<String> lines = r.out().lines().toList();
        assertThat(lines).allMatch(l -> l.matches("p null [a-z]+ \\d+%"));
        List<String> statuses = lines.stream().map(l -> l.split(" ")[2]).toList();
        assertThat(statuses).startsWith("running").endsWith("completed").doesNotHaveDuplicates()
                .isSubsetOf("running", "waiting", "pending", "completed");
        assertThat(lines.getLast()).isEqualTo("p null completed 100%");
    }

    @Test
    void jobsWithNothingToShowOrOnlyConcludedJobs() throws Exception {
        Client.Result none = run("jobs");
        assertThat(none.exit()).isZero();
        assertThat(none.out()).isEqualTo("no jobs\n");

        // Jobs left concluded (no auto-dismiss): one done, one failed. --json: the list, once.
        qmp.ok("blockdev-add", map("driver", "blkdebug", "node-name", "faulty", "image", "base",
                "inject-error", List.of(map("event", "read_aio", "errno", 5))));
        qmp.ok("block-null", map("job-id", "ok", "device", "top", "auto-dismiss", false));
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.path("id").asString().equals("ok") && d.path("status").asString().equals("concluded"));
        Client.Result done = run("--json", "jobs");
        assertThat(done.exit()).as(done.toString()).isZero();
        JsonNode list = Qemu.JSON.readTree(done.out());
        assertThat(list.toString()).isEqualTo("[{\"id\":\"ok\",\"type\":\"null\",\"status\":\"concluded\",\"current-progress\":"
                + 32 * MIB + ",\"total-progress\":" + 32 * MIB + ",\"speed\":0,\"outcome\":\"completed\"}]");

        qmp.ok("block-null", map("job-id", "bad", "device", "faulty", "auto-dismiss", false));
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.path("id").asString().equals("bad") && d.path("status").asString().equals("concluded"));
        Client.Result failed = run("jobs");
        assertThat(failed.exit()).as(failed.toString()).isEqualTo(1);
        assertThat(failed.out()).isEqualTo("ok null completed 100%\nbad null failed 0% error: Input/output error\n");
    }

    // ---------------------------------------------------------------- run

    /** {@code run} on a pipe: the log, the job's end, the result, and exit statuses. */
    @Test
    void runFollowsAWorkflowToItsEnd() throws Exception {
        Path script = dir.resolve("client-it.js");
        Files.writeString(script, """
                export default async function (bj, args) {
                  bj.log('hello ' + args.name);
                  const job = await bj.job('block-null', {'job-id': 'wj', device: 'top', speed: args.speed});
                  await job.done;
                  bj.log('job done');
                  if (args.fail) throw new Error('asked to fail');
                  return {n: args.n + 1};
                }
                """);
        Client.Result ok = run("run", script.toString(), "--arg", "name=world", "--arg", "n=41", "--arg", "speed=" + 64 * MIB,
                "--id", "w1");
        assertThat(ok.exit()).as(ok.toString()).isZero();
        assertThat(ok.out()).contains("hello world\n", "job done\n", "job wj null completed 100%\n");
        assertThat(Qemu.JSON.readTree(ok.out().substring(ok.out().indexOf('{'))).get("n").asInt()).isEqualTo(42);

        Client.Result failed = run("run", script.toString(), "--args", "{\"name\": \"x\", \"n\": 1, \"fail\": true}");
        assertThat(failed.exit()).as(failed.toString()).isEqualTo(1);
        assertThat(failed.err()).contains("failed: ").contains("asked to fail");

        Client.Result json = run("--json", "run", script.toString(), "--arg", "name=j", "--arg", "n=1", "--id", "w3");
        assertThat(json.exit()).isZero();
        List<JsonNode> events = json.out().lines().map(Qemu.JSON::readTree).toList();
        assertThat(events).extracting(e -> e.get("event").asString()).contains("WORKFLOW_LOG").endsWith("WORKFLOW_FINISHED");
        assertThat(events.getLast().at("/data/state").asString()).isEqualTo("completed");

        Client.Result missing = run("run", "no-such-script.js");
        assertThat(missing.exit()).isEqualTo(1);
        assertThat(missing.err()).startsWith("blockjobs: ");
    }

    @Test
    void runOnATerminalShowsTheJobsProgressAndTheLog() throws Exception {
        Path script = dir.resolve("slow.js");
        Files.writeString(script, """
                export default async function (bj, args) {
                  const job = await bj.job('block-stream', { 'job-id': 'ws', device: 'top', speed: 1048576 });
                  bj.log('streaming as', job.id);
                  await job.done;
                  return 'streamed';
                }
                """);
        Client run = startOnTerminal("run", script.toString(), "--id", "tty");
        run.awaitOutput(Pattern.compile("ws +stream +running +\\[#*-+] +\\d+%")); // a bar for the workflow's job
        qmp.ok("block-job-set-speed", map("device", "ws", "speed", 0));
        Client.Result r = run.finish();
        assertThat(r.exit()).as(r.toString()).isZero();
        assertThat(r.out()).contains("streaming as ws").containsPattern("ws +stream +completed +\\[#{20}] 100%")
                .contains("streamed");

        // Cancelled from outside: the client says so and exits 1.
        Files.writeString(script, Files.readString(script).replace("'ws'", "'wc'").replace("block-stream", "block-null"));
        Client cancelled = startOnTerminal("run", script.toString(), "--id", "tty2");
        cancelled.awaitOutput(Pattern.compile("wc +null +running"));
        qmp.ok("workflow-cancel", map("id", "tty2"));
        Client.Result c = cancelled.finish();
        assertThat(c.exit()).as(c.toString()).isEqualTo(1);
        assertThat(c.out() + c.err()).contains("blockjobs: workflow tty2 cancelled");
    }

    @Test
    void runSaysSoWhenTheDaemonStopsTheWorkflow() throws Exception {
        Path script = dir.resolve("slow.js");
        Files.writeString(script, """
                export default async function (bj) {
                  await bj.job('block-null', { 'job-id': 'wq', device: 'top', speed: 1048576 }).done;
                }
                """);
        Client run = start("run", script.toString(), "--id", "q");
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.path("id").asString().equals("wq") && d.path("status").asString().equals("running"));
        qmp.ok("quit");
        Client.Result r = run.finish();
        assertThat(r.exit()).as(r.toString()).isEqualTo(1);
        assertThat(r.err()).contains("blockjobs: workflow q cancelled");
    }

    @Test
    void eventsUntilSaysSoWhenTheDaemonGoesFirst() throws Exception {
        Client until = start("events", "--until", "NEVER_SENT");
        runJobsUntil(() -> !until.out().isEmpty()); // it is connected
        qmp.ok("quit");
        Client.Result r = until.finish();
        assertThat(r.exit()).as(r.toString()).isEqualTo(2);
        assertThat(r.err()).contains("the daemon closed the connection before NEVER_SENT");
    }

    @Test
    void eventsEndsWhenItsReaderGoesAway() throws Exception {
        Process p = new ProcessBuilder(clientLauncher().toString(), "--socket", daemon.qmpSocket.toString(), "events")
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        var reader = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        var first = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
            try {
                return reader.readLine();
            } catch (IOException e) {
                return null;
            }
        });
        runJobsUntil(first::isDone);
        assertThat(first.join()).as("an event of the jobs, whichever came first after it connected")
                .containsPattern(" (JOB_STATUS_CHANGE|BLOCK_JOB_COMPLETED) \\{.*\"ev\\d+\"");
        p.getInputStream().close(); // as `blockjobs events | head -1` does
        runJobsUntil(() -> !p.isAlive());
        assertThat(p.waitFor()).isZero();
    }

    @Test
    void jobsReturnsWhenTheJobsWaitForTheOperator() throws Exception {
        qmp.ok("block-commit", map("job-id", "ac", "device", "top"));
        qmp.awaitEvent("BLOCK_JOB_READY", d -> d.path("device").asString().equals("ac"));
        Client.Result r = run("jobs");
        assertThat(r.exit()).as(r.toString()).isZero();
        assertThat(r.out()).contains("ac commit ready 100%");
        assertThat(r.err()).contains("job ac is ready and waits for you: finish it with job-complete");
        qmp.ok("job-cancel", map("id", "ac"));
        qmp.awaitEvent("BLOCK_JOB_CANCELLED", d -> d.path("device").asString().equals("ac"));
    }

    // ---------------------------------------------------------------- helpers

    private void startNull(String id, long speed) throws IOException {
        qmp.ok("block-null", map("job-id", id, "device", "top", "speed", speed));
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.path("id").asString().equals(id) && d.path("status").asString().equals("running"));
    }

    /**
     * Runs short jobs one after another (each awaited to its end) until {@code done}: events for a
     * client whose moment of connecting the test cannot know.
     */
    private void runJobsUntil(java.util.function.BooleanSupplier done) throws Exception {
        for (int n = 0; !done.getAsBoolean(); n++) {
            String id = "ev" + n;
            qmp.ok("block-null", map("job-id", id, "device", "top"));
            qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.path("id").asString().equals(id) && d.path("status").asString().equals("null"));
        }
    }

    static Path clientLauncher() {
        return DaemonProcess.blockjobd().resolveSibling("blockjobs");
    }

    /** Runs the client with {@code --socket} to the end. */
    private Client.Result run(String... args) throws IOException {
        return start(args).finish();
    }

    /** Starts the client with {@code --socket}. */
    private Client start(String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("--socket", daemon.qmpSocket.toString()));
        cmd.addAll(Arrays.asList(args));
        return start(env -> { }, cmd.toArray(String[]::new));
    }

    private Client start(Consumer<Map<String, String>> env, String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(clientLauncher().toString()));
        cmd.addAll(Arrays.asList(args));
        return launch(cmd, env);
    }

    /** Starts the client with {@code --socket} under a pseudo-terminal: {@code script -qefc CMD /dev/null}. */
    private Client startOnTerminal(String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(clientLauncher().toString(), "--socket", daemon.qmpSocket.toString()));
        cmd.addAll(Arrays.asList(args));
        String line = String.join(" ", cmd.stream().map(a -> "'" + a.replace("'", "'\\''") + "'").toList());
        return launch(List.of("script", "-qefc", line, "/dev/null"), env -> env.put("TERM", "xterm"));
    }

    private Client launch(List<String> cmd, Consumer<Map<String, String>> env) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        env.accept(pb.environment());
        Client c = new Client(cmd, pb.start());
        clients.add(c);
        return c;
    }

    /** A client process; its output is gathered as it comes, and can be waited for. */
    static final class Client {
        record Result(List<String> command, int exit, String out, String err) {
        }

        final List<String> command;
        final Process process;
        private final StringBuilder out = new StringBuilder();
        private final StringBuilder err = new StringBuilder();
        private final Thread outReader;
        private final Thread errReader;

        Client(List<String> command, Process process) {
            this.command = command;
            this.process = process;
            this.outReader = Thread.ofVirtual().start(() -> drain(process.getInputStream(), out));
            this.errReader = Thread.ofVirtual().start(() -> drain(process.getErrorStream(), err));
        }

        private void drain(InputStream in, StringBuilder into) {
            byte[] buffer = new byte[8192];
            try (in) {
                int n;
                while ((n = in.read(buffer)) > 0) {
                    synchronized (this) {
                        into.append(new String(buffer, 0, n, StandardCharsets.UTF_8).replace("\r\n", "\n"));
                        notifyAll();
                    }
                }
            } catch (IOException e) {
                // the process is gone
            }
            synchronized (this) {
                notifyAll();
            }
        }

        synchronized String out() {
            return out.toString();
        }

        boolean exited() {
            try {
                return process.waitFor(100, TimeUnit.MILLISECONDS); // between two rounds of events
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }

        /** Waits until the output so far matches {@code pattern} somewhere. */
        synchronized void awaitOutput(Pattern pattern) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!pattern.matcher(out).find()) {
                long left = deadline - System.nanoTime();
                if (left <= 0 || (!process.isAlive() && !outReader.isAlive())) {
                    throw new AssertionError("no output matching " + pattern + " from " + command + "\nstdout: " + out
                            + "\nstderr: " + err);
                }
                TimeUnit.NANOSECONDS.timedWait(this, Math.min(left, TimeUnit.SECONDS.toNanos(1)));
            }
        }

        /** Waits for the process to end (at most a minute). */
        Result finish() {
            try {
                if (!process.waitFor(60, TimeUnit.SECONDS)) {
                    process.destroyForcibly();
                    throw new AssertionError(command + " did not end within a minute; stdout so far: " + out());
                }
                outReader.join();
                errReader.join();
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
            synchronized (this) {
                return new Result(command, process.exitValue(), out.toString(), err.toString());
            }
        }
    }
}
