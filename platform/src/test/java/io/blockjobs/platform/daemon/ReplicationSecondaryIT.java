package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The secondary side of block replication (plugin {@code colo}), QEMU's
 * {@code tests/unit/test-replication.c} secondary cases driven over QMP and NBD as a management
 * layer drives them: the secondary disk {@code local} holds 0x11 and takes the primary's writes
 * (0x22) through its export; the secondary VM writes (0x33) through the replication node's export,
 * into the active disk over the hidden disk over {@code local}.
 *
 * <p>QEMU's test checks its reads with {@code memcmp(...) <= 0}, so it passes whatever byte below
 * the pattern it reads; here every read checks the exact pattern. That shows one thing QEMU's test
 * claims and its code does not do: after a failover the primary's 0x22, written after the last
 * checkpoint and never seen by the secondary VM, is gone. The hidden disk kept 0x11 for the
 * secondary VM and the active commit writes it back, so the secondary disk reads what the
 * secondary VM read, 0x11. That is what COLO needs: the secondary takes over with its own view.
 */
class ReplicationSecondaryIT {
    static final String SIZE = "16M";
    static final String HALF = "8M";

    @TempDir
    Path dir;
    StorageDaemon daemon;
    QmpClient qmp;
    Path local;
    Path hidden;
    Path active;

    @BeforeEach
    void secondary() throws Exception {
        local = dir.resolve("s_local_disk.qcow2");
        hidden = dir.resolve("s_hidden_disk.qcow2");
        active = dir.resolve("s_active_disk.qcow2");
        for (Path p : List.of(local, hidden, active)) {
            Qemu.img("create", "-q", "-f", "qcow2", p.toString(), SIZE);
        }
        Qemu.io(local, "qcow2", "write -P 0x11 0 " + SIZE);
        daemon = StorageDaemon.start(Kind.BLOCKJOBD, dir, List.of());
        qmp = daemon.qmp;
        qmp.ok("blockdev-add", ColoLayout.qcow2("local", local, null));
        qmp.ok("blockdev-add", ColoLayout.qcow2("hidden", hidden, "local"));
        qmp.ok("blockdev-add", ColoLayout.qcow2("active", active, "hidden"));
        qmp.ok("blockdev-add", map("driver", "replication", "node-name", "s", "mode", "secondary", "top-id", "top",
                "file", "active"));
        qmp.ok("blockdev-add", map("driver", "quorum", "node-name", "top", "vote-threshold", 1, "read-pattern", "fifo",
                "children", List.of("s")));
        qmp.ok("block-export-add", map("type", "nbd", "id", "e-local", "node-name", "local", "name", "local",
                "writable", true));
        qmp.ok("block-export-add", map("type", "nbd", "id", "e-top", "node-name", "top", "name", "top", "writable", true));
    }

    @AfterEach
    void stop() throws Exception {
        if (daemon != null) {
            daemon.close();
        }
    }

    private void top(String... commands) {
        Qemu.ioNbd(daemon.nbdUri("top"), commands);
    }

    private void primaryWrites(String... commands) {
        Qemu.ioNbd(daemon.nbdUri("local"), commands);
    }

    private void start() throws Exception {
        qmp.ok("xen-set-replication", map("enable", true, "primary", false));
    }

    /** Fails over as a management layer does on a lost heartbeat, and waits for the end. */
    private void failover() throws Exception {
        qmp.ok("x-colo-lost-heartbeat");
        var exit = qmp.awaitEvent("COLO_EXIT", e -> true);
        assertThat(exit.path("data").toString()).isEqualTo("{\"mode\":\"secondary\",\"reason\":\"request\"}");
    }

    private void quitAndCheck() throws Exception {
        daemon.quit();
        for (Path p : List.of(local, hidden, active)) {
            Qemu.assertClean(p);
        }
    }

    /** test_secondary_start. */
    @Test
    void startKeepsTheSecondaryVmsViewWhileThePrimaryWrites() throws Exception {
        start();
        top("read -P 0x11 0 " + SIZE);
        primaryWrites("write -P 0x22 " + HALF + " " + HALF);
        top("read -P 0x11 " + HALF + " " + HALF); // the hidden disk kept what the secondary VM saw
        top("write -P 0x33 0 " + HALF, "read -P 0x33 0 " + HALF);
        primaryWrites("read -P 0x11 0 " + HALF, "read -P 0x22 " + HALF + " " + HALF); // the secondary disk has the primary's
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        failover();
        quitAndCheck();
    }

