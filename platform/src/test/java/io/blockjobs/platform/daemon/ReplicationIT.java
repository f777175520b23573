package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * The {@code replication} filter (plugin {@code colo}) beside qemu-storage-daemon 7.2's, which
 * has the driver but no command to start it: the options' refusals, the permissions it takes,
 * its requests before replication starts (refused), and COLO's primary graph, a {@code fifo}
 * quorum over the local disk and a replication node, which goes on with the local disk alone.
 */
class ReplicationIT {

    @TempDir
    Path dir;
    final List<StorageDaemon> daemons = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons) {
            d.close();
        }
    }

    private static String reply(StorageDaemon d, String command, Map<String, Object> args) throws Exception {
        JsonNode r = d.qmp.execute(command, args);
        return command + " -> " + (r.has("return") ? "ok" : r.path("error").path("desc").asString());
    }

    private static String io(StorageDaemon d, String node, String command) {
        Qemu.Result r = Qemu.run("qemu-io", "-f", "raw", "-c", command, d.nbdUri(node));
        String out = (r.out() + r.err()).lines().filter(l -> l.contains("failed") || l.contains("Pattern"))
                .findFirst().orElse("ok");
        return "qemu-io " + node + " " + command + " -> " + out;
    }

    @Test
    void optionsPermissionsAndRequestsBeforeStartAsOnQemu() throws Exception {
        List<List<String>> transcripts = new ArrayList<>();
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            Path local = d.resolve("local.qcow2");
            Path remote = d.resolve("remote.qcow2");
            for (Path p : List.of(local, remote)) {
                Qemu.img("create", "-q", "-f", "qcow2", p.toString(), "1M");
                Qemu.io(p, "qcow2", "write -P 0xaa 0 64k");
            }
            StorageDaemon daemon = StorageDaemon.start(kind, d, List.of());
            daemons.add(daemon);
            List<String> t = new ArrayList<>();
            Map<String, Object> file = map("driver", "qcow2", "node-name", "remote",
                    "file", map("driver", "file", "filename", remote.toString()));
            for (Map<String, Object> c : List.of(map("mode", "primary"), map("file", file),
                    map("file", file, "mode", "both"), map("file", file, "mode", "primary", "top-id", "top"),
                    map("file", file, "mode", "secondary"), map("file", "nope", "mode", "primary"),
                    map("file", file, "mode", "primary", "x", 1))) {
                Map<String, Object> args = new java.util.LinkedHashMap<>(map("driver", "replication", "node-name", "r"));
                args.putAll(c);
                t.add(reply(daemon, "blockdev-add", args));
            }
            t.add(reply(daemon, "blockdev-add", map("driver", "replication", "node-name", "r", "mode", "primary", "file", file)));
            t.add(reply(daemon, "blockdev-add", map("driver", "replication", "node-name", "s", "mode", "secondary",
                    "top-id", "top", "file", map("driver", "null-co", "node-name", "n"))));
            JsonNode g = daemon.qmp.ok("x-debug-query-block-graph");
            Map<Long, String> names = new TreeMap<>();
            g.path("nodes").forEach(n -> names.put(n.path("id").asLong(), n.path("name").asString()));
            List<String> edges = new ArrayList<>();
            g.path("edges").forEach(e -> {
                String parent = names.get(e.path("parent").asLong());
                if (parent.equals("r") || parent.equals("s")) {
                    List<String> perm = new ArrayList<>();
                    e.path("perm").forEach(p -> perm.add(p.asString()));
                    List<String> shared = new ArrayList<>();
                    e.path("shared-perm").forEach(p -> shared.add(p.asString()));
                    java.util.Collections.sort(perm);
                    java.util.Collections.sort(shared);
                    edges.add(parent + " " + e.path("name").asString() + " " + perm + " " + shared);
                }
            });
            java.util.Collections.sort(edges);
            t.addAll(edges);
            t.add(reply(daemon, "block-export-add", map("type", "nbd", "id", "er", "node-name", "r", "name", "r", "writable", true)));
            for (String c : List.of("read 0 4k", "write 0 4k", "write -z 0 4k", "discard 0 4k")) {
                t.add(io(daemon, "r", c));
            }
            t.add("map " + Qemu.run("qemu-img", "map", "--output=json", "-f", "raw", daemon.nbdUri("r")).ok().out().trim());
            t.add(reply(daemon, "block-export-del", map("id", "er")));
            daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> true);
            t.add(reply(daemon, "blockdev-del", map("node-name", "s")));
            // COLO's primary disk: quorum{fifo, vote-threshold 1} over the local disk and the replication node.
            t.add(reply(daemon, "blockdev-add", map("driver", "quorum", "node-name", "colo", "vote-threshold", 1,
                    "read-pattern", "fifo", "children", List.of(map("driver", "qcow2", "node-name", "local",
                            "file", map("driver", "file", "filename", local.toString())), "r"))));
            t.add(reply(daemon, "block-export-add", map("type", "nbd", "id", "ec", "node-name", "colo", "name", "colo",
                    "writable", true)));
            t.add(io(daemon, "colo", "write -P 0x22 0 4k"));
            JsonNode e = daemon.qmp.awaitEvent("QUORUM_REPORT_BAD", x -> true);
            t.add("event QUORUM_REPORT_BAD " + new TreeMap<>(Qemu.JSON.convertValue(e.path("data"), Map.class)));
            t.add(io(daemon, "colo", "read -P 0x22 0 4k"));
            daemon.quit();
            Qemu.assertClean(local);
            Qemu.assertClean(remote);
            Qemu.io(local, "qcow2", "read -P 0x22 0 4k");
            Qemu.io(remote, "qcow2", "read -P 0xaa 0 4k"); // replication had not started: nothing forwarded
            transcripts.add(t);
        }
        assertThat(transcripts.get(0)).as("blockjobd beside qemu-storage-daemon").isEqualTo(transcripts.get(1));
        assertThat(transcripts.get(1)).contains(
                "blockdev-add -> Parameter 'file' is missing",
                "blockdev-add -> Parameter 'mode' is missing",
                "blockdev-add -> Parameter 'mode' does not accept value 'both'",
                "blockdev-add -> The primary side does not support option top-id",
                "blockdev-add -> Missing the option top-id",
                "r file [consistent-read, write] [consistent-read, write, write-unchanged]",
                "qemu-io r read 0 4k -> read failed: Input/output error",
                "qemu-io r write 0 4k -> write failed: Input/output error",
                "event QUORUM_REPORT_BAD {error=Input/output error, node-name=r, sector-num=0, sectors-count=8, type=write}",
                "qemu-io colo read -P 0x22 0 4k -> ok");
    }

    /**
     * COLO's primary side between two blockjobd processes (qemu-storage-daemon has no command
     * that starts replication): the primary's disk is a {@code fifo} quorum over its local image,
     * and the replication node, hot-added with {@code x-blockdev-change}, forwards every write to
     * the secondary's NBD export. When the secondary is killed the primary's writers notice
     * nothing, the status says an error occurred, and failing over (the replication child leaves
     * the quorum, replication stops) leaves the primary serving alone with no write lost.
     */
    @Test
    void thePrimaryForwardsToTheSecondaryAndGoesOnAloneWhenItDies() throws Exception {
        Path sd = Files.createDirectories(dir.resolve("secondary"));
        Path pd = Files.createDirectories(dir.resolve("primary"));
        Path remote = sd.resolve("secondary.qcow2");
        Path local = pd.resolve("local.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", remote.toString(), "8M");
        Qemu.img("create", "-q", "-f", "qcow2", local.toString(), "8M");
        StorageDaemon secondary = StorageDaemon.start(Kind.BLOCKJOBD, sd, List.of(
                "--blockdev", "driver=qcow2,node-name=sdisk,file.driver=file,file.filename=" + remote,
                "--export", "type=nbd,id=s,node-name=sdisk,name=sdisk,writable=on"));
        daemons.add(secondary);
        StorageDaemon primary = StorageDaemon.start(Kind.BLOCKJOBD, pd, List.of());
        daemons.add(primary);
        var qmp = primary.qmp;
        qmp.ok("blockdev-add", map("driver", "quorum", "node-name", "colo", "vote-threshold", 1, "read-pattern", "fifo",
                "children", List.of(map("driver", "qcow2", "node-name", "local",
                        "file", map("driver", "file", "filename", local.toString())))));
        qmp.ok("blockdev-add", map("driver", "replication", "node-name", "r", "mode", "primary",
                "file", map("driver", "nbd", "node-name", "buddy", "export", "sdisk",
                        "server", map("type", "unix", "path", sd.resolve("nbd.sock").toString()))));
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo(
                "{\"error\":true,\"desc\":\"Block replication is not running\"}");
        qmp.ok("x-blockdev-change", map("parent", "colo", "node", "r"));
        qmp.ok("xen-set-replication", map("enable", true, "primary", true));
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        qmp.ok("xen-colo-do-checkpoint"); // nothing to do on a primary
        qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "colo", "name", "colo", "writable", true));

        Qemu.ioNbd(primary.nbdUri("colo"), "write -P 0x11 0 1M", "write -P 0x22 2M 64k", "read -P 0x11 0 1M");
        Qemu.ioNbd(secondary.nbdUri("sdisk"), "read -P 0x11 0 1M", "read -P 0x22 2M 64k"); // forwarded

        secondary.killHard();
        Qemu.ioNbd(primary.nbdUri("colo"), "write -P 0x33 4M 64k", "read -P 0x33 4M 64k"); // the writer notices nothing
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo(
                "{\"error\":true,\"desc\":\"I/O error occurred\"}");

        // Failover on the primary: the replication child leaves the quorum, replication stops.
        qmp.ok("x-blockdev-change", map("parent", "colo", "child", "children.1"));
        qmp.ok("xen-set-replication", map("enable", false, "primary", true));
        assertThat(qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
        Qemu.ioNbd(primary.nbdUri("colo"), "write -P 0x44 6M 64k", "read -P 0x11 0 1M", "read -P 0x22 2M 64k",
                "read -P 0x33 4M 64k", "read -P 0x44 6M 64k");
        primary.quit();
        Qemu.assertClean(local);
        Qemu.io(local, "qcow2", "read -P 0x11 0 1M", "read -P 0x22 2M 64k", "read -P 0x33 4M 64k", "read -P 0x44 6M 64k");
        Qemu.assertNoCorruption(remote);
        Qemu.io(remote, "qcow2", "read -P 0x11 0 1M", "read -P 0x22 2M 64k", "read -P 0 4M 64k");
    }
}
