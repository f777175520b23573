package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * {@code blockdev-reopen} and {@code x-blockdev-amend}, blockjobd beside QEMU 7.2's
 * qemu-storage-daemon: each daemon runs the same sequence on its own copy of the same images, and
 * what QMP answered (errors word for word), the nodes' modes, what NBD clients could write and
 * read, what other processes could open (QEMU's image locks) and the jobs' events must be the
 * same; every image stays {@code qemu-img check} clean.
 *
 * <p>Images (4 MiB): {@code base} all 0x11 &lt;- {@code top} (opened read-only) with 0x22 in
 * [0, 64K); {@code other} 0x33 in [1M, +64K), no backing; {@code lone} empty, over its own file
 * node {@code lonef}; {@code r.raw} behind a {@code locking=off} file node {@code lk} and a raw node.
 */
class BlockdevReopenIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final List<String> IMAGES = List.of("base.qcow2", "top.qcow2", "other.qcow2", "lone.qcow2");

    @TempDir
    Path dir;
    private final Map<Kind, StorageDaemon> daemons = new EnumMap<>(Kind.class);
    private final Map<Kind, Path> dirs = new EnumMap<>(Kind.class);

    @BeforeEach
    void images() throws Exception {
        Path t = Files.createDirectories(dir.resolve("template"));
        Qemu.img("create", "-q", "-f", "qcow2", t.resolve("base.qcow2").toString(), "4M");
        Qemu.io(t.resolve("base.qcow2"), "qcow2", "write -P 0x11 0 4M");
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", t.resolve("top.qcow2").toString(), "4M");
        Qemu.io(t.resolve("top.qcow2"), "qcow2", "write -P 0x22 0 64k");
        Qemu.img("create", "-q", "-f", "qcow2", t.resolve("other.qcow2").toString(), "4M");
        Qemu.io(t.resolve("other.qcow2"), "qcow2", "write -P 0x33 1M 64k");
        Qemu.img("create", "-q", "-f", "qcow2", t.resolve("lone.qcow2").toString(), "4M");
        Qemu.img("create", "-q", "-f", "raw", t.resolve("r.raw").toString(), "1M");
        for (Kind kind : BOTH) {
            Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
            for (String f : List.of("base.qcow2", "top.qcow2", "other.qcow2", "lone.qcow2", "r.raw")) {
                Files.copy(t.resolve(f), d.resolve(f), StandardCopyOption.COPY_ATTRIBUTES);
            }
            dirs.put(kind, d);
        }
    }

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons.values()) {
            d.close();
        }
    }

    private StorageDaemon start(Kind kind) throws Exception {
        Path d = dirs.get(kind);
        StorageDaemon s = StorageDaemon.start(kind, Files.createDirectories(d.resolve("run")), List.of(
                "--blockdev", "driver=qcow2,node-name=base,read-only=on,file.driver=file,file.filename=" + d.resolve("base.qcow2"),
                "--blockdev", "driver=qcow2,node-name=top,read-only=on,backing=base,file.driver=file,file.node-name=topf,"
                        + "file.filename=" + d.resolve("top.qcow2"),
                "--blockdev", "driver=qcow2,node-name=other,file.driver=file,file.filename=" + d.resolve("other.qcow2"),
                "--blockdev", "driver=file,node-name=lonef,filename=" + d.resolve("lone.qcow2"),
                "--blockdev", "driver=qcow2,node-name=lone,file=lonef",
                "--blockdev", "driver=file,node-name=lk,locking=off,filename=" + d.resolve("r.raw"),
                "--blockdev", "driver=raw,node-name=r,file=lk"));
        daemons.put(kind, s);
        return s;
    }

    /** The command's reply as the comparison records it: "ok", or the error's class and text. */
    private static String reply(StorageDaemon d, String command, Object args) throws Exception {
        JsonNode r = d.qmp.execute(command, args);
        if (r.has("return")) {
            return "ok";
        }
        return r.get("error").get("class").asString() + ": " + r.get("error").get("desc").asString();
    }

    private static String reopen(StorageDaemon d, Object... entries) throws Exception {
        return reply(d, "blockdev-reopen", map("options", List.of(entries)));
    }

    /** {@code top}'s options, with {@code top}'s file named as its own child and {@code extra} members. */
    private static Map<String, Object> top(Object... extra) {
        Map<String, Object> m = new LinkedHashMap<>(map("driver", "qcow2", "node-name", "top", "file", "topf", "backing", "base"));
        for (int i = 0; i < extra.length; i += 2) {
            if (extra[i + 1] == NONE) {
                m.remove((String) extra[i]);
            } else {
                m.put((String) extra[i], extra[i + 1]);
            }
        }
        return m;
    }

    private static final Object NONE = new Object();

    /** Which nodes are read-only now, by name (generated names left out: they differ between daemons). */
    private static String modes(StorageDaemon d) throws Exception {
        Map<String, Boolean> out = new TreeMap<>();
        for (JsonNode n : d.qmp.ok("query-named-block-nodes", map("flat", true))) {
            String name = n.get("node-name").asString();
            if (!name.startsWith("#")) {
                out.put(name, n.get("ro").asBoolean());
            }
        }
        return out.toString();
    }

    /** A process's outcome with the daemon's directory and NBD URI masked: "0" or exit code and words. */
    private String outcome(StorageDaemon d, Qemu.Result r) {
        String all = (r.out() + r.err()).replace(dirs.get(d.kind).toString(), "DIR");
        int uri = all.indexOf("nbd+unix://");
        if (uri >= 0) {
            all = all.substring(0, uri) + "URI" + all.substring(all.indexOf(':', all.indexOf("?socket=")));
        }
        boolean failed = r.exit() != 0 || all.contains("failed") || all.contains("Pattern verification");
        return failed ? r.exit() + " " + all.lines().filter(l -> !l.startsWith("read ") && !l.contains("ops/sec")
                && !l.startsWith("wrote ")).reduce("", (a, b) -> a + b + "|") : "0";
    }

    private String io(StorageDaemon d, String target, boolean readOnly, String... commands) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io"));
        if (readOnly) {
            cmd.add("-r");
        }
        if (target.startsWith("nbd")) {
            cmd.addAll(List.of("-f", "raw"));
        }
        for (String c : commands) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(target);
        return outcome(d, Qemu.run(cmd.toArray(String[]::new)));
    }

    private String check(StorageDaemon d, String image) {
        return outcome(d, Qemu.run("qemu-img", "check", dirs.get(d.kind).resolve(image).toString()));
    }

    /** Deletes an export; hard, so that a client the server has not yet seen leave does not hold it. */
    private static void delExport(StorageDaemon d, String id) throws Exception {
        d.qmp.ok("block-export-del", map("id", id, "mode", "hard"));
        d.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals(id));
    }

    /** The JOB_STATUS_CHANGE statuses of job {@code id} up to its conclusion, and its query-jobs entry. */
    private static String amendJob(StorageDaemon d, String id) throws Exception {
        int from = d.qmp.seenEvents().size();
        d.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> e.get("id").asString().equals(id)
                && e.get("status").asString().equals("concluded"));
        List<String> statuses = new ArrayList<>();
        for (JsonNode e : d.qmp.seenEvents().subList(from, d.qmp.seenEvents().size())) {
            if (e.get("event").asString().equals("JOB_STATUS_CHANGE") && e.get("data").get("id").asString().equals(id)) {
                statuses.add(e.get("data").get("status").asString());
            }
        }
        for (JsonNode j : d.qmp.ok("query-jobs")) {
            if (j.get("id").asString().equals(id)) {
                return statuses + " " + j.get("type").asString() + " " + j.get("status").asString() + " "
                        + j.get("current-progress") + "/" + j.get("total-progress") + " " + j.path("error").asString("-");
            }
        }
        return statuses + " not in query-jobs";
    }

    /** A command's arguments in {@code query-qmp-schema}: each member's name, "?" if optional, and its JSON type. */
    private static String schemaOf(StorageDaemon d, String command) throws Exception {
        Map<String, JsonNode> byName = new LinkedHashMap<>();
        for (JsonNode e : d.qmp.ok("query-qmp-schema")) {
            byName.put(e.get("name").asString(), e);
        }
        JsonNode entry = null;
        for (JsonNode e : byName.values()) {
            if (e.get("meta-type").asString().equals("command") && e.get("name").asString().equals(command)) {
                entry = e;
            }
        }
        if (entry == null) {
            return "absent";
        }
        List<String> out = new ArrayList<>();
        for (JsonNode m : byName.get(entry.get("arg-type").asString()).get("members")) {
            JsonNode type = byName.get(m.get("type").asString());
            String json = type.get("meta-type").asString().equals("builtin") ? type.get("json-type").asString()
                    : type.get("meta-type").asString();
            if (type.get("meta-type").asString().equals("array")) {
                JsonNode element = byName.get(type.get("element-type").asString());
                json += " of " + element.get("meta-type").asString() + (element.has("tag") ? " on " + element.get("tag").asString() : "");
            } else if (type.has("tag")) {
                json += " on " + type.get("tag").asString();
            }
            out.add(m.get("name").asString() + (m.has("default") ? "?" : "") + ":" + json);
        }
        out.sort(null);
        return String.join(",", out);
    }

    /** The sequence, on one daemon; what it saw, by step. */
    private Map<String, String> run(StorageDaemon d) throws Exception {
        Map<String, String> seen = new LinkedHashMap<>();
        Path dd = dirs.get(d.kind);
        String topFile = dd.resolve("top.qcow2").toString();
        seen.put("modes at start", modes(d));
        seen.put("schema blockdev-reopen", schemaOf(d, "blockdev-reopen"));
        seen.put("schema x-blockdev-amend", schemaOf(d, "x-blockdev-amend"));

        // Arguments and options QEMU refuses, nothing changed.
        seen.put("no options", reply(d, "blockdev-reopen", map()));
        seen.put("missing file", reopen(d, map("driver", "qcow2")));
        seen.put("unexpected member", reopen(d, top("bogus", 1)));
        seen.put("unknown driver", reopen(d, map("driver", "nope", "node-name", "top")));
        Map<String, Object> otherFile = map("driver", "file", "filename", dd.resolve("other.qcow2").toString());
        seen.put("bad discard", reopen(d, map("driver", "qcow2", "node-name", "other", "discard", "bogus", "file", otherFile)));
        seen.put("string for a boolean", reopen(d, map("driver", "qcow2", "node-name", "other", "read-only", "yes",
                "file", otherFile)));
        seen.put("detect-zeroes unmap without discard", reopen(d, map("driver", "qcow2", "node-name", "other",
                "detect-zeroes", "unmap", "file", otherFile)));
        seen.put("unexpected in a child", reopen(d, map("driver", "qcow2", "node-name", "other",
                "file", map("driver", "file", "filename", dd.resolve("other.qcow2").toString(), "bogus", 1))));
        seen.put("number for a child", reopen(d, map("driver", "qcow2", "node-name", "other", "file", 5)));
        seen.put("options not a list", reply(d, "blockdev-reopen", map("options", "x")));
        seen.put("unexpected argument", reply(d, "blockdev-reopen", map("options", List.of(), "extra", 1)));
        seen.put("no node-name", reopen(d, map("driver", "qcow2", "file", "topf", "backing", "base")));
        seen.put("no such node", reopen(d, map("driver", "qcow2", "node-name", "nope", "file", "x")));
        seen.put("backing missing", reopen(d, top("backing", NONE)));
        seen.put("no such backing", reopen(d, top("backing", "nope")));
        seen.put("no such file", reopen(d, top("file", "nope")));
        seen.put("backing cycle", reopen(d, map("driver", "qcow2", "node-name", "base", "read-only", true, "backing", "top",
                "file", map("driver", "file", "filename", dd.resolve("base.qcow2").toString()))));
        seen.put("file cycle", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lone")));
        seen.put("filename", reopen(d, top("read-only", true, "file",
                map("driver", "file", "node-name", "topf", "filename", dd.resolve("other.qcow2").toString()))));
        seen.put("driver", reopen(d, map("driver", "raw", "node-name", "lone", "file", "lonef")));
        seen.put("force-share", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lonef", "read-only", true,
                "force-share", true)));
        seen.put("locking", reopen(d, map("driver", "file", "node-name", "lonef", "filename", dd.resolve("lone.qcow2").toString(),
                "locking", "off")));
        seen.put("locking reset", reopen(d, map("driver", "file", "node-name", "lk", "filename", dd.resolve("r.raw").toString())));
        seen.put("backing object of a node of its own", reopen(d, top("backing", map("driver", "null-co"))));
        seen.put("modes after refusals", modes(d));

        // read-only -> read-write, with writes through NBD and QEMU's locks seen from other processes.
        seen.put("writable export of read-only node", reply(d, "block-export-add",
                map("type", "nbd", "id", "w", "node-name", "top", "writable", true)));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "top"));
        seen.put("write to read-only export", io(d, d.nbdUri("top"), false, "write -P 0x55 0 64k"));
        delExport(d, "e");
        seen.put("check while read-only", check(d, "top.qcow2"));
        seen.put("reopen read-write", reopen(d, top("read-only", false)));
        seen.put("modes read-write", modes(d));
        seen.put("check while read-write", check(d, "top.qcow2"));
        seen.put("reader while read-write", io(d, topFile, true, "read -P 0x22 0 64k"));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "w", "node-name", "top", "writable", true));
        seen.put("write to writable export", io(d, d.nbdUri("top"), false, "write -P 0x55 0 64k", "read -P 0x55 0 64k"));
        seen.put("read-only under a writer", reopen(d, top("read-only", true)));
        seen.put("file read-only under a writer", reopen(d, map("driver", "file", "node-name", "topf", "filename", topFile,
                "read-only", true)));
        seen.put("modes under a writer", modes(d));
        delExport(d, "w");
        seen.put("reopen read-only", reopen(d, top("read-only", true)));
        seen.put("modes read-only", modes(d));
        seen.put("check after read-only", check(d, "top.qcow2"));
        seen.put("reader after read-only", io(d, topFile, true, "read -P 0x55 0 64k"));
        seen.put("writer after read-only", io(d, topFile, false, "write 0 64k"));
        seen.put("read-write while the file read-only", reopen(d, map("driver", "file", "node-name", "topf",
                "filename", topFile, "read-only", true), top("read-only", false)));
        seen.put("modes read-only again", modes(d));
        Process reader = new ProcessBuilder("qemu-io", "-r", topFile).redirectErrorStream(true).start();
        Writer in = new java.io.OutputStreamWriter(reader.getOutputStream(), StandardCharsets.UTF_8);
        BufferedReader out = new BufferedReader(new InputStreamReader(reader.getInputStream(), StandardCharsets.UTF_8));
        in.write("read 0 512\n");
        in.flush();
        StringBuilder said = new StringBuilder();
        for (String l = out.readLine(); l != null && !l.contains("read 512/512"); l = out.readLine()) {
            said.append(l.replace(dd.toString(), "DIR")).append('|'); // until the other process has the image open
        }
        seen.put("another process opens read-only", reader.isAlive() ? "open" : said.toString());
        seen.put("read-write while another process reads", reopen(d, top("read-only", false)));
        seen.put("modes while another reads", modes(d));
        if (reader.isAlive()) {
            in.write("quit\n");
            in.close();
        }
        reader.waitFor();
        seen.put("read-write again", reopen(d, top("read-only", false)));

        // backing: another node, none, back; reads through an export of the overlay follow.
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "r", "node-name", "top"));
        String uri = d.nbdUri("top");
        seen.put("read over base", io(d, uri, true, "read -P 0x55 0 64k", "read -P 0x11 1M 64k"));
        seen.put("backing other", reopen(d, top("backing", "other")));
        seen.put("read over other", io(d, uri, true, "read -P 0x55 0 64k", "read -P 0x33 1M 64k", "read -P 0 2M 64k"));
        seen.put("backing null", reopen(d, top("backing", null)));
        seen.put("read over nothing", io(d, uri, true, "read -P 0x55 0 64k", "read -P 0 1M 64k"));
        seen.put("backing base again", reopen(d, top("backing", "base")));
        seen.put("read over base again", io(d, uri, true, "read -P 0x55 0 64k", "read -P 0x11 1M 64k"));

        // All or none: one bad entry leaves every node as it was.
        seen.put("atomic: missing file node", reopen(d, top("read-only", true),
                map("driver", "qcow2", "node-name", "lone", "file", "nope")));
        seen.put("atomic: unchangeable option", reopen(d, top("backing", "other"),
                map("driver", "file", "node-name", "lonef", "filename", topFile)));
        seen.put("atomic: cycle through an earlier entry", reopen(d, top("backing", "lone"),
                map("driver", "qcow2", "node-name", "lone", "file", "lonef", "backing", "top")));
        seen.put("atomic: permissions", reopen(d, top("backing", "other"),
                map("driver", "qcow2", "node-name", "lone", "file", "topf")));
        seen.put("modes after atomic refusals", modes(d));
        seen.put("read after atomic refusals", io(d, uri, true, "read -P 0x55 0 64k", "read -P 0x11 1M 64k"));
        d.qmp.ok("block-dirty-bitmap-add", map("node", "other", "name", "b0", "persistent", true));
        seen.put("two at once", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lonef", "read-only", true),
                map("driver", "qcow2", "node-name", "other", "read-only", true,
                        "file", map("driver", "file", "filename", dd.resolve("other.qcow2").toString()))));
        seen.put("modes after two", modes(d));
        seen.put("bitmap on the node made read-only", reply(d, "block-dirty-bitmap-clear", map("node", "other", "name", "b0")));
        delExport(d, "r");

        // file: to another node over the same file (a raw node above it), and back; the data stays.
        seen.put("lone read-write", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lonef")));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "l", "node-name", "lone", "writable", true));
        String lone = d.nbdUri("lone");
        seen.put("write lone", io(d, lone, false, "write -P 0x44 0 64k"));
        d.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "lraw", "file", "lonef"));
        seen.put("file to a node above the file", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lraw")));
        seen.put("read lone through raw", io(d, lone, false, "read -P 0x44 0 64k", "write -P 0x45 64k 64k"));
        seen.put("lraw in use", reply(d, "blockdev-del", map("node-name", "lraw")));
        seen.put("file back", reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lonef")));
        seen.put("read lone", io(d, lone, true, "read -P 0x44 0 64k", "read -P 0x45 64k 64k"));
        seen.put("lraw free", reply(d, "blockdev-del", map("node-name", "lraw")));
        delExport(d, "l");

        // As QEMU's 155: a mirror target gets a backing node while the job runs.
        Qemu.img("create", "-q", "-f", "qcow2", dd.resolve("target.qcow2").toString(), "4M");
        d.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "target", "backing", null,
                "file", map("driver", "file", "node-name", "target-file", "filename", dd.resolve("target.qcow2").toString())));
        d.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "lone", "target", "target", "sync", "full"));
        d.qmp.awaitEvent("BLOCK_JOB_READY", e -> e.get("device").asString().equals("m"));
        d.qmp.ok("blockdev-add", map("driver", "null-co", "node-name", "nul"));
        seen.put("mirror target gets a backing node", reopen(d, map("driver", "qcow2", "node-name", "target",
                "file", "target-file", "backing", "nul")));
        seen.put("mirror target read-only", reopen(d, map("driver", "qcow2", "node-name", "target",
                "file", "target-file", "backing", "nul", "read-only", true)));
        d.qmp.ok("block-job-cancel", map("device", "m"));
        d.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> e.get("id").asString().equals("m")
                && e.get("status").asString().equals("null"));

        // A job froze the link.
        d.qmp.ok("block-stream", map("job-id", "s", "device", "top", "speed", 1));
        seen.put("frozen backing", reopen(d, top("backing", null)));
        d.qmp.ok("block-job-cancel", map("device", "s"));
        d.qmp.awaitEvent("JOB_STATUS_CHANGE", e -> e.get("id").asString().equals("s")
                && e.get("status").asString().equals("null"));

        // x-blockdev-amend: a job of type amend; qcow2 without encryption has nothing to amend.
        seen.put("amend", reply(d, "x-blockdev-amend", map("job-id", "a1", "node-name", "top", "options", map("driver", "qcow2"))));
        seen.put("amend job", amendJob(d, "a1"));
        seen.put("amend encryption", reply(d, "x-blockdev-amend", map("job-id", "a2", "node-name", "top",
                "options", map("driver", "qcow2", "encrypt", map("format", "luks", "state", "active", "new-secret", "s")))));
        seen.put("amend encryption job", amendJob(d, "a2"));
        seen.put("amend job id in use", reply(d, "x-blockdev-amend", map("job-id", "a1", "node-name", "top",
                "options", map("driver", "qcow2"))));
        seen.put("amend raw", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "r", "options", map("driver", "raw"))));
        seen.put("amend other driver", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "r",
                "options", map("driver", "qcow2"))));
        seen.put("amend no node", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "nope",
                "options", map("driver", "qcow2"))));
        seen.put("amend luks", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "top", "options", map("driver", "luks"))));
        seen.put("amend bogus", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "top",
                "options", map("driver", "qcow2", "bogus", 1))));
        seen.put("amend no driver", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "top", "options", map())));
        seen.put("amend forced", reply(d, "x-blockdev-amend", map("job-id", "a3", "node-name", "top",
                "options", map("driver", "qcow2"), "force", true)));
        seen.put("amend forced job", amendJob(d, "a3"));
        for (String id : List.of("a1", "a2", "a3")) {
            d.qmp.ok("job-dismiss", map("id", id));
        }
        return seen;
    }

    /** What blockjobd does where it differs from QEMU on purpose: a change it cannot make is refused. */
    @Test
    void cacheDirectIsRefusedNotIgnored() throws Exception {
        StorageDaemon d = start(Kind.BLOCKJOBD);
        Path dd = dirs.get(Kind.BLOCKJOBD);
        assertThat(reopen(d, map("driver", "file", "node-name", "lonef", "filename", dd.resolve("lone.qcow2").toString(),
                "cache", map("direct", true))))
                .isEqualTo("GenericError: blockjobd cannot change 'cache.direct' of node 'lonef' by reopening it; "
                        + "add a node with the new mode instead");
        // a change it can make: detect-zeroes and discard, seen in query-named-block-nodes
        assertThat(reopen(d, map("driver", "qcow2", "node-name", "lone", "file", "lonef", "discard", "unmap",
                "detect-zeroes", "unmap"))).isEqualTo("ok");
        for (JsonNode n : d.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals("lone")) {
                assertThat(n.get("detect_zeroes").asString()).isEqualTo("unmap");
            }
        }
    }

    @Test
    void asQemuStorageDaemon() throws Exception {
        Map<Kind, Map<String, String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            StorageDaemon d = start(kind);
            Map<String, String> s = run(d);
            seen.put(kind, s);
            d.quit();
            for (String f : IMAGES) {
                Qemu.assertClean(dirs.get(kind).resolve(f));
            }
            // stored as the node went read-only, not in use any more
            s.put("bitmaps stored", Qemu.info(dirs.get(kind).resolve("other.qcow2")).path("format-specific").path("data")
                    .path("bitmaps").toString());
        }
        Map<String, String> bj = seen.get(Kind.BLOCKJOBD);
        Map<String, String> qemu = seen.get(Kind.QEMU);
        assertThat(bj.keySet()).containsExactlyElementsOf(qemu.keySet());
        List<String> differences = new ArrayList<>();
        for (String step : qemu.keySet()) {
            if (!bj.get(step).equals(qemu.get(step))) {
                differences.add(step + ": blockjobd <" + bj.get(step) + "> qemu-storage-daemon <" + qemu.get(step) + ">");
            }
        }
        assertThat(differences).isEmpty();

        // What QEMU does, so that a change in both would not pass unnoticed.
        assertThat(qemu.get("backing cycle")).isEqualTo("GenericError: Making 'top' a backing child of 'base' would create a cycle");
        assertThat(qemu.get("filename")).isEqualTo("GenericError: Cannot change the option 'filename'");
        assertThat(qemu.get("read-only under a writer"))
                .isEqualTo("GenericError: Read-only block node 'top' cannot support read-write users");
        assertThat(qemu.get("reopen read-write")).isEqualTo("ok");
        assertThat(qemu.get("write to writable export")).isEqualTo("0");
        assertThat(qemu.get("write to read-only export")).isNotEqualTo("0");
        assertThat(qemu.get("check while read-write")).isNotEqualTo("0");
        assertThat(qemu.get("check after read-only")).isEqualTo("0");
        assertThat(qemu.get("read over other")).isEqualTo("0");
        assertThat(qemu.get("read over nothing")).isEqualTo("0");
        assertThat(qemu.get("modes after atomic refusals")).isEqualTo(qemu.get("modes read-write"));
        assertThat(qemu.get("bitmaps stored")).contains("\"b0\"").doesNotContain("in-use");
        assertThat(qemu.get("mirror target gets a backing node")).isEqualTo("ok");
        assertThat(qemu.get("file to a node above the file")).isEqualTo("ok");
        assertThat(qemu.get("read lone through raw")).isEqualTo("0");
        assertThat(qemu.get("bitmap on the node made read-only"))
                .isEqualTo("GenericError: Bitmap 'b0' is readonly and cannot be modified");
        assertThat(qemu.get("schema blockdev-reopen")).isEqualTo("options:array of object on driver");
        assertThat(qemu.get("amend job")).isEqualTo("[created, running, waiting, pending, concluded] amend concluded 1/1 -");
    }
}