    /** test_secondary_stop: the failover's active commit; the secondary VM's view survives it. */
    @Test
    void failoverCommitsTheSecondaryVmsViewIntoTheSecondaryDisk() throws Exception {
        assertThat(qmp.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"none\",\"last-mode\":\"none\",\"reason\":\"none\"}");
        assertThat(qmp.error("x-colo-lost-heartbeat", null).path("desc").asString())
                .isEqualTo("The feature 'colo' is not enabled");
        start();
        assertThat(qmp.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"secondary\",\"last-mode\":\"none\",\"reason\":\"none\"}");
        primaryWrites("write -P 0x22 " + HALF + " " + HALF);
        top("read -P 0x11 " + HALF + " " + HALF);
        top("write -P 0x33 0 " + HALF);
        failover();
        assertThat(qmp.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"none\",\"last-mode\":\"secondary\",\"reason\":\"request\"}");
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        top("read -P 0x33 0 " + HALF, "read -P 0x11 " + HALF + " " + HALF);
        primaryWrites("read -P 0x33 0 " + HALF, "read -P 0x11 " + HALF + " " + HALF); // the secondary disk holds it all
        top("write -P 0x44 0 64k"); // and takes the secondary's writes from now on
        primaryWrites("read -P 0x44 0 64k");
        quitAndCheck();
        Qemu.io(local, "qcow2", "read -P 0x44 0 64k", "read -P 0x33 64k 8128k", "read -P 0x11 " + HALF + " " + HALF);
    }

    /** test_secondary_continuous_replication: after failover the secondary starts as a primary and checkpoints. */
    @Test
    void afterFailoverTheSecondaryStartsAsAPrimaryAndCheckpoints() throws Exception {
        start();
        primaryWrites("write -P 0x22 " + HALF + " " + HALF);
        top("read -P 0x11 " + HALF + " " + HALF);
        top("write -P 0x33 0 " + HALF);
        failover();
        qmp.ok("xen-set-replication", map("enable", true, "primary", true)); // ignored: nothing left to do
        qmp.ok("xen-colo-do-checkpoint");
        qmp.ok("xen-set-replication", map("enable", false, "primary", true, "failover", true));
        top("read -P 0x33 0 " + HALF, "read -P 0x11 " + HALF + " " + HALF);
        quitAndCheck();
    }

    /** test_secondary_do_checkpoint: after a checkpoint the secondary VM sees the primary's writes, and its own are gone. */
    @Test
    void aCheckpointEmptiesTheActiveAndHiddenDisks() throws Exception {
        start();
        primaryWrites("write -P 0x22 " + HALF + " " + HALF);
        top("read -P 0x11 " + HALF + " " + HALF);
        top("write -P 0x33 0 64k");
        qmp.ok("xen-colo-do-checkpoint");
        top("read -P 0x11 0 64k", "read -P 0x22 " + HALF + " " + HALF);
        primaryWrites("write -P 0x55 " + HALF + " 64k"); // after the checkpoint the hidden disk copies again
        top("read -P 0x22 " + HALF + " 64k");
        qmp.ok("xen-colo-do-checkpoint");
        top("read -P 0x55 " + HALF + " 64k");
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        quitAndCheck();
        for (Path p : List.of(active, hidden)) {
            assertThat(Qemu.img("map", "--output=json", "--image-opts",
                    "driver=qcow2,backing.driver=null-co,backing.size=" + (16 << 20) + ",file.filename=" + p).out())
                    .as("%s after the checkpoint", p.getFileName()).doesNotContain("\"depth\": 0");
        }
    }

