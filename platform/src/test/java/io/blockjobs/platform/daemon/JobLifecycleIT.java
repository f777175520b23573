package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.sdk.plugin.Sdk;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/** QEMU's job lifecycle, verbs, speed and op blockers, driven through the null plugin. */
class JobLifecycleIT {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeEach
    void start() throws Exception {
        for (String name : List.of("a", "b")) {
            Path image = dir.resolve(name + ".qcow2");
            Qemu.img("create", "-f", "qcow2", image.toString(), "64M");
            Qemu.io(image, "qcow2", "write -P 0x11 0 64M");
        }
        daemon = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=a,file.driver=file,file.filename=" + dir.resolve("a.qcow2"),
                "--blockdev", "driver=qcow2,node-name=b,file.driver=file,file.filename=" + dir.resolve("b.qcow2")));
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        qmp.close();
        daemon.close();
    }


    /** Events seen for other jobs while waiting for one, kept for later. */
    private final Map<String, java.util.ArrayDeque<String>> backlog = new java.util.HashMap<>();

    /** Events of job {@code id} until (and including) {@code last}, as "EVENT" or "status". */
    private List<String> eventsUntil(String id, String last) {
        List<String> seen = new ArrayList<>();
        var queue = backlog.computeIfAbsent(id, k -> new java.util.ArrayDeque<>());
        while (true) {
            String item;
            if (!queue.isEmpty()) {
                item = queue.removeFirst();
            } else {
                JsonNode e = qmp.awaitEvent("", d -> true);
                String name = e.get("event").asString();
                JsonNode data = e.path("data");
                String jobId = data.has("id") ? data.get("id").asString() : data.path("device").asString();
                item = name.equals("JOB_STATUS_CHANGE") ? data.get("status").asString() : name;
                if (!jobId.equals(id)) {
                    backlog.computeIfAbsent(jobId, k -> new java.util.ArrayDeque<>()).addLast(item);
                    continue;
                }
            }
            seen.add(item);
            if (item.equals(last)) {
                return seen;
            }
        }
    }

    @Test
    void aJobRunsThroughQemusStatesInQemusOrder() throws Exception {
        qmp.ok("block-null", map("device", "a"));
        assertThat(eventsUntil("a", "null"))
                .containsExactly("created", "running", "waiting", "pending", "BLOCK_JOB_COMPLETED", "concluded", "null");
        assertThat(qmp.ok("query-jobs").isEmpty()).isTrue();
    }

    @Test
    void manualFinalizeAndDismiss() throws Exception {
        qmp.ok("block-null", map("job-id", "j", "device", "a", "auto-finalize", false, "auto-dismiss", false));
        assertThat(eventsUntil("j", "BLOCK_JOB_PENDING")).containsExactly("created", "running", "waiting", "pending",
                "BLOCK_JOB_PENDING");
        JsonNode info = qmp.ok("query-block-jobs").get(0);
        assertThat(info.get("status").asString()).isEqualTo("pending");
        assertThat(info.get("offset").asLong()).isEqualTo(info.get("len").asLong()).isEqualTo(64 * MIB);
        for (String verb : List.of("job-pause", "job-resume", "job-complete", "job-dismiss")) {
            assertThat(qmp.error(verb, map("id", "j")).get("desc").asString()).as(verb)
                    .isEqualTo("Job 'j' in state 'pending' cannot accept command verb '" + verb.substring(4) + "'");
        }
        qmp.ok("job-finalize", map("id", "j"));
        assertThat(eventsUntil("j", "concluded")).containsExactly("BLOCK_JOB_COMPLETED", "concluded");
        for (String verb : List.of("job-cancel", "job-pause", "job-finalize")) {
            assertThat(qmp.error(verb, map("id", "j")).get("desc").asString()).as(verb)
                    .isEqualTo("Job 'j' in state 'concluded' cannot accept command verb '" + verb.substring(4) + "'");
        }
        qmp.ok("job-dismiss", map("id", "j"));
        assertThat(eventsUntil("j", "null")).containsExactly("null");
        assertThat(qmp.error("job-dismiss", map("id", "j")).get("desc").asString()).isEqualTo("Job not found");
        JsonNode e = qmp.error("block-job-cancel", map("device", "j"));
        assertThat(e.get("class").asString()).isEqualTo("DeviceNotActive");
        assertThat(e.get("desc").asString()).isEqualTo("Block job 'j' not found");
    }

    @Test
    void pauseResumeAndCancel() throws Exception {
        qmp.ok("block-null", map("job-id", "p", "device", "a", "speed", MIB));
        assertThat(eventsUntil("p", "running")).containsExactly("created", "running");
        assertThat(qmp.error("job-complete", map("id", "p")).get("desc").asString())
                .isEqualTo("Job 'p' in state 'running' cannot accept command verb 'complete'");
        assertThat(qmp.error("job-finalize", map("id", "p")).get("desc").asString())
                .isEqualTo("Job 'p' in state 'running' cannot accept command verb 'finalize'");
        assertThat(qmp.error("job-resume", map("id", "p")).get("desc").asString())
                .isEqualTo("Can't resume a job that was not paused");
        qmp.ok("job-pause", map("id", "p"));
        assertThat(qmp.error("block-job-pause", map("device", "p")).get("desc").asString()).isEqualTo("Job is already paused");
        assertThat(eventsUntil("p", "paused")).containsExactly("paused");
        JsonNode info = qmp.ok("query-block-jobs").get(0);
        assertThat(info.get("paused").asBoolean()).isTrue();
        assertThat(info.get("busy").asBoolean()).isFalse();
        long offset = info.get("offset").asLong();
        qmp.ok("block-job-set-speed", map("device", "p", "speed", 2 * MIB));
        assertThat(qmp.ok("query-block-jobs").get(0).get("speed").asLong()).isEqualTo(2 * MIB);
        assertThat(qmp.ok("query-block-jobs").get(0).get("offset").asLong()).as("no progress while paused").isEqualTo(offset);
        qmp.ok("job-resume", map("id", "p"));
        assertThat(eventsUntil("p", "running")).containsExactly("running");
        qmp.ok("block-job-pause", map("device", "p"));
        eventsUntil("p", "paused");
        assertThat(qmp.error("block-job-cancel", map("device", "p")).get("desc").asString())
                .isEqualTo("The block job for device 'p' is currently paused");
        qmp.ok("block-job-cancel", map("device", "p", "force", true));
        assertThat(eventsUntil("p", "null")).containsExactly("running", "aborting", "BLOCK_JOB_CANCELLED", "concluded", "null");
        assertThat(qmp.error("block-job-set-speed", map("device", "a", "speed", -1)).get("class").asString())
                .isEqualTo("DeviceNotActive");
    }

    @Test
    void graphChangesDrainJobsAndDrainsNestWithTheUsersPause() throws Exception {
        qmp.ok("block-null", map("job-id", "dr", "device", "a", "speed", MIB));
        eventsUntil("dr", "running");
        assertThat(qmp.error("blockdev-snapshot-sync", map("node-name", "a", "snapshot-file",
                dir.resolve("no.qcow2").toString(), "snapshot-node-name", "no")).get("desc").asString())
                .isEqualTo("Node 'a' is busy: block device is in use by block job: null");
        // A snapshot of another node drains the job: it pauses and runs again, as QEMU shows.
        qmp.ok("blockdev-snapshot-sync", map("node-name", "b", "snapshot-file", dir.resolve("b-snap.qcow2").toString(),
                "snapshot-node-name", "b-snap"));
        assertThat(eventsUntil("dr", "running")).containsExactly("paused", "running");
        // As in QEMU, an overlay over a node that nobody uses is dropped at once: b is still the top.
        assertThat(qmp.ok("query-named-block-nodes").findValuesAsString("node-name")).doesNotContain("b-snap");
        // A drain inside the user's pause: the job stays paused until the user resumes it.
        qmp.ok("job-pause", map("id", "dr"));
        eventsUntil("dr", "paused");
        qmp.ok("blockdev-snapshot-sync", map("node-name", "b", "snapshot-file", dir.resolve("b-snap2.qcow2").toString(),
                "snapshot-node-name", "b-snap2"));
        assertThat(qmp.ok("query-block-jobs").get(0).get("status").asString()).isEqualTo("paused");
        qmp.ok("job-resume", map("id", "dr"));
        assertThat(eventsUntil("dr", "running")).containsExactly("running");
        qmp.ok("job-cancel", map("id", "dr"));
        eventsUntil("dr", "null");
    }

    @Test
    void cancelWhileRunningAndWhilePending() throws Exception {
        qmp.ok("block-null", map("job-id", "r", "device", "a", "speed", MIB));
        eventsUntil("r", "running");
        qmp.ok("job-cancel", map("id", "r"));
        assertThat(eventsUntil("r", "null")).containsExactly("aborting", "BLOCK_JOB_CANCELLED", "concluded", "null");

        qmp.ok("block-null", map("job-id", "d", "device", "a", "auto-finalize", false));
        eventsUntil("d", "BLOCK_JOB_PENDING");
        qmp.ok("job-cancel", map("id", "d"));
        assertThat(eventsUntil("d", "null")).containsExactly("aborting", "BLOCK_JOB_CANCELLED", "concluded", "null");
    }

    @Test
    void setSpeedChangesThePace() throws Exception {
        long slow = 4 * MIB;
        qmp.ok("block-null", map("job-id", "s", "device", "a", "speed", slow));
        eventsUntil("s", "running");
        double slowRate = measureRate("s", 4 * MIB);
        qmp.ok("block-job-set-speed", map("device", "s", "speed", 8 * slow));
        double fastRate = measureRate("s", 12 * MIB);
        assertThat(slowRate).as("rate at %d B/s", slow).isBetween(slow * 0.5, slow * 1.5);
        assertThat(fastRate).as("rate after set-speed to %d B/s", 8 * slow).isGreaterThan(3 * slowRate);
        assertThat(qmp.error("block-job-set-speed", map("device", "s", "speed", -5)).get("desc").asString())
                .isEqualTo("Parameter 'speed' expects a non-negative value");
        qmp.ok("block-job-set-speed", map("device", "s", "speed", 0));
        eventsUntil("s", "null");
    }

    /** Bytes per second over the next {@code bytes} of progress, read from query-block-jobs. */
    private double measureRate(String id, long bytes) throws Exception {
        long startOffset = qmp.ok("query-block-jobs").get(0).get("offset").asLong();
        long start = System.nanoTime();
        long offset;
        do {
            offset = qmp.ok("query-block-jobs").get(0).get("offset").asLong();
        } while (offset - startOffset < bytes);
        return (offset - startOffset) / ((System.nanoTime() - start) / 1e9);
    }

    @Test
    void opBlockersKeepJobsApartButNotOnDisjointNodes() throws Exception {
        qmp.ok("block-null", map("job-id", "j1", "device", "a", "speed", MIB));
        JsonNode e = qmp.error("block-null", map("job-id", "j2", "device", "a"));
        assertThat(e.get("desc").asString()).isEqualTo("Node 'a' is busy: block device is in use by block job: null");
        assertThat(qmp.error("block-null", map("job-id", "j1", "device", "b")).get("desc").asString())
                .isEqualTo("Job ID 'j1' already in use");
        assertThat(qmp.error("blockdev-del", map("node-name", "a")).get("desc").asString())
                .isEqualTo("Node 'a' is busy: block device is in use by block job: null"); // QEMU 7.2's op blocker
        assertThat(qmp.error("block-null", map("device", "nowhere")).get("class").asString()).isEqualTo("DeviceNotFound");
        qmp.ok("block-null", map("job-id", "j3", "device", "b", "speed", MIB));
        JsonNode jobs = qmp.ok("query-block-jobs");
        assertThat(jobs.findValuesAsString("device")).containsExactly("j1", "j3");
        assertThat(jobs.findValuesAsString("status")).containsOnly("running");
        qmp.ok("job-cancel", map("id", "j1"));
        eventsUntil("j1", "null");
        qmp.ok("block-null", map("job-id", "j2", "device", "a")); // free again
        eventsUntil("j2", "null");
    }

    @Test
    void transactionsStartAllOrNothingAndGroupedJobsFailTogether() throws Exception {
        JsonNode e = qmp.error("transaction", map("actions", List.of(
                map("type", "block-null", "data", map("job-id", "t1", "device", "a")),
                map("type", "abort", "data", map()))));
        assertThat(e.get("desc").asString()).isEqualTo("Transaction aborted using Abort action");
        assertThat(qmp.ok("query-jobs").isEmpty()).as("nothing started").isTrue();
        e = qmp.error("transaction", map("actions", List.of(map("type", "drive-frobnicate", "data", map()))));
        assertThat(e.get("desc").asString()).contains("does not accept value 'drive-frobnicate'");
        e = qmp.error("transaction", map("actions", List.of(
                map("type", "block-null", "data", map("job-id", "t1", "device", "a")),
                map("type", "block-null", "data", map("job-id", "t2", "device", "a")))));
        assertThat(e.get("desc").asString()).contains("is busy");
        assertThat(qmp.ok("query-jobs").isEmpty()).as("the first action was undone").isTrue();

        // Grouped: cancelling one member cancels the other.
        qmp.ok("transaction", map("actions", List.of(
                        map("type", "block-null", "data", map("job-id", "g1", "device", "a", "speed", MIB)),
                        map("type", "block-null", "data", map("job-id", "g2", "device", "b", "speed", MIB))),
                "properties", map("completion-mode", "grouped")));
        eventsUntil("g2", "running");
        qmp.ok("job-cancel", map("id", "g2"));
        assertThat(eventsUntil("g1", "null")).contains("aborting", "BLOCK_JOB_CANCELLED", "concluded", "null");

        // Grouped and successful: both complete.
        qmp.ok("transaction", map("actions", List.of(
                        map("type", "block-null", "data", map("job-id", "h1", "device", "a")),
                        map("type", "block-null", "data", map("job-id", "h2", "device", "b"))),
                "properties", map("completion-mode", "grouped")));
        assertThat(eventsUntil("h1", "null")).contains("BLOCK_JOB_COMPLETED");
        assertThat(eventsUntil("h2", "null")).contains("BLOCK_JOB_COMPLETED");
    }

    /** A blkdebug node over {@code image} whose reads of {@code sector} fail with {@code errno}. */
    private void faulty(String name, String image, int errno, boolean once) throws Exception {
        qmp.ok("blockdev-add", map("driver", "blkdebug", "node-name", name, "image", image,
                "inject-error", List.of(map("event", "read_aio", "errno", errno, "sector", 4096, "once", once))));
    }

    @Test
    void onErrorStopPausesUntilResumedThenRetries() throws Exception {
        faulty("fa", "a", 5, true);
        qmp.ok("block-null", map("job-id", "st", "device", "fa", "on-error", "stop"));
        JsonNode error = qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true);
        assertThat(error.get("data").toString()).isEqualTo("{\"device\":\"st\",\"operation\":\"read\",\"action\":\"stop\"}");
        eventsUntil("st", "paused");
        JsonNode info = qmp.ok("query-block-jobs").get(0);
        assertThat(info.get("io-status").asString()).isEqualTo("failed");
        assertThat(info.get("paused").asBoolean()).isTrue();
        qmp.ok("job-resume", map("id", "st"));
        List<String> rest = eventsUntil("st", "null");
        assertThat(rest).containsSubsequence("running", "BLOCK_JOB_COMPLETED", "concluded", "null").doesNotContain("aborting");
    }

    @Test
    void onErrorReportIgnoreAndEnospc() throws Exception {
        faulty("fa", "a", 5, false);
        qmp.ok("block-null", map("job-id", "rep", "device", "fa", "on-error", "report", "auto-dismiss", false));
        assertThat(eventsUntil("rep", "concluded")).containsSubsequence("aborting", "BLOCK_JOB_COMPLETED", "concluded");
        assertThat(qmp.ok("query-jobs").get(0).get("error").asString()).isEqualTo("Input/output error");
        qmp.ok("job-dismiss", map("id", "rep"));

        qmp.ok("block-null", map("job-id", "ign", "device", "fa", "on-error", "ignore"));
        assertThat(qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true).at("/data/action").asString()).isEqualTo("ignore");
        assertThat(eventsUntil("ign", "null")).contains("BLOCK_JOB_COMPLETED").doesNotContain("aborting");

        // enospc: "no space" stops, anything else is reported.
        qmp.ok("block-null", map("job-id", "eio", "device", "fa", "on-error", "enospc"));
        assertThat(qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true).at("/data/action").asString()).isEqualTo("report");
        eventsUntil("eio", "null");
        faulty("fb", "b", 28, true);
        qmp.ok("block-null", map("job-id", "nos", "device", "fb", "on-error", "enospc"));
        assertThat(qmp.awaitEvent("BLOCK_JOB_ERROR", d -> true).at("/data/action").asString()).isEqualTo("stop");
        eventsUntil("nos", "paused");
        assertThat(qmp.ok("query-block-jobs").get(0).get("io-status").asString()).isEqualTo("nospace");
        qmp.ok("block-job-resume", map("device", "nos"));
        assertThat(eventsUntil("nos", "null")).contains("BLOCK_JOB_COMPLETED");
    }

    @Test
    void pluginsLoadAndUnloadAtRunTime() throws Exception {
        JsonNode nullPlugin = null;
        for (JsonNode p : qmp.ok("query-plugins")) {
            if (p.get("id").asString().equals("null-job")) {
                nullPlugin = p;
            }
        }
        assertThat(nullPlugin).as("the distribution's null plugin").isNotNull();
        assertThat(nullPlugin.get("state").asString()).isEqualTo("started");
        assertThat(nullPlugin.get("commands").get(0).asString()).isEqualTo("block-null");
        String jar = nullPlugin.get("path").asString();

        qmp.ok("block-null", map("job-id", "keep", "device", "a", "auto-dismiss", false));
        eventsUntil("keep", "concluded");
        assertThat(qmp.error("plugin-unload", map("id", "null-job")).get("desc").asString())
                .isEqualTo("Plugin 'null-job' has job 'keep'; cancel or dismiss it first");
        qmp.ok("job-dismiss", map("id", "keep"));
        qmp.ok("plugin-unload", map("id", "null-job"));
        assertThat(qmp.ok("query-commands").findValuesAsString("name")).doesNotContain("block-null");
        assertThat(qmp.error("block-null", map("device", "a")).get("class").asString()).isEqualTo("CommandNotFound");

        assertThat(qmp.ok("query-qmp-schema").findValuesAsString("name")).doesNotContain("block-null");

        assertThat(qmp.ok("plugin-load", map("path", jar)).get("id").asString()).isEqualTo("null-job");
        assertThat(qmp.ok("query-commands").findValuesAsString("name")).contains("block-null");
        // The plugged-in command is described like a built-in one, from its argument record.
        JsonNode schema = qmp.ok("query-qmp-schema");
        String argType = null;
        for (JsonNode e : schema) {
            if (e.get("name").asString().equals("block-null")) {
                argType = e.get("arg-type").asString();
            }
        }
        assertThat(argType).isNotNull();
        List<String> members = new ArrayList<>();
        for (JsonNode e : schema) {
            if (e.get("name").asString().equals(argType)) {
                e.get("members").forEach(m -> members.add(m.get("name").asString()));
            }
        }
        assertThat(members).contains("job-id", "device", "speed", "on-error", "auto-finalize", "auto-dismiss");
        qmp.ok("block-null", map("device", "a"));
        eventsUntil("a", "null");
    }

    @Test
    void aBrokenPluginIsReportedAndTheDaemonGoesOn() throws Exception {
        Path broken = dir.resolve("broken.jar");
        Files.write(broken, new byte[] {1, 2, 3, 4, 5});
        JsonNode e = qmp.error("plugin-load", map("path", broken.toString()));
        assertThat(e.get("desc").asString()).startsWith("Could not load plugin '" + broken + "'");
        JsonNode failed = null;
        for (JsonNode p : qmp.ok("query-plugins")) {
            if (p.get("state").asString().equals("failed")) {
                failed = p;
            }
        }
        assertThat(failed).isNotNull();
        assertThat(failed.get("path").asString()).isEqualTo(broken.toString());
        assertThat(failed.get("error").asString()).isNotEmpty();
        assertThat(qmp.ok("query-version").has("qemu")).isTrue();
        // A folder with a broken plugin beside nothing else still lets the daemon start.
        Path pluginsDir = Files.createDirectories(dir.resolve("more-plugins"));
        Files.copy(broken, pluginsDir.resolve("broken.jar"));
        Path other = Files.createDirectories(dir.resolve("other"));
        try (DaemonProcess d = DaemonProcess.startWithMonitor(other, List.of("--plugins", pluginsDir.toString()));
             QmpClient c = QmpClient.connect(d.qmpSocket)) {
            assertThat(c.ok("query-plugins").toString()).contains("broken.jar").contains("null-job");
        }
    }

    @Test
    void aPluginBuiltForAnotherSdkIsRefusedWithTheReason() throws Exception {
        String nullJar = null;
        for (JsonNode p : qmp.ok("query-plugins")) {
            if (p.get("id").asString().equals("null-job")) {
                nullJar = p.get("path").asString();
            }
        }
        assertThat(nullJar).isNotNull();
        // The distribution's null plugin, as if built for the SDK's next major version.
        String next = "^" + (Integer.parseInt(Sdk.VERSION.split("\\.")[0]) + 1) + ".0.0";
        Path future = dir.resolve("future.jar");
        try (java.util.zip.ZipFile in = new java.util.zip.ZipFile(nullJar);
             java.util.zip.ZipOutputStream out = new java.util.zip.ZipOutputStream(Files.newOutputStream(future))) {
            for (java.util.zip.ZipEntry e : java.util.Collections.list(in.entries())) {
                byte[] bytes = in.getInputStream(e).readAllBytes();
                if (e.getName().equals("plugin.properties")) {
                    String text = new String(bytes, java.nio.charset.StandardCharsets.ISO_8859_1);
                    assertThat(text).contains("plugin.requires=^" + Sdk.VERSION.split("\\.")[0] + ".");
                    bytes = text.replace("plugin.id=null-job", "plugin.id=future-job")
                            .replaceAll("plugin.requires=.*", "plugin.requires=" + next)
                            .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
                }
                out.putNextEntry(new java.util.zip.ZipEntry(e.getName()));
                out.write(bytes);
                out.closeEntry();
            }
        }
        String reason = "Plugin 'future-job' requires SDK " + next + " but this daemon provides SDK " + Sdk.VERSION
                + "; rebuild it against SDK " + Sdk.VERSION;
        assertThat(qmp.error("plugin-load", map("path", future.toString())).get("desc").asString()).isEqualTo(reason);
        JsonNode failed = null;
        for (JsonNode p : qmp.ok("query-plugins")) {
            if (p.get("path").asString().equals(future.toString())) {
                failed = p;
            }
        }
        assertThat(failed).isNotNull();
        assertThat(failed.get("state").asString()).isEqualTo("failed");
        assertThat(failed.get("error").asString()).isEqualTo(reason);
        assertThat(qmp.ok("query-commands").findValuesAsString("name")).contains("block-null");
    }
}
