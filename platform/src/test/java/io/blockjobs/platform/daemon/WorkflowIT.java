package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * JavaScript workflows through the real daemon: jobs composed on a real qcow2 chain, QMP errors
 * as rejected promises, cancellation, the shipped compact-chain.js, and schedules.
 */
class WorkflowIT {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    Path base;
    Path mid1;
    Path mid2;
    Path top;
    Path before;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeEach
    void chain() throws Exception {
        base = dir.resolve("base.qcow2");
        mid1 = dir.resolve("mid1.qcow2");
        mid2 = dir.resolve("mid2.qcow2");
        top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "32M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 12M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid1.toString());
        Qemu.io(mid1, "qcow2", "write -P 0x22 4M 6M", "write -z 1M 1M");
        Qemu.img("create", "-f", "qcow2", "-b", "mid1.qcow2", "-F", "qcow2", mid2.toString());
        Qemu.io(mid2, "qcow2", "write -P 0x33 8M 4M");
        Qemu.img("create", "-f", "qcow2", "-b", "mid2.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x44 11M 2M");
        before = snapshot(top, "before"); // the guest's view, which no workflow may change
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + base,
                "--blockdev", "driver=qcow2,node-name=mid1,backing=base,file.driver=file,file.filename=" + mid1,
                "--blockdev", "driver=qcow2,node-name=mid2,backing=mid1,file.driver=file,file.filename=" + mid2,
                "--blockdev", "driver=qcow2,node-name=top,backing=mid2,file.driver=file,file.filename=" + top));
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        if (qmp != null) {
            qmp.close();
        }
        if (daemon != null) {
            daemon.close();
        }
        for (Path p : List.of(base, mid1, mid2, top)) {
            if (Files.exists(p)) {
                Qemu.assertClean(p);
            }
        }
    }

    /** Stops the daemon, so qemu-img may open the images. */
    private void stopDaemon() throws Exception {
        qmp.close();
        qmp = null;
        daemon.close();
    }

    /** The chain {@code top} names (file names, top first), and the guest's view unchanged by the workflow. */
    private void assertChainAndGuestView(String... files) {
        assertThat(backingChain(top)).containsExactly(files);
        assertThat(Qemu.identical(before, "raw", top, "qcow2")).as("qemu-img compare").isTrue();
    }

    private Path script(String name, String text) throws Exception {
        Path p = dir.resolve(name);
        Files.writeString(p, text);
        return p;
    }

    /** Starts a workflow and waits for its end; returns WORKFLOW_FINISHED's data. */
    private JsonNode runToEnd(Object args) throws Exception {
        String id = qmp.ok("workflow-run", args).get("id").asString();
        return qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id)).get("data");
    }

    private Path snapshot(Path image, String name) {
        Path raw = dir.resolve(name + ".raw");
        Qemu.img("convert", "-O", "raw", image.toString(), raw.toString());
        return raw;
    }

    private List<String> backingChain(Path image) {
        List<String> files = new ArrayList<>();
        JsonNode info = Qemu.JSON.readTree(Qemu.img("info", "--output=json", "--backing-chain", image.toString()).ok().out());
        info.forEach(i -> files.add(Path.of(i.get("filename").asString()).getFileName().toString()));
        return files;
    }

    @Test
    void streamThenCommitInSequenceKeepTheGuestView() throws Exception {
        Path wf = script("stream-commit.js", """
                export default async function (bj, args) {
                  const s = bj.job('block-stream', { device: 'top', 'base-node': 'mid1' });
                  bj.log('started', s.id);
                  await s.done;
                  const completed = bj.events.next('BLOCK_JOB_COMPLETED', { device: 'c1' });
                  const c = await bj.job('block-commit', { 'job-id': 'c1', device: 'top', 'top-node': 'mid1', 'base-node': 'base' });
                  await c.done;
                  const event = await completed;
                  const chain = await bj.chain('top');
                  bj.log('chain', chain.map((l) => l.node));
                  return { layers: chain.map((l) => l.node), streamed: s.len, committedEvent: event.event, greeting: args.greeting };
                }
                """);
        JsonNode done = runToEnd(map("script", wf.toString(), "args", map("greeting", "hello")));

        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("completed");
        JsonNode result = done.get("result");
        assertThat(result.get("layers").toString()).isEqualTo("[\"top\",\"base\"]");
        JsonNode info = qmp.ok("query-workflows").get(0);
        JsonNode streamEvent = qmp.seenEvents().stream()
                .filter(e -> e.get("event").asString().equals("BLOCK_JOB_COMPLETED")
                        && e.at("/data/device").asString().equals(info.at("/jobs/0").asString()))
                .findFirst().orElseThrow();
        assertThat(result.get("streamed").asLong()).isEqualTo(streamEvent.at("/data/len").asLong()).isPositive();
        assertThat(result.get("committedEvent").asString()).isEqualTo("BLOCK_JOB_COMPLETED");
        assertThat(result.get("greeting").asString()).isEqualTo("hello");

        assertThat(info.get("jobs")).hasSize(2);
        assertThat(info.at("/jobs/0").asString()).startsWith(done.get("id").asString() + "-job");
        assertThat(info.at("/jobs/1").asString()).isEqualTo("c1");
        assertThat(info.get("log").toString()).contains("started", "chain [\\\"top\\\",\\\"base\\\"]");

        stopDaemon();
        assertChainAndGuestView("top.qcow2", "base.qcow2");
    }

    @Test
    void activeCommitIsAwaitedReadyCompletedAndFinalized() throws Exception {
        Path wf = script("active.js", """
                export default async function (bj) {
                  const seen = [];
                  const stop = bj.events.on('JOB_STATUS_CHANGE', (e) => seen.push(e.data.status));
                  const j = await bj.job('block-commit', { device: 'top', 'auto-finalize': false });
                  await j.ready;
                  await j.complete();
                  await j.until('pending');
                  await j.finalize();
                  await j.done;
                  stop();
                  return { seen, status: j.status };
                }
                """);
        JsonNode done = runToEnd(map("script", wf.toString()));
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("completed");
        List<String> seen = new ArrayList<>();
        done.at("/result/seen").forEach(n -> seen.add(n.asString()));
        assertThat(seen).containsSubsequence("created", "running", "ready", "waiting", "pending", "concluded");
        stopDaemon();
        assertThat(Qemu.identical(before, "raw", base, "qcow2")).as("the base holds the whole disk").isTrue();
    }

    @Test
    void compactChainCommitsTheOldestLayersIntoTheBase() throws Exception {
        JsonNode done = runToEnd(map("script", "compact-chain.js", "args", map("node", "top", "depth", 2)));
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("completed");
        assertThat(done.at("/result/before").asInt()).isEqualTo(4);
        assertThat(done.at("/result/after").asInt()).isEqualTo(2);
        JsonNode action = done.at("/result/actions/0");
        assertThat(action.get("command").asString()).isEqualTo("block-commit");
        assertThat(action.at("/arguments/top-node").asString()).isEqualTo("mid2");
        assertThat(action.at("/arguments/base-node").asString()).isEqualTo("base");
        assertThat(action.at("/arguments/x-safe").asBoolean()).as("safe mode is offered, so used").isTrue();
        List<String> log = new ArrayList<>();
        qmp.ok("query-workflows").get(0).get("log").forEach(l -> log.add(l.asString()));
        assertThat(log).anyMatch(l -> l.startsWith("committing mid2, mid1 into base (safe mode)"))
                .anyMatch(l -> l.equals("chain of top now: top -> base"));

        // Within the limit now: nothing to do.
        JsonNode again = runToEnd(map("script", "compact-chain.js", "args", map("node", "top", "depth", 2)));
        assertThat(again.at("/result/actions").size()).isZero();

        stopDaemon();
        assertChainAndGuestView("top.qcow2", "base.qcow2");
    }

    @Test
    void compactChainStreamsWhenAsked() throws Exception {
        JsonNode done = runToEnd(map("script", "compact-chain.js", "args", map("node", "top", "depth", 3, "stream", true)));
        assertThat(done.get("state").asString()).as(done.toString()).isEqualTo("completed");
        assertThat(done.at("/result/actions/0/command").asString()).isEqualTo("block-stream");
        assertThat(done.at("/result/actions/0/arguments/base-node").asString()).isEqualTo("mid1");
        stopDaemon();
        assertChainAndGuestView("top.qcow2", "mid1.qcow2", "base.qcow2");
    }

    @Test
    void qmpErrorsAndFailedJobsAreRejectedPromisesWithTheQmpClass() throws Exception {
        qmp.ok("blockdev-add", map("driver", "blkdebug", "node-name", "faulty", "image", "base",
                "inject-error", List.of(map("event", "read_aio", "errno", 5, "sector", 4096, "once", false))));
        JsonNode direct = qmp.error("block-stream", map("job-id", "x", "device", "nope"));
        Path wf = script("errors.js", """
                export default async function (bj) {
                  const seen = {};
                  try { await bj.qmp('no-such-command', {}); } catch (e) { seen.unknown = { name: e.name, class: e.class, message: e.message }; }
                  try { await bj.job('block-stream', { device: 'nope' }).started; } catch (e) { seen.missing = { class: e.class, message: e.message }; }
                  try { await bj.job('block-stream', { device: 'nope' }).done; } catch (e) { seen.missingDone = e.class; }
                  bj.log(JSON.stringify(seen));
                  const j = await bj.job('block-null', { device: 'faulty' });
                  await j.done;
                  return 'not reached';
                }
                """);
        JsonNode done = runToEnd(map("script", wf.toString()));
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/class").asString()).isEqualTo("GenericError");
        assertThat(done.at("/error/desc").asString()).contains("failed: Input/output error");

        JsonNode seen = Qemu.JSON.readTree(qmp.ok("query-workflows").get(0).get("log").get(0).asString());
        assertThat(seen.at("/unknown/name").asString()).isEqualTo("QmpError");
        assertThat(seen.at("/unknown/class").asString()).isEqualTo("CommandNotFound");
        assertThat(seen.at("/unknown/message").asString()).isEqualTo("The command no-such-command has not been found");
        assertThat(seen.at("/missing/class").asString()).isEqualTo(direct.get("class").asString());
        assertThat(seen.at("/missing/message").asString()).isEqualTo(direct.get("desc").asString());
        assertThat(seen.at("/missingDone").asString()).as("done rejects too").isEqualTo(direct.get("class").asString());
    }

    @Test
    void aJobThatCouldNotStartIsNotTheWorkflowsToCancel() throws Exception {
        qmp.ok("block-stream", map("job-id", "libvirt-job", "device", "top", "speed", MIB));
        Path wf = script("collide.js", """
                export default async function (bj) {
                  await bj.job('block-null', { 'job-id': 'libvirt-job', device: 'base' }).done;
                }
                """);
        JsonNode done = runToEnd(map("script", wf.toString()));
        assertThat(done.get("state").asString()).isEqualTo("failed");
        assertThat(done.at("/error/desc").asString()).contains("libvirt-job");
        JsonNode jobs = qmp.ok("query-jobs");
        assertThat(jobs).hasSize(1);
        assertThat(jobs.at("/0/id").asString()).isEqualTo("libvirt-job");
        assertThat(jobs.at("/0/status").asString()).as("the client's job runs on").isEqualTo("running");
        qmp.ok("job-cancel", map("id", "libvirt-job"));
        qmp.awaitEvent("BLOCK_JOB_CANCELLED", d -> d.get("device").asString().equals("libvirt-job"));
    }

    @Test
    void cancellingAWorkflowCancelsItsRunningJob() throws Exception {
        Path wf = script("slow.js", """
                export default async function (bj) {
                  const j = await bj.job('block-stream', { device: 'top', speed: 1048576 });
                  await j.until('running');
                  bj.log('running', j.id);
                  await j.done;
                }
                """);
        String id = qmp.ok("workflow-run", map("script", wf.toString(), "id", "slow")).get("id").asString();
        assertThat(id).isEqualTo("slow");
        String job = qmp.awaitEvent("WORKFLOW_LOG", d -> d.get("message").asString().startsWith("running slow-job"))
                .at("/data/message").asString().substring("running ".length());
        qmp.ok("workflow-cancel", map("id", "slow"));
        // The job's cancel and the run's end, in either order: the job aborts on the main loop.
        JsonNode done = null;
        boolean cancelled = false;
        while (done == null || !cancelled) {
            JsonNode e = qmp.awaitEvent("", d -> job.equals(d.path("device").asString(null))
                    || "slow".equals(d.path("id").asString(null)));
            switch (e.get("event").asString()) {
                case "BLOCK_JOB_CANCELLED" -> cancelled = true;
                case "WORKFLOW_FINISHED" -> done = e.get("data");
                default -> { }
            }
        }
        assertThat(done.get("state").asString()).isEqualTo("cancelled");
        assertThat(done.at("/error/desc").asString()).isEqualTo("cancelled by workflow-cancel");
        assertThat(qmp.ok("query-jobs").isEmpty()).isTrue();
        assertThat(qmp.error("workflow-cancel", map("id", "slow")).get("desc").asString())
                .isEqualTo("Workflow 'slow' has already finished (cancelled)");
        assertThat(qmp.error("workflow-cancel", map("id", "nope")).get("desc").asString())
                .isEqualTo("Workflow 'nope' not found");
    }

    @Test
    void quitDuringAWorkflowStopsItAndLeavesTheChainIntact() throws Exception {
        Path wf = script("slow.js", """
                export default async function (bj) {
                  const j = await bj.job('block-commit', { device: 'top', 'top-node': 'mid2', speed: 1048576 });
                  await j.until('running');
                  bj.log('running');
                  await j.done;
                }
                """);
        String id = qmp.ok("workflow-run", map("script", wf.toString())).get("id").asString();
        qmp.awaitEvent("WORKFLOW_LOG", d -> d.get("message").asString().equals("running"));
        qmp.ok("quit");
        JsonNode finished = qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id)).get("data");
        assertThat(finished.get("state").asString()).isEqualTo("cancelled");
        assertThat(finished.at("/error/desc").asString()).isEqualTo("the daemon is shutting down");
        assertThat(daemon.awaitExit()).isZero();
        qmp.close();
        qmp = null;
        assertChainAndGuestView("top.qcow2", "mid2.qcow2", "mid1.qcow2", "base.qcow2");
    }

    @Test
    void badRequestsGetClearErrors() throws Exception {
        assertThat(qmp.error("workflow-run", map("script", "no-such-script.js")).get("desc").asString())
                .startsWith("Could not open '").endsWith("no-such-script.js': No such file or directory");
        assertThat(qmp.error("workflow-run", map("script", "compact-chain.js", "args", List.of(1))).get("desc").asString())
                .isEqualTo("'args' must be an object");
        assertThat(qmp.error("workflow-run", map("script", "compact-chain.js", "timeout", Long.MAX_VALUE)).get("desc").asString())
                .startsWith("'timeout' must be between 1 and ");
        Path fifo = dir.resolve("fifo.js");
        Qemu.run("mkfifo", fifo.toString()).ok();
        assertThat(qmp.error("workflow-run", map("script", fifo.toString())).get("desc").asString())
                .isEqualTo("'" + fifo + "' is not a regular file");
        JsonNode syntax = runToEnd(map("script", script("broken.js", "export default async function ( {").toString()));
        assertThat(syntax.get("state").asString()).isEqualTo("failed");
        assertThat(syntax.at("/error/desc").asString()).contains("SyntaxError");
        JsonNode noExport = runToEnd(map("script", script("plain.js", "const x = 1;").toString()));
        assertThat(noExport.at("/error/desc").asString()).startsWith("the script has no default export function");
        JsonNode cyclic = runToEnd(map("script", script("cyclic.js",
                "export default async function () { const a = {}; a.a = a; return a; }").toString()));
        assertThat(cyclic.at("/error/desc").asString()).startsWith("the workflow's result cannot be written as JSON");
        JsonNode thrown = runToEnd(map("script", script("throws.js",
                "export default async function () {\n  null.x;\n}").toString()));
        assertThat(thrown.at("/error/desc").asString()).startsWith("TypeError: Cannot read property");
        JsonNode thrownInfo = null;
        for (JsonNode w : qmp.ok("query-workflows")) {
            if (w.get("id").asString().equals(thrown.get("id").asString())) {
                thrownInfo = w;
            }
        }
        assertThat(thrownInfo.get("log").toString()).as("the stack says where").contains("throws.js:2");
        JsonNode missingArg = runToEnd(map("script", "compact-chain.js"));
        assertThat(missingArg.at("/error/desc").asString()).contains("needs the chain's active node");
    }

    @Test
    void schedulesRunWorkflowsUnattended() throws Exception {
        Path wf = script("tick.js", "export default async function (bj, args) { bj.log('tick', args.n); return args.n; }");
        assertThat(qmp.error("workflow-schedule", map("name", "bad", "script", wf.toString(), "schedule", "61 * * * *"))
                .get("desc").asString()).startsWith("Invalid schedule '61 * * * *'");
        JsonNode s = qmp.ok("workflow-schedule", map("name", "every-second", "script", wf.toString(),
                "schedule", "* * * * * *", "args", map("n", 7)));
        assertThat(s.get("next-run").asString()).isNotEmpty();
        JsonNode first = qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals("every-second-1")).get("data");
        assertThat(first.get("state").asString()).isEqualTo("completed");
        assertThat(first.get("result").asInt()).isEqualTo(7);
        qmp.awaitEvent("WORKFLOW_STARTED", d -> d.get("id").asString().equals("every-second-2"));
        qmp.ok("workflow-unschedule", map("name", "every-second"));
        assertThat(qmp.ok("query-workflow-schedules").isEmpty()).isTrue();
        assertThat(qmp.ok("query-workflows").get(0).get("schedule").asString()).isEqualTo("every-second");
        assertThat(qmp.error("workflow-unschedule", map("name", "every-second")).get("desc").asString())
                .isEqualTo("Schedule 'every-second' not found");
    }
}
