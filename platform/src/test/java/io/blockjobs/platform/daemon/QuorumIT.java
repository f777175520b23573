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
 * The {@code quorum} driver (plugin {@code colo}) beside qemu-storage-daemon 7.2's: the same QMP,
 * the same qemu-io over NBD, on each daemon's own copy of the images; each step's replies, events
 * and qemu-io results go into a transcript, and the two transcripts must be equal (and say what
 * QEMU says). Children are corrupted behind the quorum's back with qemu-io on their files while
 * no quorum has them open, and fail requests through {@code blkdebug}; {@code qemu-img} judges the
 * images afterwards.
 */
class QuorumIT {
    private static final long K = 1024;

    @TempDir
    Path dir;
    final List<StorageDaemon> daemons = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons) {
            d.close();
        }
    }

    /** One daemon's run: its images, its QMP, and what it said. */
    private final class Run {
        final Path d;
        final StorageDaemon daemon;
        final List<String> transcript = new ArrayList<>();

        Run(Kind kind) throws Exception {
            d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            for (int i = 0; i < 5; i++) {
                Qemu.img("create", "-q", "-f", "qcow2", image(i).toString(), "1M");
            }
            daemon = StorageDaemon.start(kind, d, List.of());
            daemons.add(daemon);
        }

        Path image(int i) {
            return d.resolve("c" + i + ".qcow2");
        }

        Map<String, Object> qcow2(int i) {
            return map("driver", "qcow2", "node-name", "c" + i, "file", map("driver", "file", "filename", image(i).toString()));
        }

        /** Child i as raw over blkdebug over its qcow2 image: raw's reads raise blkdebug's read_aio in QEMU. */
        Map<String, Object> failingReads(int i, int errno) {
            return map("driver", "raw", "node-name", "c" + i, "file", map("driver", "blkdebug", "node-name", "d" + i,
                    "inject-error", List.of(map("event", "read_aio", "iotype", "read", "errno", errno)),
                    "image", map("driver", "qcow2", "node-name", "i" + i,
                            "file", map("driver", "file", "filename", image(i).toString()))));
        }

        /** Child i as qcow2 over blkdebug: qcow2's data writes raise write_aio. */
        Map<String, Object> failingWrites(int i, int errno) {
            return map("driver", "qcow2", "node-name", "c" + i, "file", map("driver", "blkdebug", "node-name", "d" + i,
                    "inject-error", List.of(map("event", "write_aio", "iotype", "write", "errno", errno)),
                    "image", map("driver", "file", "filename", image(i).toString())));
        }

        /** Sends a command; records its reply as the transcript's line ({@code ok} or the error's text). */
        String qmp(String command, Map<String, Object> args) throws Exception {
            JsonNode r = daemon.qmp.execute(command, args);
            String line = r.has("return") ? "ok" : r.path("error").path("class").asString() + ": "
                    + r.path("error").path("desc").asString();
            transcript.add(command + " -> " + line);
            return line;
        }

        void exportNode(String node) throws Exception {
            qmp("block-export-add", map("type", "nbd", "id", "e-" + node, "node-name", node, "name", node, "writable", true));
        }

        void deleteExportAndNode(String node) throws Exception {
            qmp("block-export-del", map("id", "e-" + node));
            daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.path("id").asString().equals("e-" + node));
            qmp("blockdev-del", map("node-name", node));
        }

        /** qemu-io on an export; records whether it failed and how, without its timings. */
        String io(String node, String... commands) {
            List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            for (String c : commands) {
                cmd.add("-c");
                cmd.add(c);
            }
            cmd.add(daemon.nbdUri(node));
            Qemu.Result r = Qemu.run(cmd.toArray(String[]::new));
            StringBuilder line = new StringBuilder("qemu-io " + String.join("; ", commands) + " ->");
            for (String l : (r.out() + r.err()).split("\n")) {
                if (l.contains("failed") || l.contains("Pattern verification")) {
                    line.append(' ').append(l.trim());
                }
            }
            transcript.add(line.toString());
            return line.toString();
        }

        /** Waits for {@code count} quorum events and records them, members sorted (QEMU's dictionary order is its own). */
        void events(int count) {
            for (int i = 0; i < count; i++) {
                JsonNode e = daemon.qmp.awaitEvent("", x -> true);
                while (!e.path("event").asString().startsWith("QUORUM_")) {
                    e = daemon.qmp.awaitEvent("", x -> true);
                }
                Map<String, String> data = new TreeMap<>();
                e.path("data").properties().forEach(m -> data.put(m.getKey(), m.getValue().asString()));
                transcript.add("event " + e.path("event").asString() + " " + data);
            }
        }
    }

    private static final String FAILURE_0 = "event QUORUM_FAILURE {reference=q, sector-num=0, sectors-count=8}";

    @Test
    void refusalsAreQemusWordForWord() throws Exception {
        List<List<String>> transcripts = new ArrayList<>();
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Run r = new Run(kind);
            Qemu.img("create", "-q", "-f", "qcow2", r.d.resolve("big.qcow2").toString(), "2M");
            Map<String, Object> big = map("driver", "qcow2", "node-name", "big", "file",
                    map("driver", "file", "filename", r.d.resolve("big.qcow2").toString()));
            List<Map<String, Object>> cases = List.of(
                    map("vote-threshold", 2),
                    map("children", List.of()),
                    map("children", List.of(), "vote-threshold", 2),
                    map("children", "c0", "vote-threshold", 2),
                    map("children", List.of(r.qcow2(0)), "vote-threshold", 0),
                    map("children", List.of(r.qcow2(0)), "vote-threshold", 2),
                    map("children", List.of(r.qcow2(0)), "vote-threshold", 1, "read-pattern", "random"),
                    map("children", List.of(r.qcow2(0), r.qcow2(1), r.qcow2(2)), "vote-threshold", 2, "blkverify", true),
                    map("children", List.of(r.qcow2(0), r.qcow2(1)), "vote-threshold", 2, "blkverify", true,
                            "rewrite-corrupted", true),
                    map("children", List.of(r.qcow2(0), "nope"), "vote-threshold", 1),
                    map("children", List.of(r.qcow2(0)), "vote-threshold", 1, "size", 1),
                    map("children", List.of(r.qcow2(0), big), "vote-threshold", 1));
            for (Map<String, Object> c : cases) {
                Map<String, Object> args = new java.util.LinkedHashMap<>(map("driver", "quorum", "node-name", "q"));
                args.putAll(c);
                r.qmp("blockdev-add", args);
            }
            // fifo ignores blkverify, as QEMU reads it only for the quorum pattern
            r.qmp("blockdev-add", map("driver", "quorum", "node-name", "q", "children", List.of(r.qcow2(0), r.qcow2(1)),
                    "vote-threshold", 1, "blkverify", true, "read-pattern", "fifo"));
            r.qmp("blockdev-del", map("node-name", "q"));
            // x-blockdev-change on a blkverify quorum and at the threshold
            r.qmp("blockdev-add", map("driver", "quorum", "node-name", "q", "children", List.of(r.qcow2(0), r.qcow2(1)),
                    "vote-threshold", 2, "blkverify", true));
            r.qmp("blockdev-add", r.qcow2(2));
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c2"));
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.0"));
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.5"));
            r.qmp("x-blockdev-change", map("parent", "c2", "node", "c0"));
            r.qmp("x-blockdev-change", map("parent", "c0", "child", "file"));
            // what QEMU's quorum has no driver hooks for
            r.qmp("blockdev-reopen", map("options", List.of(map("driver", "quorum", "node-name", "q",
                    "children", List.of("c0", "c1"), "vote-threshold", 2, "blkverify", true, "read-only", true))));
            r.qmp("block_resize", map("node-name", "q", "size", 2 * K * K));
            r.qmp("blockdev-snapshot-internal-sync", map("device", "q", "name", "s"));
            r.daemon.quit();
            for (int i = 0; i < 3; i++) {
                Qemu.assertClean(r.image(i));
            }
            transcripts.add(r.transcript);
        }
        assertThat(transcripts.get(0)).as("blockjobd beside qemu-storage-daemon").isEqualTo(transcripts.get(1));
        assertThat(transcripts.get(1)).containsExactly(
                "blockdev-add -> GenericError: Parameter 'children' is missing",
                "blockdev-add -> GenericError: Parameter 'vote-threshold' is missing",
                "blockdev-add -> GenericError: Number of provided children must be 1 or more",
                "blockdev-add -> GenericError: Invalid parameter type for 'children', expected: array",
                "blockdev-add -> GenericError: Parameter 'vote-threshold' expects a value >= 1",
                "blockdev-add -> GenericError: threshold may not exceed children count",
                "blockdev-add -> GenericError: Parameter 'read-pattern' does not accept value 'random'",
                "blockdev-add -> GenericError: blkverify=on can only be set if there are exactly two files and vote-threshold is 2",
                "blockdev-add -> GenericError: rewrite-corrupted=on cannot be used with blkverify=on",
                "blockdev-add -> GenericError: Cannot find device='nope' nor node-name='nope'",
                "blockdev-add -> GenericError: Parameter 'size' is unexpected",
                "blockdev-add -> GenericError: Could not refresh total sector count: Input/output error",
                "blockdev-add -> ok",
                "blockdev-del -> ok",
                "blockdev-add -> ok",
                "blockdev-add -> ok",
                "x-blockdev-change -> GenericError: Cannot add a child to a quorum in blkverify mode",
                "x-blockdev-change -> GenericError: The number of children cannot be lower than the vote threshold 2",
                "x-blockdev-change -> GenericError: Node 'q' does not have child 'children.5'",
                "x-blockdev-change -> GenericError: The node c2 does not support adding a child",
                "x-blockdev-change -> GenericError: The node c0 does not support removing a child",
                "blockdev-reopen -> GenericError: Block format 'quorum' used by node 'q' does not support reopening files",
                "block_resize -> GenericError: Image format driver does not support resize",
                "blockdev-snapshot-internal-sync -> GenericError: Block format 'quorum' used by device 'q' does not support"
                        + " internal snapshots");
    }

    @Test
    void theMajorityWinsTheLoserIsReportedAndRewriteCorruptedRepairsIt() throws Exception {
        List<List<String>> transcripts = new ArrayList<>();
        List<JsonNode> maps = new ArrayList<>();
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Run r = new Run(kind);
            Map<String, Object> quorum = map("driver", "quorum", "node-name", "q", "vote-threshold", 2,
                    "children", List.of(r.qcow2(0), r.qcow2(1), r.qcow2(2)));
            r.qmp("blockdev-add", quorum);
            r.exportNode("q");
            r.io("q", "write -P 0xaa 0 256k", "write -z 512k 64k", "read -P 0xaa 0 256k");
            r.deleteExportAndNode("q");
            for (int i = 0; i < 3; i++) {
                Qemu.assertClean(r.image(i));
                assertThat(Qemu.identical(r.image(0), "qcow2", r.image(i), "qcow2")).as("%s: child %d", kind, i).isTrue();
            }
            // Behind the quorum's back: c2 differs at 64k; at 128k all three differ.
            Qemu.io(r.image(2), "qcow2", "write -P 0xbb 64k 4k", "write -P 0xdd 128k 4k");
            Qemu.io(r.image(1), "qcow2", "write -P 0xcc 128k 4k");

            r.qmp("blockdev-add", quorum);
            r.exportNode("q");
            r.io("q", "read -P 0xaa 66k 1k"); // sectors 132..133: the request's, not the cluster's
            r.events(1);
            r.io("q", "read 128k 4k");
            r.events(1);
            maps.add(Qemu.JSON.readTree(Qemu.run("qemu-img", "map", "--output=json", "-f", "raw",
                    r.daemon.nbdUri("q")).ok().out()));
            r.deleteExportAndNode("q");
            assertThat(Qemu.identical(r.image(0), "qcow2", r.image(2), "qcow2")).isFalse(); // reads repaired nothing

            Map<String, Object> repairing = new java.util.LinkedHashMap<>(quorum);
            repairing.put("rewrite-corrupted", true);
            r.qmp("blockdev-add", repairing);
            r.exportNode("q");
            r.io("q", "read -P 0xaa 64k 4k");
            r.events(1);
            r.io("q", "read 128k 4k"); // no majority: nothing to write back
            r.events(1);
            r.daemon.quit();
            for (int i = 0; i < 3; i++) {
                Qemu.assertClean(r.image(i));
            }
            Qemu.Result cmp = Qemu.run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", r.image(0).toString(),
                    r.image(2).toString());
            r.transcript.add("compare c0 c2 -> " + cmp.out().trim()); // 64k repaired, 128k not
            transcripts.add(r.transcript);
        }
        assertThat(transcripts.get(0)).as("blockjobd beside qemu-storage-daemon").isEqualTo(transcripts.get(1));
        assertThat(transcripts.get(1)).contains(
                "event QUORUM_REPORT_BAD {node-name=c2, sector-num=132, sectors-count=2, type=read}",
                "event QUORUM_FAILURE {reference=q, sector-num=256, sectors-count=8}",
                "qemu-io read 128k 4k -> read failed: Input/output error",
                "event QUORUM_REPORT_BAD {node-name=c2, sector-num=128, sectors-count=8, type=read}",
                "compare c0 c2 -> Content mismatch at offset 131072!");
        assertThat(maps.get(0)).as("qemu-img map of the quorum, blockjobd beside qemu-storage-daemon").isEqualTo(maps.get(1));
    }

    @Test
    void failingChildrenFifoReadsAndChildChangesAsOnQemu() throws Exception {
        List<List<String>> transcripts = new ArrayList<>();
        List<List<String>> graphs = new ArrayList<>();
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Run r = new Run(kind);
            for (int i = 0; i < 5; i++) {
                Qemu.io(r.image(i), "qcow2", "write -P 0xaa 0 64k");
            }
            // Reads: two of three children fail, so the threshold of 2 is missed.
            r.qmp("blockdev-add", map("driver", "quorum", "node-name", "q", "vote-threshold", 2,
                    "children", List.of(r.failingReads(0, 5), r.failingReads(1, 5), r.qcow2(2))));
            r.exportNode("q");
            r.io("q", "read 0 4k");
            r.events(3);
            r.deleteExportAndNode("q");
            // Writes: one of three fails; the write succeeds, the child is reported. (Another child
            // than the one reported just now: the rate limit would keep only the last of three.)
            r.qmp("blockdev-add", map("driver", "quorum", "node-name", "q", "vote-threshold", 2,
                    "children", List.of(r.qcow2(0), r.qcow2(1), r.failingWrites(2, 28))));
            r.exportNode("q");
            r.io("q", "write -P 0x22 0 4k", "read -P 0x22 0 4k");
            r.events(2); // the write's error, then c2's lost vote on the read (a second later: rate-limited)
            r.deleteExportAndNode("q");
            // fifo: child 0 fails, child 1 answers.
            r.qmp("blockdev-add", map("driver", "quorum", "node-name", "q", "vote-threshold", 1, "read-pattern", "fifo",
                    "children", List.of(r.failingReads(0, 5), r.qcow2(1))));
            r.exportNode("q");
            r.io("q", "read -P 0x22 0 4k");
            r.events(1);
            // x-blockdev-change: add c3 (children.2), refusals, remove children.0 (not the newest, so c4 gets children.3)
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c3"));
            r.qmp("blockdev-add", r.qcow2(3));
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c3"));
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c3"));
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c1"));
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.0"));
            r.qmp("blockdev-add", r.qcow2(4));
            r.qmp("x-blockdev-change", map("parent", "q", "node", "c4"));
            r.io("q", "write -P 0x33 8k 8k", "read -P 0x22 0 4k", "read -P 0x33 8k 8k");
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.1"));
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.2"));
            r.qmp("x-blockdev-change", map("parent", "q", "child", "children.3"));
            r.io("q", "read -P 0x33 8k 8k");
            JsonNode g = r.daemon.qmp.ok("x-debug-query-block-graph");
            Map<Long, String> names = new TreeMap<>();
            g.path("nodes").forEach(n -> names.put(n.path("id").asLong(), n.path("name").asString()));
            List<String> edges = new ArrayList<>();
            g.path("edges").forEach(e -> {
                if (names.get(e.path("parent").asLong()).equals("q")) {
                    List<String> perm = new ArrayList<>();
                    e.path("perm").forEach(p -> perm.add(p.asString()));
                    List<String> shared = new ArrayList<>();
                    e.path("shared-perm").forEach(p -> shared.add(p.asString()));
                    java.util.Collections.sort(perm);
                    java.util.Collections.sort(shared);
                    edges.add(e.path("name").asString() + " -> " + names.get(e.path("child").asLong()) + " " + perm + " " + shared);
                }
            });
            java.util.Collections.sort(edges);
            graphs.add(edges);
            List<String> named = new ArrayList<>();
            r.daemon.qmp.ok("query-named-block-nodes", map("flat", true)).forEach(n -> {
                String name = n.path("node-name").asString();
                if (!name.startsWith("#")) {
                    named.add(name);
                }
            });
            java.util.Collections.sort(named);
            r.transcript.add("named nodes " + named);
            r.daemon.quit();
            for (int i = 0; i < 5; i++) {
                Qemu.assertClean(r.image(i));
            }
            assertThat(Qemu.identical(r.image(3), "qcow2", r.image(4), "qcow2")).as("%s: c3 and c4", kind).isTrue();
            assertThat(Qemu.identical(r.image(1), "qcow2", r.image(4), "qcow2")).as("%s: c1 and c4", kind).isFalse();
            transcripts.add(r.transcript);
        }
        assertThat(transcripts.get(0)).as("blockjobd beside qemu-storage-daemon").isEqualTo(transcripts.get(1));
        assertThat(graphs.get(0)).as("the quorum's edges, blockjobd beside qemu-storage-daemon").isEqualTo(graphs.get(1))
                .containsExactly("children.3 -> c4 [consistent-read, write] [consistent-read, write-unchanged]");
        assertThat(transcripts.get(1)).contains(
                "qemu-io read 0 4k -> read failed: Input/output error",
                "event QUORUM_REPORT_BAD {error=Input/output error, node-name=c0, sector-num=0, sectors-count=8, type=read}",
                "event QUORUM_REPORT_BAD {error=Input/output error, node-name=c1, sector-num=0, sectors-count=8, type=read}",
                FAILURE_0,
                "event QUORUM_REPORT_BAD {error=No space left on device, node-name=c2, sector-num=0, sectors-count=8, type=write}",
                "event QUORUM_REPORT_BAD {node-name=c2, sector-num=0, sectors-count=8, type=read}",
                "x-blockdev-change -> GenericError: Node 'c3' not found",
                "x-blockdev-change -> GenericError: The node c3 already has a parent",
                "x-blockdev-change -> GenericError: The node c1 already has a parent",
                "x-blockdev-change -> GenericError: The number of children cannot be lower than the vote threshold 1",
                "named nodes [c3, c4, q]");
    }
}
