package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import tools.jackson.databind.JsonNode;

/**
 * Scripts that try to leave the sandbox or exhaust the daemon: each is refused or stopped, and the
 * daemon, with a small heap on purpose, keeps serving QMP and running other workflows.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class WorkflowSandboxIT {
    Path dir;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeAll
    void start() throws Exception {
        dir = Files.createTempDirectory("bj-sandbox");
        daemon = DaemonProcess.startWithMonitor(dir, List.of(), Map.of("BLOCKJOBS_JAVA_OPTS", "-Xmx768m"));
        qmp = QmpClient.connect(daemon.qmpSocket);
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
        JsonNode ok = run("export default async function (bj) { return (await bj.qmp('query-version')).qemu.major; }", map());
        assertThat(ok.get("state").asString()).as(ok.toString()).isEqualTo("completed");
        assertThat(ok.get("result").isInt()).isTrue();
    }

    private int counter;

    /** Runs {@code source} as a workflow with {@code options}; returns WORKFLOW_FINISHED's data. */
    private JsonNode run(String source, Map<String, Object> options) throws Exception {
        Path script = dir.resolve("s" + (++counter) + ".js");
        Files.writeString(script, source);
        Map<String, Object> args = new java.util.HashMap<>(options);
        args.put("script", script.toString());
        String id = qmp.ok("workflow-run", args).get("id").asString();
        return qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id)).get("data");
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', textBlock = """
            Java.type('java.lang.Runtime').getRuntime().exec(['touch', '/tmp/bj-escaped'])  | ReferenceError: Java is not defined
            Polyglot.eval('js', '1')                                                         | ReferenceError: Polyglot is not defined
            require('fs').readFileSync('/etc/hostname')                                      | ReferenceError: require is not defined
            load('/etc/hostname')                                                            | Operation is not allowed for: /etc/hostname
            await import('/etc/hostname')                                                    | Operation is not allowed
            process.exit(1)                                                                  | ReferenceError: process is not defined
            bj.qmp = null                                                                    | TypeError
            """)
    void escapesAreRefused(String attempt, String expected) throws Exception {
        JsonNode done = run("export default async function (bj) { " + attempt + "; return 'escaped'; }", map());
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).contains(expected);
        assertThat(Path.of("/tmp/bj-escaped")).doesNotExist();
    }

    @Test
    void staticImportsOfTheFileSystemAreRefused() throws Exception {
        JsonNode done = run("import fs from 'fs';\nexport default async function () { return fs; }", map());
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).contains("fs");
    }

    @Test
    void nothingOfTheHostIsReachableFromTheGlobalScope() throws Exception {
        JsonNode done = run("""
                export default async function (bj) {
                  return { names: Object.getOwnPropertyNames(globalThis), bjKeys: Object.keys(bj), frozen: Object.isFrozen(bj) };
                }
                """, map());
        assertThat(done.get("state").asString()).isEqualTo("completed");
        List<String> names = new java.util.ArrayList<>();
        done.at("/result/names").forEach(n -> names.add(n.asString()));
        assertThat(names).contains("Object", "Promise", "JSON")
                .doesNotContain("Java", "Polyglot", "require", "process", "host", "Packages", "java", "quit", "exit");
        assertThat(done.at("/result/frozen").asBoolean()).isTrue();
    }

    @Test
    void anEndlessLoopIsStoppedByTheStatementBudget() throws Exception {
        JsonNode done = run("export default async function () { for (;;) {} }", map("max-statements", 1_000_000));
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString())
                .isEqualTo("the workflow exceeded its statement budget of 1000000 statements and was stopped");
    }

    @Test
    void anEndlessLoopInAnEventHandlerIsStoppedToo() throws Exception {
        JsonNode done = run("""
                export default async function (bj) {
                  await bj.sleep(1);
                  for (;;) {}
                }
                """, map("max-statements", 2_000_000));
        assertThat(done.at("/error/desc").asString()).contains("statement budget of 2000000");
    }

    @Test
    void aScriptThatNeverEndsIsStoppedByTheTimeBudget() throws Exception {
        JsonNode done = run("export default async function () { await new Promise(() => {}); }", map("timeout", 1));
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).isEqualTo("the workflow exceeded its time budget and was stopped");
    }

    @Test
    void aHugeAllocationFailsTheScriptNotTheDaemon() throws Exception {
        JsonNode done = run("export default async function () { return new Array(2 ** 30).fill(7).length; }", map());
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).as("stopped by the memory rule, or out of memory, and said so")
                .containsAnyOf("daemon's heap stayed more than half full", "ran out of resources");
    }

    @Test
    void aScriptThatFillsTheHeapIsStopped() throws Exception {
        JsonNode done = run("""
                export default async function () {
                  const hoard = [];
                  for (;;) hoard.push(new Array(1 << 20).fill(hoard.length));
                }
                """, map());
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).contains("the daemon's heap stayed more than half full");
    }

    @Test
    void garbageIsNotHoarding() throws Exception {
        // Several times the heap in short-lived arrays, beside a hoarder's leftovers: completes.
        JsonNode done = run("""
                export default async function () {
                  let n = 0;
                  for (let i = 0; i < 600; i++) n += new Array(1 << 18).fill(i).length;
                  return n;
                }
                """, map());
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("completed");
        assertThat(done.get("result").asLong()).isEqualTo(600L << 18);
    }

    @Test
    void computingWithoutEndIsStoppedByTheCpuBudget() throws Exception {
        JsonNode done = run("export default async function () { for (;;) { [3, 1, 2].sort(); } }", map("cpu-time", 1));
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).isEqualTo("the workflow exceeded its CPU-time budget of 1 s and was stopped");
    }
}
