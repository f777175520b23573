package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import tools.jackson.databind.JsonNode;

/**
 * The filters jobs put into the graph (stream's {@code copy-on-read}, commit's
 * {@code commit_top}, active commit's {@code mirror_top}), shown while the job runs in
 * {@code query-named-block-nodes} and {@code x-debug-query-block-graph} with QEMU's names and
 * permissions: the same job runs on blockjobd and on qemu-storage-daemon over copies of one
 * chain, and the graphs they show are compared edge by edge.
 */
class JobFiltersIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);

    @TempDir
    Path dir;
    private final List<StorageDaemon> running = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : running) {
            d.close();
        }
    }

    /** base (0x11) ← mid (0x22) ← top, all 64 MiB and fully written below top; top too if {@code topWritten} (0x33). */
    private static Path chain(Path d, boolean topWritten) throws Exception {
        Files.createDirectories(d);
        Path base = d.resolve("base.qcow2");
        Path mid = d.resolve("mid.qcow2");
        Path top = d.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "64M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 64M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid.toString());
        Qemu.io(mid, "qcow2", "write -P 0x22 0 64M");
        Qemu.img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top.toString());
        if (topWritten) {
            Qemu.io(top, "qcow2", "write -P 0x33 0 64M");
        }
        return d;
    }

    /** Every layer and its file as a named node, as libvirt opens them, and a writable export of top. */
    private StorageDaemon start(Kind kind, Path d) throws Exception {
        List<String> options = new ArrayList<>();
        String below = null;
        for (String layer : List.of("base", "mid", "top")) {
            options.addAll(List.of("--blockdev", "driver=file,node-name=f-" + layer + ",filename=" + d.resolve(layer + ".qcow2"),
                    "--blockdev", "driver=qcow2,node-name=" + layer + ",file=f-" + layer + (below == null ? "" : ",backing=" + below)));
            below = layer;
        }
        options.addAll(List.of("--export", "type=nbd,id=e,node-name=top,name=top,writable=on"));
        Path run = Files.createDirectories(d.resolve("run"));
        StorageDaemon s = StorageDaemon.start(kind, run, options);
        running.add(s);
        return s;
    }

    /**
     * {@code x-debug-query-block-graph} as a sorted list of edges {@code parent -name-> child
     * perm=[...] shared=[...]}: nodes by name (generated names as {@code (generated)}), jobs by
     * id, BlockBackends as {@code (block-backend)}; the ids of a reply are arbitrary.
     */
    private static List<String> edges(StorageDaemon d) throws Exception {
        JsonNode g = d.qmp.ok("x-debug-query-block-graph");
        Map<Long, String> names = new HashMap<>();
        for (JsonNode n : g.get("nodes")) {
            String name = n.get("name").asString();
            names.put(n.get("id").asLong(), switch (n.get("type").asString()) {
                case "block-driver" -> name.startsWith("#") ? "(generated)" : name;
                case "block-job" -> "job " + name;
                default -> "(block-backend)";
            });
        }
        List<String> out = new ArrayList<>();
        for (JsonNode e : g.get("edges")) {
            out.add(names.get(e.get("parent").asLong()) + " -" + e.get("name").asString() + "-> "
                    + names.get(e.get("child").asLong()) + " perm=" + sorted(e.get("perm")) + " shared=" + sorted(e.get("shared-perm")));
        }
        out.sort(null);
        return out;
    }

    private static List<String> sorted(JsonNode perms) {
        List<String> l = new ArrayList<>();
        perms.forEach(p -> l.add(p.asString()));
        l.sort(null);
        return l;
    }

    /** What query-named-block-nodes says of a filter, less what depends on file names. */
    private static String describe(JsonNode n) {
        return "drv=" + n.get("drv").asString() + " ro=" + n.get("ro").asBoolean()
                + " backing_file=" + n.has("backing_file") + " depth=" + n.get("backing_file_depth").asInt()
                + " cache=" + new java.util.TreeMap<>(Qemu.JSON.convertValue(n.get("cache"), Map.class))
                + " detect_zeroes=" + n.get("detect_zeroes").asString()
                + " image.format=" + n.at("/image/format").asString();
    }

    private static String exportNode(StorageDaemon d) throws Exception {
        return d.qmp.ok("query-block-exports").get(0).get("node-name").asString();
    }

    private static JsonNode completed(StorageDaemon d, String job) {
        JsonNode e = d.qmp.awaitEvent("BLOCK_JOB_COMPLETED", data -> data.get("device").asString().equals(job));
        return e.get("data");
    }

    @ParameterizedTest(name = "{0}, filter-node-name={1}")
    @CsvSource({"stream,", "stream,cor0", "commit,", "commit,cf0", "active commit,", "active commit,af0"})
    void aJobsFilterShowsAsQemusDoesWhileItRuns(String job, String filterName) throws Exception {
        boolean stream = job.equals("stream");
        boolean active = job.equals("active commit");
        String drv = stream ? "copy-on-read" : active ? "mirror_top" : "commit_top";
        Map<Kind, List<String>> graphs = new EnumMap<>(Kind.class);
        Map<Kind, String> filters = new EnumMap<>(Kind.class);
        Map<Kind, List<String>> after = new EnumMap<>(Kind.class);
        Map<Kind, Path> dirs = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = chain(dir.resolve(kind.name().toLowerCase()), !stream);
            dirs.put(kind, d);
            StorageDaemon s = start(kind, d);
            Map<String, Object> args = map("job-id", "j", "device", "top", "speed", 1);
            if (job.equals("commit")) {
                args.putAll(map("top-node", "mid", "base-node", "base"));
            }
            if (filterName != null) {
                args.put("filter-node-name", filterName);
            }
            s.qmp.ok(stream ? "block-stream" : "block-commit", args);

            graphs.put(kind, edges(s));
            JsonNode filter = s.qmp.ok("query-named-block-nodes").get(0); // newest first: the job's filter
            assertThat(filter.get("drv").asString()).as("%s", kind).isEqualTo(drv);
            String name = filter.get("node-name").asString();
            if (filterName != null) {
                assertThat(name).isEqualTo(filterName);
            } else {
                assertThat(name).as("%s: a generated name", kind).matches("#block\\d+");
            }
            filters.put(kind, describe(filter));
            assertThat(s.qmp.ok("query-named-block-nodes", map("flat", true)).findValuesAsString("drv")).contains(drv);
            // The export on top moves onto a filter above top; commit's filter sits below top.
            assertThat(exportNode(s)).as("%s: the export's node while the job runs", kind).isEqualTo(job.equals("commit") ? "top" : name);

            s.qmp.ok("block-job-set-speed", map("device", "j", "speed", 0));
            if (active) {
                s.qmp.awaitEvent("BLOCK_JOB_READY", data -> data.get("device").asString().equals("j"));
                s.qmp.ok("job-complete", map("id", "j"));
            }
            assertThat(completed(s, "j").has("error")).as("%s: the job failed", kind).isFalse();
            assertThat(s.qmp.ok("query-named-block-nodes").findValuesAsString("drv")).as("%s: the filter is gone", kind)
                    .doesNotContain(drv);
            // Back where it was; after an active commit's switch-over, on the base.
            assertThat(exportNode(s)).as("%s: the export's node after the job", kind).isEqualTo(active ? "base" : "top");
            after.put(kind, edges(s));
            s.quit();
            for (String layer : List.of("base", "mid", "top")) {
                Qemu.assertClean(d.resolve(layer + ".qcow2"));
            }
        }
        assertThat(graphs.get(Kind.BLOCKJOBD)).as("blockjobd's graph while the job runs").isEqualTo(graphs.get(Kind.QEMU));
        assertThat(filters.get(Kind.BLOCKJOBD)).as("the filter in query-named-block-nodes").isEqualTo(filters.get(Kind.QEMU));
        assertThat(after.get(Kind.BLOCKJOBD)).as("blockjobd's graph after the job").isEqualTo(after.get(Kind.QEMU));
        String result = stream ? "top.qcow2" : "base.qcow2";
        assertThat(Qemu.identical(dirs.get(Kind.BLOCKJOBD).resolve(result), "qcow2", dirs.get(Kind.QEMU).resolve(result), "qcow2"))
                .isTrue();
    }

    /**
     * A running commit's filter can be another job's base where QEMU allows it: a stream into a
     * side overlay of the filter ends on the filter. A stream that would go through the filter is
     * refused: blockjobs cannot freeze the link into it (the issue's words), QEMU's op blocker on
     * the committed layer says no first.
     */
    @Test
    void aStreamMayEndOnACommitsFilterButNotGoThroughIt() throws Exception {
        Map<Kind, List<String>> during = new EnumMap<>(Kind.class);
        Map<Kind, List<String>> after = new EnumMap<>(Kind.class);
        Map<Kind, Path> dirs = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path d = chain(dir.resolve(kind.name().toLowerCase()), true);
            dirs.put(kind, d);
            Path x = d.resolve("x.qcow2");
            Path x1 = d.resolve("x1.qcow2");
            Path x2 = d.resolve("x2.qcow2");
            for (Path p : List.of(x, x1, x2)) {
                Qemu.img("create", "-f", "qcow2", p.toString(), "64M");
            }
            Qemu.io(x2, "qcow2", "write -P 0x99 0 2M");
            StorageDaemon s = start(kind, d);
            s.qmp.ok("block-commit", map("job-id", "c1", "device", "top", "top-node", "mid", "base-node", "base",
                    "speed", 1, "filter-node-name", "commit-filter"));
            // Nothing between X and the filter: nothing to copy, nothing changes.
            s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "X", "backing", "commit-filter",
                    "file", map("driver", "file", "filename", x.toString())));
            s.qmp.ok("block-stream", map("job-id", "s1", "device", "X", "base-node", "commit-filter"));
            JsonNode s1 = completed(s, "s1");
            assertThat(s1.has("error")).isFalse();
            assertThat(s1.get("len").asLong()).as("%s", kind).isZero();
            assertThat(s1.get("offset").asLong()).isZero();
            // X1 → X2 → filter: X2's data is copied into X1, which then stands on the filter.
            s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "X2", "backing", "commit-filter",
                    "file", map("driver", "file", "filename", x2.toString())));
            s.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "X1", "backing", "X2",
                    "file", map("driver", "file", "filename", x1.toString())));
            s.qmp.ok("block-stream", map("job-id", "s2", "device", "X1", "base-node", "commit-filter"));
            JsonNode s2 = completed(s, "s2");
            assertThat(s2.has("error")).as("%s: %s", kind, s2).isFalse();
            assertThat(s2.get("offset").asLong()).isEqualTo(s2.get("len").asLong()).isEqualTo(64 << 20);
            // Through the filter: refused.
            String through = s.qmp.error("block-stream", map("job-id", "s3", "device", "X", "base-node", "base"))
                    .get("desc").asString();
            assertThat(through).as("%s", kind).isEqualTo(kind == Kind.BLOCKJOBD
                    ? "Cannot freeze 'backing' link to 'commit-filter'"
                    : "Node 'mid' is busy: block device is in use by block job: commit");
            during.put(kind, edges(s));
            assertThat(during.get(kind)).contains("X1 -backing-> commit-filter perm=[] shared=[consistent-read, resize, write, write-unchanged]");
            s.qmp.ok("block-job-set-speed", map("device", "c1", "speed", 0));
            assertThat(completed(s, "c1").has("error")).as("%s: the commit failed", kind).isFalse();
            after.put(kind, edges(s));
            s.quit();
            for (String image : List.of("base", "mid", "top", "x", "x1", "x2")) {
                Qemu.assertClean(d.resolve(image + ".qcow2"));
            }
            Qemu.io(x1, "qcow2", "read -P 0x99 0 2M");
        }
        assertThat(during.get(Kind.BLOCKJOBD)).isEqualTo(during.get(Kind.QEMU));
        assertThat(after.get(Kind.BLOCKJOBD)).as("where the side overlays stand once the commit is done")
                .isEqualTo(after.get(Kind.QEMU));
        for (String image : List.of("x1.qcow2", "base.qcow2")) {
            assertThat(Qemu.identical(dirs.get(Kind.BLOCKJOBD).resolve(image), "qcow2", dirs.get(Kind.QEMU).resolve(image), "qcow2"))
                    .as(image).isTrue();
        }
    }
}
