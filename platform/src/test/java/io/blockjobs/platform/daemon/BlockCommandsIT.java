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
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/** Graph commands through the real daemon, checked with qemu-img. */
class BlockCommandsIT {

    @TempDir
    Path dir;
    DaemonProcess daemon;
    QmpClient qmp;

    @BeforeEach
    void start() throws Exception {
        daemon = DaemonProcess.startWithMonitor(dir, List.of());
        qmp = QmpClient.connect(daemon.qmpSocket);
    }

    @AfterEach
    void stop() throws Exception {
        qmp.close();
        daemon.close();
    }


    /** Runs blockdev-create to its end as libvirt does; returns the job's statuses in order. */
    private List<String> create(String jobId, Map<String, Object> options) throws Exception {
        qmp.ok("blockdev-create", map("job-id", jobId, "options", options));
        List<String> statuses = new ArrayList<>();
        while (true) {
            JsonNode e = qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("id").asString().equals(jobId));
            String status = e.at("/data/status").asString();
            statuses.add(status);
            if (status.equals("concluded")) {
                break;
            }
        }
        return statuses;
    }

    @Test
    void blockdevCreateIsAJobWithQemusStates() throws Exception {
        Path image = dir.resolve("new.qcow2");
        assertThat(create("c1", map("driver", "file", "filename", image.toString(), "size", 0)))
                .containsExactly("created", "running", "waiting", "pending", "concluded");
        JsonNode jobs = qmp.ok("query-jobs");
        assertThat(jobs.get(0).get("id").asString()).isEqualTo("c1");
        assertThat(jobs.get(0).get("type").asString()).isEqualTo("create");
        assertThat(jobs.get(0).get("status").asString()).isEqualTo("concluded");
        assertThat(jobs.get(0).has("error")).isFalse();
        qmp.ok("job-dismiss", map("id", "c1"));
        qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("status").asString().equals("null"));
        assertThat(qmp.ok("query-jobs").isEmpty()).isTrue();
        assertThat(qmp.error("job-dismiss", map("id", "c1")).get("desc").asString()).isEqualTo("Job not found");

        qmp.ok("blockdev-add", map("driver", "file", "node-name", "new-file", "filename", image.toString()));
        create("c2", map("driver", "qcow2", "file", "new-file", "size", 64 << 20, "cluster-size", 4096, "version", "v3"));
        qmp.ok("job-dismiss", map("id", "c2"));
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "new", "file", "new-file"));
        JsonNode info = node("new");
        assertThat(info.at("/image/virtual-size").asLong()).isEqualTo(64 << 20);
        assertThat(info.at("/image/cluster-size").asInt()).isEqualTo(4096);
        qmp.ok("blockdev-del", map("node-name", "new"));
        qmp.ok("blockdev-del", map("node-name", "new-file"));
        JsonNode qemuInfo = Qemu.info(image);
        assertThat(qemuInfo.get("format").asString()).isEqualTo("qcow2");
        assertThat(qemuInfo.get("cluster-size").asInt()).isEqualTo(4096);
        Qemu.assertClean(image);
    }

    @Test
    void aFailedCreateConcludesWithItsError() throws Exception {
        Path image = dir.resolve("bad.qcow2");
        Files.createFile(image);
        qmp.ok("blockdev-add", map("driver", "file", "node-name", "f", "filename", image.toString()));
        List<String> statuses = create("bad", map("driver", "qcow2", "file", "f", "size", 1 << 20, "cluster-size", 3000));
        assertThat(statuses).containsExactly("created", "running", "aborting", "concluded");
        JsonNode job = qmp.ok("query-jobs").get(0);
        assertThat(job.get("error").asString()).contains("cluster size 3000");
        assertThat(qmp.error("job-finalize", map("id", "bad")).get("desc").asString())
                .isEqualTo("Job 'bad' in state 'concluded' cannot accept command verb 'finalize'");
        qmp.ok("job-dismiss", map("id", "bad"));
        // Options that cannot work are refused before any job starts.
        JsonNode e = qmp.error("blockdev-create", map("job-id", "x", "options", map("driver", "vmdk")));
        assertThat(e.get("desc").asString()).contains("does not accept value 'vmdk'");
        e = qmp.error("blockdev-create", map("job-id", "x", "options", map("driver", "qcow2", "file", "nope", "size", 1)));
        assertThat(e.get("desc").asString()).contains("nope");
        assertThat(qmp.ok("query-jobs").isEmpty()).isTrue();
    }

    @Test
    void blockdevAddAndDel() throws Exception {
        Path image = dir.resolve("a.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "16M");
        qmp.ok("blockdev-add", map("driver", "file", "node-name", "af", "filename", image.toString()));
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "a", "file", "af", "read-only", false));
        JsonNode a = node("a");
        assertThat(a.get("drv").asString()).isEqualTo("qcow2");
        assertThat(a.get("ro").asBoolean()).isFalse();
        assertThat(a.get("file").asString()).isEqualTo(image.toString());
        assertThat(a.at("/image/format").asString()).isEqualTo("qcow2");

        assertThat(qmp.error("blockdev-add", map("driver", "file", "node-name", "af", "filename", image.toString()))
                .get("desc").asString()).isEqualTo("Duplicate nodes with node-name='af'");
        assertThat(qmp.error("blockdev-add", map("driver", "nfs", "node-name", "n")).get("desc").asString())
                .isEqualTo("Parameter 'driver' does not accept value 'nfs'");
        assertThat(qmp.error("blockdev-add", map("driver", "file", "node-name", "m", "filename", dir.resolve("missing").toString()))
                .get("desc").asString()).contains("missing").contains("no such file");
        assertThat(qmp.error("blockdev-add", map("driver", "file", "node-name", "m", "filename", "x", "color", "red"))
                .get("desc").asString()).isEqualTo("Parameter 'color' is unexpected");
        assertThat(qmp.error("blockdev-add", map("driver", "file", "filename", image.toString()))
                .get("desc").asString()).isEqualTo("Parameter 'node-name' is missing");
        // QEMU 7.2's words: a node a parent uses, and a node a user (an export) holds.
        assertThat(qmp.error("blockdev-del", map("node-name", "af")).get("desc").asString())
                .isEqualTo("Block device af is in use");
        qmp.ok("block-export-add", map("type", "nbd", "id", "ea", "node-name", "a"));
        assertThat(qmp.error("blockdev-del", map("node-name", "a")).get("desc").asString())
                .isEqualTo("Node a is in use");
        qmp.ok("block-export-del", map("id", "ea"));
        qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> d.get("id").asString().equals("ea"));
        qmp.ok("blockdev-del", map("node-name", "a"));
        qmp.ok("blockdev-del", map("node-name", "af"));
        assertThat(qmp.ok("query-named-block-nodes").isEmpty()).isTrue();
        // Closed means unlocked: QEMU may write the image again.
        Qemu.io(image, "qcow2", "write 0 64k");
    }

    @Test
    void snapshotSyncPutsAnOverlayUnderTheExport() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "32M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 4M");
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "disk", "file",
                map("driver", "file", "filename", base.toString())));
        qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "disk", "writable", true));
        Path overlay = dir.resolve("snap.qcow2");
        qmp.ok("blockdev-snapshot-sync", map("node-name", "disk", "snapshot-file", overlay.toString(),
                "snapshot-node-name", "snap", "format", "qcow2"));
        assertThat(qmp.ok("query-block-exports").get(0).get("node-name").asString()).isEqualTo("snap");
        Qemu.ioNbd(daemon.nbdUri("disk"), "read -P 0x11 0 4M", "write -P 0x22 1M 1M");
        assertThat(node("snap").get("backing_file_depth").asInt()).isEqualTo(1);
        qmp.ok("quit");
        assertThat(daemon.awaitExit()).isZero();
        Qemu.assertClean(overlay);
        Qemu.assertClean(base);
        JsonNode info = Qemu.info(overlay);
        assertThat(info.get("full-backing-filename").asString()).isEqualTo(base.toString());
        Qemu.io(base, "qcow2", "read -P 0x11 0 4M"); // the base kept its data
        Qemu.io(overlay, "qcow2", "read -P 0x11 0 1M", "read -P 0x22 1M 1M", "read -P 0x11 2M 2M");
    }

    @Test
    void snapshotWithAnOverlayMadeByBlockdevCreate() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "32M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 1M");
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "disk", "file",
                map("driver", "file", "filename", base.toString())));
        Path overlay = dir.resolve("ov.qcow2");
        create("c", map("driver", "file", "filename", overlay.toString(), "size", 0));
        qmp.ok("blockdev-add", map("driver", "file", "node-name", "ov-file", "filename", overlay.toString()));
        create("c2", map("driver", "qcow2", "file", "ov-file", "size", 32 << 20,
                "backing-file", base.toString(), "backing-fmt", "qcow2"));
        qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "ov", "file", "ov-file", "backing", null));
        assertThat(qmp.error("blockdev-snapshot", map("node", "disk", "overlay", "ov-file")).get("desc").asString())
                .isEqualTo("The overlay does not support backing images");
        assertThat(qmp.error("blockdev-snapshot", map("node", "disk", "overlay", "disk")).get("desc").asString())
                .contains("part of the backing chain");
        qmp.ok("blockdev-snapshot", map("node", "disk", "overlay", "ov"));
        assertThat(qmp.error("blockdev-snapshot", map("node", "ov", "overlay", "disk")).get("desc").asString())
                .contains("part of the backing chain");
        assertThat(qmp.error("blockdev-snapshot", map("node", "disk", "overlay", "ov")).get("desc").asString())
                .isEqualTo("The overlay already has a backing image");
        qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "ov", "writable", true));
        Qemu.ioNbd(daemon.nbdUri("ov"), "read -P 0x11 0 1M", "write -P 0x33 8M 1M");
        qmp.ok("quit");
        daemon.awaitExit();
        Qemu.assertClean(overlay);
        Qemu.io(overlay, "qcow2", "read -P 0x11 0 1M", "read -P 0x33 8M 1M");
    }

    private JsonNode node(String name) throws Exception {
        for (JsonNode n : qmp.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(name)) {
                return n;
            }
        }
        throw new AssertionError("no node " + name);
    }
}
