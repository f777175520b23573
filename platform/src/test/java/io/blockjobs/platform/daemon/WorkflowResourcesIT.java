package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import tools.jackson.databind.JsonNode;

/**
 * What a workflow may hold of the daemon, measured on the real daemon (512 MiB heap) with
 * {@code jcmd}: QMP calls in flight and {@code bj.sleep} timers are bounded per run, and
 * everything of a run is freed when it ends; a script that is not a script, or does not parse,
 * is refused without its contents reaching a monitor or the log.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class WorkflowResourcesIT {
    private static final long MIB = 1 << 20;
    /** What a run may leave on the heap after it ended: nothing of its own; this is GC noise. */
    private static final long HEAP_SLACK = 48 * MIB;
    /** A victim's command on the daemon's main loop, on a shared machine: generous. */
    private static final Duration VICTIM_BOUND = Duration.ofSeconds(5);
    /** Put in the daemon's environment; it must never come back in an error or the log. */
    private static final String SECRET = "bj-secret-" + UUID.randomUUID();

    Path dir;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeAll
    void start() throws Exception {
        dir = Files.createTempDirectory("bj-wf-resources");
        daemon = DaemonProcess.startWithMonitor(dir, List.of("--blockdev", "driver=null-co,node-name=null0,size=1G"),
                Map.of("BLOCKJOBS_JAVA_OPTS", "-Xmx512m", "BJ_TEST_SECRET", SECRET));
        qmp = QmpClient.connect(daemon.qmpSocket);
        // The JavaScript engine starts with the first run: part of the baseline, not of what a run leaves.
        assertThat(run("export default async function (bj) { return (await bj.qmp('query-version')).qemu.major; }")
                .get("state").asString()).isEqualTo("completed");
    }

    @AfterAll
    void stop() throws Exception {
        qmp.close();
        daemon.close();
        try (var files = Files.walk(dir)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    @AfterEach
    void daemonStillServes() throws Exception {
        assertThat(daemon.isAlive()).isTrue();
        assertThat(qmp.ok("query-version").at("/package").asString()).startsWith("blockjobs");
    }

    private int counter;

    private Path script(String source) throws IOException {
        Path script = dir.resolve("r" + (++counter) + ".js");
        Files.writeString(script, source);
        return script;
    }

    /** Runs {@code source} as a workflow; returns WORKFLOW_FINISHED's data. */
    private JsonNode run(String source) throws Exception {
        String id = qmp.ok("workflow-run", map("script", script(source).toString())).get("id").asString();
        return qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id), Duration.ofMinutes(3)).get("data");
    }

    // ---- measuring the daemon ------------------------------------------------------------------

    private static Path jcmd() {
        Path java = Path.of(ProcessHandle.current().info().command().orElse("/usr/lib/jvm/temurin-25-jdk-amd64/bin/java"));
        return java.resolveSibling("jcmd");
    }

    private String jcmd(String... command) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of(jcmd().toString(), Long.toString(daemon.pid())));
        cmd.addAll(List.of(command));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        return out;
    }

    /** The daemon's heap in use after a full GC, in bytes. */
    private long heapAfterGc() throws Exception {
        jcmd("GC.run");
        String info = jcmd("GC.heap_info");
        Matcher m = Pattern.compile("used (\\d+)K").matcher(info);
        assertThat(m.find()).as(info).isTrue();
        return Long.parseLong(m.group(1)) * 1024;
    }

    /** Live instances per class name (the histogram runs a full GC first). */
    private Map<String, Long> liveInstances() throws Exception {
        Map<String, Long> counts = new HashMap<>();
        for (String line : jcmd("GC.class_histogram").lines().toList()) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 4 && f[0].endsWith(":")) {
                counts.merge(f[3], Long.parseLong(f[1]), Long::sum);
            }
        }
        return counts;
    }

    /** The daemon's CPU time so far (user + system), from /proc. */
    private Duration cpuTime() throws IOException {
        String stat = Files.readString(Path.of("/proc", Long.toString(daemon.pid()), "stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        long ticks = Long.parseLong(f[11]) + Long.parseLong(f[12]); // utime, stime (fields 14, 15)
        return Duration.ofMillis(ticks * 10); // USER_HZ is 100 on Linux
    }

    /** A second monitor that keeps asking query-version; records the slowest answer. */
    private final class Victim implements AutoCloseable {
        final AtomicLong slowestNanos = new AtomicLong();
        final AtomicLong answers = new AtomicLong();
        final AtomicBoolean stop = new AtomicBoolean();
        final CompletableFuture<Void> done;

        Victim() throws IOException {
            QmpClient c = QmpClient.connect(daemon.qmpSocket);
            done = CompletableFuture.runAsync(() -> {
                try (c) {
                    while (!stop.get()) {
                        long t = System.nanoTime();
                        assertThat(c.ok("query-version").at("/package").asString()).startsWith("blockjobs");
                        slowestNanos.accumulateAndGet(System.nanoTime() - t, Math::max);
                        answers.incrementAndGet();
                        Thread.sleep(20); // a client polling, not a flood of its own
                    }
                } catch (Exception e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
        }

        @Override
        public void close() throws Exception {
            stop.set(true);
            done.get(2, TimeUnit.MINUTES);
            assertThat(answers.get()).isPositive();
            assertThat(Duration.ofNanos(slowestNanos.get())).as("the victim's slowest query-version").isLessThan(VICTIM_BOUND);
        }
    }

    // ---- bj.qmp ----------------------------------------------------------------------------------

    @Test
    void unawaitedQmpCallsAreBoundedAndARunLeavesNothingBehind() throws Exception {
        long contexts = liveContexts();
        long baseline = heapAfterGc();
        Duration slowest;
        try (Victim victim = new Victim()) {
            // The case: 35,000 calls, none awaited, and the run returns.
            JsonNode fired = run("""
                    export default async function (bj) {
                      for (let i = 0; i < 35000; i++) bj.qmp('query-named-block-nodes');
                      return 'fired';
                    }
                    """);
            assertThat(fired.get("state").asString()).as(fired.toString()).isEqualTo("completed");
            // Calls beyond the bound wait in the script and go out as replies come: all are answered.
            JsonNode awaited = run("""
                    export default async function (bj) {
                      const calls = [];
                      for (let i = 0; i < 35000; i++) calls.push(bj.qmp('query-named-block-nodes'));
                      const replies = await Promise.all(calls);
                      return { n: replies.length, node: replies[34999][0]['node-name'] };
                    }
                    """);
            assertThat(awaited.get("state").asString()).as(awaited.toString()).isEqualTo("completed");
            assertThat(awaited.at("/result/n").asInt()).isEqualTo(35000);
            assertThat(awaited.at("/result/node").asString()).isEqualTo("null0");
            // The second case: runs of 8,000 calls, many times over.
            for (int i = 0; i < 60; i++) {
                JsonNode r = run("""
                        export default async function (bj) {
                          for (let i = 0; i < 8000; i++) bj.qmp('query-named-block-nodes');
                          return 'fired';
                        }
                        """);
                assertThat(r.get("state").asString()).as(r.toString()).isEqualTo("completed");
            }
            slowest = Duration.ofNanos(victim.slowestNanos.get());
        }
        long after = heapAfterGc();
        System.out.printf("heap after GC: %d MiB before, %d MiB after 62 runs of 8,000-35,000 bj.qmp calls;"
                + " victim's slowest query-version %d ms%n", baseline / MIB, after / MIB, slowest.toMillis());
        assertThat(after).as("heap after a GC: %d MiB before, %d MiB after 62 runs", baseline / MIB, after / MIB)
                .isLessThan(baseline + HEAP_SLACK);
        assertThat(liveContexts()).as("GraalJS contexts reachable after the runs ended").isLessThanOrEqualTo(contexts);
    }

    /** Live GraalJS contexts: GraalJS keeps one beside its engine (the last one used), whatever the runs. */
    private long liveContexts() throws Exception {
        return liveInstances().getOrDefault("com.oracle.truffle.polyglot.PolyglotContextImpl", 0L);
    }

    @Test
    void aJobConfirmedAfterItsRunFailedIsCancelledToo() throws Exception {
        // The run fails before the daemon has answered bj.job, most often: the reply then finds
        // the run's jobs cancelled and cancels this one (else the run's own cancel does).
        JsonNode done = run("""
                export default async function (bj) {
                  bj.job('block-null', { 'job-id': 'late-job', device: 'null0', 'auto-finalize': false }); // waits in 'pending' until cancelled
                  throw new Error('gone before the reply');
                }
                """);
        assertThat(done.get("state").asString()).isEqualTo("failed");
        long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(1);
        while (!qmp.ok("query-jobs").isEmpty()) { // polls: the cancel's events may come before or after the run's end
            assertThat(System.nanoTime()).as("the run's job is cancelled: %s", qmp.ok("query-jobs")).isLessThan(deadline);
            Thread.sleep(50);
        }
    }

    // ---- bj.sleep --------------------------------------------------------------------------------

    @Test
    void sleepTimersAreBoundedAndCancelledWhenTheRunEnds() throws Exception {
        long contexts = liveContexts();
        long baseline = heapAfterGc();
        // The case: 200,000 sleeps of 1e9 ms. The 1001st throws, and the run fails at once.
        JsonNode done = run("""
                export default async function (bj) {
                  for (let i = 0; i < 200000; i++) bj.sleep(1e9);
                }
                """);
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString())
                .isEqualTo("QmpError: bj.sleep: the workflow has 1000 timers pending, the most it may have");
        // A script that catches it still has its 1000 timers, and sleeps that end free their place.
        JsonNode caught = run("""
                export default async function (bj) {
                  for (let i = 0; i < 999; i++) bj.sleep(1e9);
                  await bj.sleep(1);
                  await bj.sleep(1);
                  bj.sleep(1e9);
                  try { bj.sleep(1); } catch (e) { return e.message; }
                }
                """);
        assertThat(caught.get("result").asString()).as(caught.toString()).contains("1000 timers pending");

        // A cancelled run's timers go too.
        Path sleeper = script("""
                export default async function (bj) {
                  for (let i = 0; i < 1000; i++) bj.sleep(1e9);
                  bj.log('asleep');
                  await new Promise(() => {});
                }
                """);
        String id = qmp.ok("workflow-run", map("script", sleeper.toString())).get("id").asString();
        qmp.awaitEvent("WORKFLOW_LOG", d -> d.get("id").asString().equals(id) && d.get("message").asString().equals("asleep"));
        qmp.ok("workflow-cancel", map("id", id));
        assertThat(qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id)).at("/data/state").asString())
                .isEqualTo("cancelled");

        Map<String, Long> live = liveInstances();
        assertThat(live.getOrDefault("java.util.concurrent.ScheduledThreadPoolExecutor$ScheduledFutureTask", 0L))
                .as("timers left pending (the watchdog's is one)").isLessThan(10);
        assertThat(live.getOrDefault("com.oracle.truffle.polyglot.PolyglotContextImpl", 0L)).isLessThanOrEqualTo(contexts);
        Duration cpuBefore = cpuTime();
        long t = System.nanoTime();
        Thread.sleep(5000); // measuring idle CPU over a span of time, not waiting for anything
        Duration used = cpuTime().minus(cpuBefore);
        Duration span = Duration.ofNanos(System.nanoTime() - t);
        long after = heapAfterGc();
        System.out.printf("after 200,000 bj.sleep(1e9): daemon CPU %d ms over %d ms idle; heap after GC %d MiB, was %d MiB%n",
                used.toMillis(), span.toMillis(), after / MIB, baseline / MIB);
        assertThat(used).as("daemon CPU over %s with no run", span).isLessThan(span.dividedBy(5));
        assertThat(after).isLessThan(baseline + HEAP_SLACK);
    }

    // ---- no secrets in errors --------------------------------------------------------------------

    private void assertNoSecretAnywhere() throws Exception {
        assertThat(qmp.ok("query-workflows").toString()).doesNotContain(SECRET);
        assertThat(qmp.seenEvents().toString()).doesNotContain(SECRET);
        assertThat(String.join("\n", daemon.log())).doesNotContain(SECRET);
    }

    @Test
    void filesThatAreNotScriptsAreRefusedWithoutTheirContents() throws Exception {
        assertThat(Files.readString(Path.of("/proc", Long.toString(daemon.pid()), "environ"))).as("the test's premise")
                .contains(SECRET);
        String environ = qmp.error("workflow-run", map("script", "/proc/self/environ")).get("desc").asString();
        assertThat(environ).isEqualTo("'/proc/self/environ' is not a workflow script: its name must end in .js or .mjs");
        String scheduled = qmp.error("workflow-schedule", map("name", "env", "script", "/proc/self/environ",
                "schedule", "@daily")).get("desc").asString();
        assertThat(scheduled).isEqualTo(environ);

        Path link = dir.resolve("environ.js");
        Files.createSymbolicLink(link, Path.of("/proc/self/environ"));
        assertThat(qmp.error("workflow-run", map("script", link.toString())).get("desc").asString())
                .isEqualTo("'" + link + "' is not a workflow script: scripts are not read from /proc");
        Path zero = dir.resolve("zero.js");
        Files.createSymbolicLink(zero, Path.of("/dev/zero"));
        assertThat(qmp.error("workflow-schedule", map("name", "z", "script", zero.toString(), "schedule", "@daily"))
                .get("desc").asString()).isEqualTo("'" + zero + "' is not a workflow script: scripts are not read from /dev");
        Path text = dir.resolve("secret.txt");
        Files.writeString(text, "token=" + SECRET + "\n");
        assertThat(qmp.error("workflow-run", map("script", text.toString())).get("desc").asString())
                .isEqualTo("'" + text + "' is not a workflow script: its name must end in .js or .mjs");
        Path binary = dir.resolve("binary.js");
        Files.write(binary, new byte[] {'/', '/', (byte) 0xff, (byte) 0xfe, '\n'});
        assertThat(qmp.error("workflow-run", map("script", binary.toString())).get("desc").asString())
                .isEqualTo("Could not read '" + binary + "': it is not UTF-8 text");
        assertThat(qmp.ok("query-workflow-schedules")).isEmpty();
        assertNoSecretAnywhere();
    }

    @Test
    void syntaxErrorsNameTheFileAndPlaceNotTheText() throws Exception {
        // The parser would quote the line and the token it met: here the secret is both.
        JsonNode token = run("let x = 1 " + SECRET.replace('-', '_') + ";\nexport default async function () {}\n");
        assertThat(token.get("state").asString()).isEqualTo("failed");
        assertThat(token.at("/error/desc").asString()).isEqualTo("SyntaxError: " + dir.resolve("r" + counter + ".js") + ":1:10 Expected ;");
        JsonNode quote = run("export default async function () {\n  return '" + SECRET + "\n}\n");
        assertThat(quote.at("/error/desc").asString())
                .isEqualTo("SyntaxError: " + dir.resolve("r" + counter + ".js") + ":2:" + (10 + SECRET.length()) + " Missing close quote");
        JsonNode twice = run("let " + SECRET.replace('-', '_') + "; let " + SECRET.replace('-', '_') + ";\n");
        assertThat(twice.at("/error/desc").asString()).endsWith(" Variable has already been declared");
        assertThat(SECRET.replace('-', '_')).isNotEqualTo(SECRET);
        String all = qmp.ok("query-workflows").toString() + qmp.seenEvents() + String.join("\n", daemon.log());
        assertThat(all).doesNotContain(SECRET).doesNotContain(SECRET.replace('-', '_'));
        assertNoSecretAnywhere();
    }
}
