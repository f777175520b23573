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
 * block-stream and block-commit on chains made by qemu-img and qemu-io, with a distinct pattern
 * in each layer; results checked with qemu-img compare, info --backing-chain and check.
 */
class StreamCommitIT {

    @TempDir
    Path dir;
    Path base;
    Path mid1;
    Path mid2;
    Path top;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeEach
    void chain() {
        base = dir.resolve("base.qcow2");
        mid1 = dir.resolve("mid1.qcow2");
        mid2 = dir.resolve("mid2.qcow2");
        top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "32M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 12M");
        Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.qcow2", "-F", "qcow2", mid1.toString());
        Qemu.io(mid1, "qcow2", "write -P 0x22 4M 6M", "write -z 1M 1M", "write -P 0x23 20M 100k");
        Qemu.img("create", "-f", "qcow2", "-b", "mid1.qcow2", "-F", "qcow2", mid2.toString());
        Qemu.io(mid2, "qcow2", "write -P 0x33 8M 4M", "write -P 0x34 " + (24L << 20) + " 512");
        Qemu.img("create", "-f", "qcow2", "-b", "mid2.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x44 11M 2M");
    }

    @AfterEach
    void stop() throws Exception {
        if (qmp != null) {
            qmp.close();
        }
        if (daemon != null) {
            daemon.close();
        }
    }

    /** Starts blockjobd with every layer as a named node, as libvirt does. */
    private void startNamed() throws Exception {
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + base,
                "--blockdev", "driver=qcow2,node-name=mid1,backing=base,file.driver=file,file.filename=" + mid1,
                "--blockdev", "driver=qcow2,node-name=mid2,backing=mid1,file.driver=file,file.filename=" + mid2,
                "--blockdev", "driver=qcow2,node-name=top,backing=mid2,file.driver=file,file.filename=" + top,
                "--export", "type=nbd,id=e,node-name=top,name=top,writable=on"));
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    private Path snapshotOf(Path image, String name) throws Exception {
        Path raw = dir.resolve(name + ".raw");
        Qemu.img("convert", "-O", "raw", image.toString(), raw.toString());
        return raw;
    }

    private List<String> runToEnd(String id) {
        List<String> events = new ArrayList<>();
        while (true) {
            JsonNode e = qmp.awaitEvent("", d -> id.equals(d.path("id").asString(null)) || id.equals(d.path("device").asString(null)));
            String name = e.get("event").asString();
            events.add(name.equals("JOB_STATUS_CHANGE") ? e.at("/data/status").asString() : name);
            if (name.equals("BLOCK_JOB_COMPLETED")) {
                assertThat(e.at("/data/error").isMissingNode()).as("job %s failed: %s", id, e).isTrue();
            }
            if (events.get(events.size() - 1).equals("null")) {
                return events;
            }
        }
    }

    private void quit() throws Exception {
        qmp.ok("quit");
        assertThat(daemon.awaitExit()).isZero();
    }

    private static List<String> chainOf(Path image) {
        List<String> files = new ArrayList<>();
        JsonNode chain = Qemu.JSON.readTree(Qemu.img("info", "--output=json", "--backing-chain", image.toString()).out());
        for (JsonNode layer : chain) {
            files.add(Path.of(layer.get("filename").asString()).getFileName().toString());
        }
        return files;
    }

    @Test
    void streamTheWholeChainIntoTheTop() throws Exception {
        Path before = snapshotOf(top, "before");
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top));
        qmp = QmpClient.connect(daemon.qmpSocket);
        qmp.ok("block-stream", map("device", "top"));
        assertThat(runToEnd("top")).containsSubsequence("running", "waiting", "pending", "BLOCK_JOB_COMPLETED", "concluded");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2");
        Qemu.assertClean(top);
        assertThat(Qemu.identical(top, "qcow2", before, "raw")).isTrue();
    }

    @Test
    void streamOntoABaseWhileAClientWrites() throws Exception {
        Path before = snapshotOf(top, "before");
        startNamed();
        qmp.ok("block-stream", map("job-id", "s", "device", "top", "base-node", "mid1", "speed", 8 << 20));
        // Writes through NBD while the job runs: they must win over copied data.
        Qemu.ioNbd(daemon.nbdUri("top"), "write -P 0x55 9M 64k", "write -P 0x56 30M 1M", "write -P 0x57 20M 4k");
        Qemu.io(before, "raw", "write -P 0x55 9M 64k", "write -P 0x56 30M 1M", "write -P 0x57 20M 4k");
        runToEnd("s");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid1.qcow2", "base.qcow2");
        for (Path p : List.of(top, mid1, base)) {
            Qemu.assertClean(p);
        }
        assertThat(Qemu.identical(top, "qcow2", before, "raw")).isTrue();
    }

    @Test
    void streamIntoAnIntermediateLayer() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        Path mid2Before = snapshotOf(mid2, "mid2-before");
        startNamed();
        qmp.ok("block-stream", map("job-id", "i", "device", "mid2", "base-node", "base"));
        runToEnd("i");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid2.qcow2", "base.qcow2");
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        assertThat(Qemu.identical(mid2, "qcow2", mid2Before, "raw")).as("mid2 on its own").isTrue();
        Qemu.assertClean(mid2);
    }

    @Test
    void commitAnIntermediateLayerDown() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        Path mid2Before = snapshotOf(mid2, "mid2-before");
        startNamed();
        qmp.ok("block-commit", map("job-id", "c", "device", "top", "top-node", "mid2", "base-node", "mid1"));
        assertThat(runToEnd("c")).contains("BLOCK_JOB_COMPLETED");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid1.qcow2", "base.qcow2");
        for (Path p : List.of(top, mid1, base)) {
            Qemu.assertClean(p);
        }
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        assertThat(Qemu.identical(mid1, "qcow2", mid2Before, "raw")).as("mid1 now holds what mid2 showed").isTrue();
    }

    @Test
    void commitTwoLayersIntoTheBase() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        startNamed();
        qmp.ok("block-commit", map("job-id", "c", "device", "top", "top-node", "mid2", "speed", 16 << 20));
        runToEnd("c");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "base.qcow2");
        Qemu.assertClean(base);
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
    }

    @Test
    void safeCommitKeepsEveryIntermediateImageValidOnItsOwn() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        Path mid2Before = snapshotOf(mid2, "mid2-before");
        Path mid1Before = snapshotOf(mid1, "mid1-before");
        startNamed();
        qmp.ok("block-commit", map("job-id", "safe", "device", "top", "top-node", "mid2", "base-node", "base",
                "x-safe", true));
        runToEnd("safe");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "base.qcow2");
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        // mid2 and mid1, each opened on its own over the changed base, read as before.
        assertThat(Qemu.identical(mid2, "qcow2", mid2Before, "raw")).as("mid2 on its own").isTrue();
        assertThat(Qemu.identical(mid1, "qcow2", mid1Before, "raw")).as("mid1 on its own").isTrue();
        for (Path p : List.of(top, mid1, mid2, base)) {
            Qemu.assertClean(p);
        }
    }

    @Test
    void activeCommitSwitchesClientsToTheBaseWithNothingLost() throws Exception {
        Path expected = snapshotOf(top, "expected");
        startNamed();
        qmp.ok("block-commit", map("job-id", "ac", "device", "top", "base-node", "mid1"));
        qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("ac"));
        // Writes after READY go to the top and are copied down before the switch.
        Qemu.ioNbd(daemon.nbdUri("top"), "write -P 0x61 2M 1M", "write -P 0x62 31M 64k");
        Qemu.io(expected, "raw", "write -P 0x61 2M 1M", "write -P 0x62 31M 64k");
        assertThat(qmp.ok("query-block-jobs").get(0).get("ready").asBoolean()).isTrue();
        qmp.ok("job-complete", map("id", "ac"));
        assertThat(runToEnd("ac")).containsSubsequence("BLOCK_JOB_COMPLETED", "concluded", "null");
        assertThat(qmp.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("mid1");
        // The export now writes into the base of the commit.
        Qemu.ioNbd(daemon.nbdUri("top"), "write -P 0x63 5M 64k");
        Qemu.io(expected, "raw", "write -P 0x63 5M 64k");
        quit();
        for (Path p : List.of(top, mid2, mid1, base)) {
            Qemu.assertClean(p);
        }
        assertThat(Qemu.identical(mid1, "qcow2", expected, "raw")).as("mid1 holds the whole disk").isTrue();
    }

    /**
     * Active commit is the mirror plugin's loop: the commit plugin depends on it. The distribution's
     * folder loads them in that order (the commit jar's name sorts first); the mirror plugin is
     * not unloaded under the commit plugin, the commit plugin is not loaded without it, and loaded
     * back in order the active commit runs as before.
     */
    @Test
    void activeCommitRunsOnTheMirrorPluginWhichItNeedsLoaded() throws Exception {
        Path expected = snapshotOf(top, "expected");
        startNamed();
        java.util.Map<String, String> jars = new java.util.HashMap<>();
        for (JsonNode p : qmp.ok("query-plugins")) {
            jars.put(p.get("id").asString(), p.get("path").asString());
            assertThat(p.get("state").asString()).as(p.toString()).isEqualTo("started");
        }
        assertThat(jars).containsKeys("commit-job", "mirror-job");
        assertThat(qmp.error("plugin-unload", map("id", "mirror-job")).get("desc").asString())
                .isEqualTo("Plugin 'mirror-job' is needed by plugin 'commit-job'; unload that first");
        assertThat(qmp.ok("query-commands").findValuesAsString("name")).contains("block-commit", "blockdev-mirror");
        qmp.ok("plugin-unload", map("id", "commit-job"));
        qmp.ok("plugin-unload", map("id", "mirror-job"));
        assertThat(qmp.error("plugin-load", map("path", jars.get("commit-job"))).get("desc").asString())
                .isEqualTo("Plugin 'commit-job' needs plugin 'mirror-job', which is not loaded; load it first");
        assertThat(qmp.error("block-commit", map("device", "top")).get("class").asString()).isEqualTo("CommandNotFound");
        qmp.ok("plugin-load", map("path", jars.get("mirror-job")));
        assertThat(qmp.ok("plugin-load", map("path", jars.get("commit-job"))).get("id").asString()).isEqualTo("commit-job");

        qmp.ok("block-commit", map("job-id", "ac", "device", "top", "base-node", "mid1", "filter-node-name", "mt"));
        qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("ac"));
        JsonNode job = qmp.ok("query-block-jobs").get(0);
        assertThat(job.get("type").asString()).isEqualTo("commit");
        assertThat(job.has("actively-synced")).as("mirror's member only, as in QEMU").isFalse();
        assertThat(qmp.error("block-job-change", map("id", "ac", "type", "commit")).get("desc").asString())
                .as("the mirror's copy-mode change is the mirror's").isEqualTo("This job type does not support changing its options");
        Qemu.ioNbd(daemon.nbdUri("top"), "write -P 0x65 7M 128k");
        Qemu.io(expected, "raw", "write -P 0x65 7M 128k");
        qmp.ok("job-complete", map("id", "ac"));
        assertThat(runToEnd("ac")).containsSubsequence("BLOCK_JOB_COMPLETED", "concluded", "null");
        assertThat(qmp.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("mid1");
        quit();
        assertThat(Qemu.identical(mid1, "qcow2", expected, "raw")).as("mid1 holds the whole disk").isTrue();
        Qemu.assertClean(mid1);
    }

    @Test
    void cancelAfterReadyLeavesTheChainAndTheDataInBoth() throws Exception {
        Path expected = snapshotOf(top, "expected");
        startNamed();
        qmp.ok("block-commit", map("job-id", "ac", "device", "top", "base-node", "mid1"));
        qmp.awaitEvent("BLOCK_JOB_READY", d -> true);
        Qemu.ioNbd(daemon.nbdUri("top"), "write -P 0x71 3M 64k");
        Qemu.io(expected, "raw", "write -P 0x71 3M 64k");
        qmp.ok("block-job-cancel", map("device", "ac"));
        assertThat(runToEnd("ac")).contains("BLOCK_JOB_COMPLETED").doesNotContain("aborting");
        assertThat(qmp.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("top");
        Qemu.ioNbd(daemon.nbdUri("top"), "read -P 0x71 3M 64k");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid2.qcow2", "mid1.qcow2", "base.qcow2");
        assertThat(Qemu.identical(top, "qcow2", expected, "raw")).isTrue();
        // The base of the commit holds a point-in-time copy of the whole disk, up to the cancel.
        assertThat(Qemu.identical(mid1, "qcow2", expected, "raw")).as("the data is in the base too").isTrue();
        Qemu.assertClean(mid1);
    }

    @Test
    void spaceReclaimingCommitShrinksTheOverlayAndGivesThePlainResult() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        Path mid2Before = snapshotOf(mid2, "mid2-before");
        // Make mid2 large, so that its allocated size visibly falls.
        Qemu.io(mid2, "qcow2", "write -P 0x35 12M 12M");
        Qemu.io(topBefore, "raw", "write -P 0x35 12M 12M", "write -P 0x44 11M 2M", "write -P 0x34 24M 512");
        Qemu.io(mid2Before, "raw", "write -P 0x35 12M 12M");
        long sizeBefore = actualSize(mid2);
        startNamed();
        qmp.ok("block-commit", map("job-id", "r", "device", "top", "top-node", "mid2", "base-node", "mid1",
                "x-reclaim", true, "speed", 24 << 20));
        long half = 0;
        while (half == 0) { // once the job is past half way, mid2 must already be smaller
            JsonNode jobs = qmp.ok("query-block-jobs");
            if (jobs.isEmpty() || jobs.get(0).get("offset").asLong() > (22L << 20)) {
                half = actualSize(mid2);
            }
        }
        runToEnd("r");
        quit();
        long sizeAfter = actualSize(mid2);
        assertThat(half).as("mid2's allocated size half way").isLessThan(sizeBefore);
        assertThat(sizeAfter).as("mid2's allocated size at the end").isLessThan(sizeBefore / 2);
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid1.qcow2", "base.qcow2");
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        assertThat(Qemu.identical(mid1, "qcow2", mid2Before, "raw")).as("as a plain commit leaves it").isTrue();
        for (Path p : List.of(top, mid2, mid1, base)) {
            Qemu.assertClean(p);
        }
    }

    /**
     * {@code x-reclaim} on an active commit (the default top, or the device named as top) is
     * refused with a GenericError before anything changes: no job, no filter left in the graph,
     * and the same commit without it then runs.
     */
    @Test
    void xReclaimIsRefusedForAnActiveCommit() throws Exception {
        startNamed();
        for (var args : List.of(map("job-id", "ac", "device", "top", "base-node", "mid1", "x-reclaim", true),
                map("job-id", "ac", "device", "top", "top-node", "top", "x-reclaim", true))) {
            JsonNode error = qmp.error("block-commit", args);
            assertThat(error.get("class").asString()).isEqualTo("GenericError");
            assertThat(error.get("desc").asString()).isEqualTo("x-reclaim is not supported for an active commit");
        }
        assertThat(qmp.ok("query-block-jobs")).isEmpty();
        for (JsonNode n : qmp.ok("query-named-block-nodes", map("flat", true))) {
            assertThat(n.get("drv").asString()).as("a node left behind").isNotEqualTo("mirror_top");
        }
        assertThat(qmp.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("top");
        qmp.ok("block-commit", map("job-id", "ac", "device", "top", "base-node", "mid1", "x-reclaim", false));
        qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("ac"));
        qmp.ok("job-complete", map("id", "ac"));
        assertThat(runToEnd("ac")).contains("BLOCK_JOB_COMPLETED");
        quit();
        assertThat(chainOf(mid1)).containsExactly("mid1.qcow2", "base.qcow2");
    }

    /** {@code qemu-img info}'s actual-size (allocated bytes), read while the daemon may hold the image. */
    private static long actualSize(Path image) {
        return Qemu.JSON.readTree(Qemu.img("info", "-U", "--output=json", image.toString()).out())
                .get("actual-size").asLong();
    }

    /** Starts blockjobd with {@code faulty} wrapped in blkdebug failing {@code event} requests. */
    private void startWithFault(String faulty, String event, boolean once) throws Exception {
        List<String> args = new ArrayList<>();
        String below = null;
        for (String layer : List.of("base", "mid1", "mid2", "top")) {
            String file = dir.resolve(layer + ".qcow2").toString();
            String backing = below == null ? "" : ",backing=" + below;
            if (layer.equals(faulty)) {
                args.addAll(List.of("--blockdev", "driver=qcow2,node-name=" + layer + "-fmt" + backing
                        + ",file.driver=file,file.filename=" + file, "--blockdev",
                        "{\"driver\":\"blkdebug\",\"node-name\":\"" + layer + "\",\"image\":\"" + layer + "-fmt\","
                                + "\"inject-error\":[{\"event\":\"" + event + "\",\"errno\":5,\"once\":" + once + "}]}"));
            } else {
                args.addAll(List.of("--blockdev", "driver=qcow2,node-name=" + layer + backing
                        + ",file.driver=file,file.filename=" + file));
            }
            below = layer;
        }
        daemon = DaemonProcess.startWithMonitor(dir, args);
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @Test
    void aWriteErrorInTheCommitTargetFollowsOnErrorStop() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        startWithFault("base", "write_aio", true);
        qmp.ok("block-commit", map("job-id", "c", "device", "top", "top-node", "mid2", "base-node", "base",
                "on-error", "stop"));
        JsonNode error = qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true);
        assertThat(error.at("/data/operation").asString()).isEqualTo("write");
        assertThat(error.at("/data/action").asString()).isEqualTo("stop");
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("status").asString().equals("paused"));
        qmp.ok("job-resume", map("id", "c"));
        assertThat(runToEnd("c")).contains("BLOCK_JOB_COMPLETED").doesNotContain("aborting");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "base.qcow2");
        Qemu.assertClean(base);
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
    }

    @Test
    void aReportedWriteErrorFailsTheCommitAndKeepsTheChain() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        startWithFault("base", "write_aio", false);
        qmp.ok("block-commit", map("job-id", "c", "device", "top", "top-node", "mid2", "base-node", "base"));
        assertThat(runToEndAllowingError("c")).isEqualTo("Input/output error");
        quit();
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid2.qcow2", "mid1.qcow2", "base.qcow2");
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        for (Path p : List.of(top, mid2, mid1, base)) {
            Qemu.assertClean(p);
        }
    }

    @Test
    void aReadErrorInASourceLayerFailsTheStreamEvenWhenIgnored() throws Exception {
        Path topBefore = snapshotOf(top, "top-before");
        startWithFault("mid1", "read_aio", false);
        qmp.ok("block-stream", map("job-id", "s", "device", "top", "on-error", "ignore"));
        assertThat(qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true).at("/data/action").asString()).isEqualTo("ignore");
        assertThat(runToEndAllowingError("s")).isEqualTo("Input/output error");
        quit();
        assertThat(chainOf(top)).as("the backing file is kept").hasSize(4);
        assertThat(Qemu.identical(top, "qcow2", topBefore, "raw")).isTrue();
        Qemu.assertClean(top);
    }

    /** Runs the job to its end; returns the error BLOCK_JOB_COMPLETED carried (null if none). */
    private String runToEndAllowingError(String id) {
        String error = null;
        while (true) {
            JsonNode e = qmp.awaitEvent("", d -> id.equals(d.path("id").asString(null)) || id.equals(d.path("device").asString(null)));
            if (e.get("event").asString().equals("BLOCK_JOB_COMPLETED")) {
                error = e.at("/data/error").asString(null);
            }
            if (e.at("/data/status").asString("").equals("null")) {
                return error;
            }
        }
    }

    @Test
    void badArgumentsChangeNothing() throws Exception {
        byte[] topBytes = Files.readAllBytes(top);
        byte[] baseBytes = Files.readAllBytes(base);
        startNamed();
        assertThat(qmp.error("block-commit", map("device", "nowhere")).get("class").asString()).isEqualTo("DeviceNotFound");
        assertThat(qmp.error("block-stream", map("device", "nowhere")).get("class").asString()).isEqualTo("GenericError");
        assertThat(qmp.error("block-commit", map("device", "top", "top-node", "mid1", "base-node", "mid1"))
                .get("desc").asString()).isEqualTo("cannot commit an image into itself");
        assertThat(qmp.error("block-commit", map("device", "top", "top-node", "mid1", "base-node", "mid2"))
                .get("desc").asString()).isEqualTo("'mid2' is not in this backing file chain");
        assertThat(qmp.error("block-commit", map("device", "top", "top-node", "mid1", "base-node", "elsewhere"))
                .get("desc").asString()).isEqualTo("Cannot find device='' nor node-name='elsewhere'");
        assertThat(qmp.error("block-stream", map("device", "top", "base-node", "base", "base", base.toString()))
                .get("desc").asString()).contains("cannot be specified at the same time");
        assertThat(qmp.error("block-stream", map("device", "top", "backing-file", "x.qcow2"))
                .get("desc").asString()).contains("streaming the entire chain");
        // A node in use by one job is refused to another: here, as in QEMU, the stream's
        // copy-on-read filter stands above the top, which is no longer a root node for block-commit.
        qmp.ok("block-stream", map("job-id", "slow", "device", "top", "base-node", "base", "speed", 1 << 20));
        assertThat(qmp.error("block-commit", map("job-id", "c2", "device", "top", "top-node", "mid2"))
                .get("desc").asString()).isEqualTo("Need a root block node");
        qmp.ok("job-cancel", map("id", "slow"));
        assertThat(runToEnd("slow")).contains("BLOCK_JOB_CANCELLED");
        quit();
        // A cancelled stream leaves the chain as it was; its copies are allowed in the top only.
        assertThat(chainOf(top)).containsExactly("top.qcow2", "mid2.qcow2", "mid1.qcow2", "base.qcow2");
        assertThat(Files.readAllBytes(base)).isEqualTo(baseBytes);
        assertThat(topBytes.length).isPositive();
        Qemu.assertClean(top);
    }
}