    /** test_secondary_get_error_all, and QEMU's refusals of a start, in its words. */
    @Test
    void theStartChecksTheChainAsQemu() throws Exception {
        Path raw = dir.resolve("raw.img");
        Qemu.img("create", "-q", "-f", "raw", raw.toString(), SIZE);
        Path small = dir.resolve("small.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", small.toString(), "8M");
        create(dir.resolve("lone.qcow2"));
        create(dir.resolve("a2.qcow2"));
        qmp.ok("blockdev-add", ColoLayout.qcow2("lone", dir.resolve("lone.qcow2"), null));
        // a hidden disk over a secondary disk that nothing exports, and a chain whose secondary disk is exported
        for (String n : List.of("h6", "a6", "l8", "h8", "a8", "a9", "a10")) {
            create(dir.resolve(n + ".qcow2"));
        }
        qmp.ok("blockdev-add", ColoLayout.qcow2("h6", dir.resolve("h6.qcow2"), "lone"));
        qmp.ok("blockdev-add", ColoLayout.qcow2("l8", dir.resolve("l8.qcow2"), null));
        qmp.ok("blockdev-add", ColoLayout.qcow2("h8", dir.resolve("h8.qcow2"), "l8"));
        qmp.ok("block-export-add", map("type", "nbd", "id", "e-l8", "node-name", "l8", "name", "l8", "writable", true));
        record Refusal(java.util.Map<String, Object> file, String message, String topId) {
            Refusal(java.util.Map<String, Object> file, String message) {
                this(file, message, null); // top-id: the replication node itself, a valid top
            }
        }
        List<Refusal> refusals = List.of(
                new Refusal(map("driver", "qcow2", "node-name", "a1", "file", map("driver", "file", "filename",
                        small.toString()), "backing", null), "Active disk doesn't have backing file"),
                new Refusal(ColoLayout.qcow2("a2", dir.resolve("a2.qcow2"), "lone"), "Hidden disk doesn't have backing file"),
                new Refusal(ColoLayout.qcow2("a3", small, "hidden"), "Active disk, hidden disk, secondary disk's length are not the same"),
                new Refusal(map("driver", "raw", "node-name", "a4", "file", map("driver", "file", "filename", raw.toString())),
                        "Active disk doesn't have backing file"),
                new Refusal(ColoLayout.qcow2("a6", dir.resolve("a6.qcow2"), "h6"), "The secondary disk doesn't have block backend"),
                new Refusal(ColoLayout.qcow2("a8", dir.resolve("a8.qcow2"), "h8"), "No top_bs or it is invalid", "nowhere"),
                // h8 has a parent (the active disk), so it is no top; top has none, but this replication is not below it
                new Refusal(ColoLayout.qcow2("a9", dir.resolve("a9.qcow2"), "h8"), "No top_bs or it is invalid", "h8"),
                new Refusal(ColoLayout.qcow2("a10", dir.resolve("a10.qcow2"), "h8"), "No top_bs or it is invalid", "top"));
        for (Refusal r : refusals) {
            String name = "r-" + r.file().get("node-name");
            qmp.ok("blockdev-add", map("driver", "replication", "node-name", name, "mode", "secondary", "top-id",
                    r.topId() == null ? name : r.topId(), "file", r.file()));
            assertThat(qmp.error("xen-set-replication", map("enable", true, "primary", false)).path("desc").asString())
                    .as("%s", r.file()).isEqualTo(r.message());
            qmp.ok("blockdev-del", map("node-name", name));
        }
        start();
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        assertThat(qmp.error("xen-set-replication", map("enable", true, "primary", false)).path("desc").asString())
                .isEqualTo("Block replication is running or done");
        failover();
        assertThat(qmp.error("x-colo-lost-heartbeat", null).path("desc").asString())
                .isEqualTo("The feature 'colo' is not enabled");
        quitAndCheck();
    }

    /**
     * QEMU's {@code bdrv_has_blk} and {@code bdrv_is_root_node} count BlockBackends (an export's, a
     * job's own), not the edges a block job holds on the nodes it works on ({@code child_job}): a
     * secondary disk that only a backup writes into has no block backend, and a top that is a
     * mirror's target is no top; qemu-system-x86_64 7.2 refuses both with these words. Without the
     * job the same chain starts (QEMU 7.2 aborts on that retry after "No top_bs or it is invalid").
     */
    @Test
    void aBlockJobsEdgesAreNeitherABlockBackendNorATopAsInQemu() throws Exception {
        for (String n : List.of("src", "l1", "h1", "a1")) {
            create(dir.resolve(n + ".qcow2"));
        }
        qmp.ok("blockdev-add", ColoLayout.qcow2("src", dir.resolve("src.qcow2"), null));
        qmp.ok("blockdev-add", ColoLayout.qcow2("l1", dir.resolve("l1.qcow2"), null));
        qmp.ok("blockdev-add", ColoLayout.qcow2("h1", dir.resolve("h1.qcow2"), "l1"));
        qmp.ok("blockdev-add", map("driver", "replication", "node-name", "r1", "mode", "secondary", "top-id", "r1",
                "file", ColoLayout.qcow2("a1", dir.resolve("a1.qcow2"), "h1")));
        // the secondary disk l1 is written only by a backup job: its target edge and its filter's child
        qmp.ok("blockdev-backup", map("job-id", "b", "device", "src", "target", "l1", "sync", "none"));
        assertThat(qmp.error("xen-set-replication", map("enable", true, "primary", false)).path("desc").asString())
                .isEqualTo("The secondary disk doesn't have block backend");
        qmp.ok("block-job-cancel", map("device", "b"));
        qmp.awaitEvent("BLOCK_JOB_CANCELLED", e -> e.path("device").asString().equals("b"));
        // l1 exported, but the top, r1, is a mirror's target
        qmp.ok("block-export-add", map("type", "nbd", "id", "e-l1", "node-name", "l1", "name", "l1", "writable", true));
        qmp.ok("blockdev-mirror", map("job-id", "m", "device", "src", "target", "r1", "sync", "none"));
        qmp.awaitEvent("BLOCK_JOB_READY", e -> e.path("device").asString().equals("m"));
        assertThat(qmp.error("xen-set-replication", map("enable", true, "primary", false)).path("desc").asString())
                .isEqualTo("No top_bs or it is invalid");
        qmp.ok("block-job-cancel", map("device", "m"));
        qmp.awaitEvent("BLOCK_JOB_COMPLETED", e -> e.path("device").asString().equals("m"));
        start(); // r1 and s
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        qmp.ok("xen-set-replication", map("enable", false, "primary", false));
        quitAndCheck();
    }

    private static void create(Path p) {
        Qemu.img("create", "-q", "-f", "qcow2", p.toString(), SIZE);
    }
}
