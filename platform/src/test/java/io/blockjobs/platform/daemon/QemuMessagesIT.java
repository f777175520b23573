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
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import tools.jackson.databind.JsonNode;

/**
 * QEMU 7.2's error classes and texts for nodes that do not exist and for {@code block-stream}'s
 * and {@code block-commit}'s argument errors ({@code blockdev.c}'s {@code qmp_block_stream},
 * {@code qmp_block_commit}, {@code bdrv_lookup_bs}; QEMU's iotests 030 and 040 assert them), each
 * sent to blockjobd and to qemu-storage-daemon 7.2 and asserted verbatim on both. Also what QEMU
 * does that blockjobd refused before: committing below a read-only overlay, whose header then
 * names the new backing file, and backing file names with QEMU's {@code file:} protocol prefix.
 */
class QemuMessagesIT {

    @TempDir
    Path dir;
    final List<StorageDaemon> daemons = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons) {
            d.close();
        }
    }

    /** One command, and the error QEMU 7.2 answers it with; {@code {dir}} stands for the images' folder. */
    record Case(String command, Map<String, Object> arguments, String errorClass, String desc) {
    }

    private static Case generic(String command, Map<String, Object> arguments, String desc) {
        return new Case(command, arguments, "GenericError", desc);
    }

    private static final List<Case> CASES = List.of(
            // A node that does not exist: bdrv_lookup_bs's GenericError, with the names as given ...
            generic("block-stream", map("device", "nope"), "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-snapshot", map("node", "nope", "overlay", "top"), "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-snapshot", map("node", "top", "overlay", "nope"), "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-snapshot-sync", map("device", "nope", "snapshot-file", "{dir}/s.qcow2"),
                    "Cannot find device='nope' nor node-name=''"),
            generic("blockdev-snapshot-sync", map("node-name", "nope", "snapshot-file", "{dir}/s.qcow2"),
                    "Cannot find device='' nor node-name='nope'"),
            generic("transaction", map("actions", List.of(map("type", "blockdev-snapshot-sync",
                    "data", map("device", "nope", "snapshot-file", "{dir}/s.qcow2")))), "Cannot find device='nope' nor node-name=''"),
            generic("blockdev-add", map("driver", "qcow2", "node-name", "x", "file", "nope"),
                    "Cannot find device='nope' nor node-name='nope'"),
            generic("block-dirty-bitmap-add", map("node", "nope", "name", "b"), "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-mirror", map("device", "nope", "target", "top", "sync", "full"),
                    "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-backup", map("device", "nope", "target", "top", "sync", "full"),
                    "Cannot find device='nope' nor node-name='nope'"),
            generic("blockdev-del", map("node-name", "nope"), "Failed to find node with node-name='nope'"),
            // ... except where QEMU keeps another class: block-commit's DeviceNotFound (libvirt probes for it).
            new Case("block-commit", map("device", "nope"), "DeviceNotFound", "Device 'nope' not found"),
            new Case("block-job-cancel", map("device", "nope"), "DeviceNotActive", "Block job 'nope' not found"),
            // block-stream's arguments.
            generic("block-stream", map("device", "top", "base", "nope"), "Can't find 'nope' in the backing chain"),
            generic("block-stream", map("device", "mid", "base", "{dir}/top.qcow2"), "Can't find '{dir}/top.qcow2' in the backing chain"),
            generic("block-stream", map("device", "top", "base-node", "nope"), "Cannot find device='' nor node-name='nope'"),
            generic("block-stream", map("device", "mid", "base-node", "top"), "Node 'top' is not a backing image of 'mid'"),
            generic("block-stream", map("device", "top", "base-node", "top-file"), "Node 'top-file' is not a backing image of 'top'"),
            generic("block-stream", map("device", "top", "base-node", "base", "base", "{dir}/base.qcow2"),
                    "'base' and 'base-node' cannot be specified at the same time"),
            generic("block-stream", map("device", "mid", "bottom", "base", "base", "{dir}/base.qcow2"),
                    "'base' and 'bottom' cannot be specified at the same time"),
            generic("block-stream", map("device", "mid", "bottom", "base", "base-node", "base"),
                    "'bottom' and 'base-node' cannot be specified at the same time"),
            generic("block-stream", map("device", "mid", "bottom", "nope"), "Cannot find device='' nor node-name='nope'"),
            generic("block-stream", map("device", "mid", "bottom", "top"), "Node 'top' is not in a chain starting from 'mid'"),
            // block-commit's arguments.
            generic("block-commit", map("device", "mid"), "Need a root block node"),
            generic("block-commit", map("device", "top", "top", "nope"), "Top image file nope not found"),
            generic("block-commit", map("device", "top", "top-node", "nope"), "Cannot find device='' nor node-name='nope'"),
            generic("block-commit", map("device", "top", "top-node", "mid", "top", "x"), "'top-node' and 'top' are mutually exclusive"),
            generic("block-commit", map("device", "top", "base", "nope"), "Can't find 'nope' in the backing chain"),
            generic("block-commit", map("device", "top", "base", "{dir}/top.qcow2"), "Can't find '{dir}/top.qcow2' in the backing chain"),
            generic("block-commit", map("device", "top", "top", "{dir}/base.qcow2", "base", "{dir}/mid.qcow2"),
                    "Can't find '{dir}/mid.qcow2' in the backing chain"),
            generic("block-commit", map("device", "top", "base-node", "nope"), "Cannot find device='' nor node-name='nope'"),
            generic("block-commit", map("device", "top", "base-node", "base", "base", "x"), "'base-node' and 'base' are mutually exclusive"),
            generic("block-commit", map("device", "top", "top-node", "base", "base-node", "mid"), "'mid' is not in this backing file chain"),
            generic("block-commit", map("device", "top", "base-node", "base-file"), "'base-file' is not in this backing file chain"),
            generic("block-commit", map("device", "top", "top-node", "top", "base-node", "top"), "cannot commit an image into itself"),
            generic("block-commit", map("device", "top", "top-node", "base"), "cannot commit an image into itself"),
            generic("block-commit", map("device", "top", "base", "{dir}/base.qcow2", "backing-file", "x"),
                    "'backing-file' specified, but 'top' is the active layer"),
            // x-blockdev-change: QEMU's checks, then a driver that cannot add or remove children (all but quorum).
            generic("x-blockdev-change", map("parent", "nope", "node", "base"), "Cannot find device='nope' nor node-name='nope'"),
            generic("x-blockdev-change", map("parent", "top"), "Either child or node must be specified"),
            generic("x-blockdev-change", map("parent", "top", "child", "file", "node", "base"),
                    "The parameters child and node are in conflict"),
            generic("x-blockdev-change", map("parent", "top", "child", "nope"), "Node 'top' does not have child 'nope'"),
            generic("x-blockdev-change", map("parent", "top", "child", "backing"), "The node top does not support removing a child"),
            generic("x-blockdev-change", map("parent", "top", "node", "nope"), "Node 'nope' not found"),
            generic("x-blockdev-change", map("parent", "top", "node", "base"), "The node top does not support adding a child"));

    /** Starts {@code kind} on its own copy of base <- mid <- top, each layer a named node with a named file node. */
    private StorageDaemon startChain(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Qemu.img("create", "-q", "-f", "qcow2", d.resolve("base.qcow2").toString(), "1M").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", d.resolve("base.qcow2").toString(), "-F", "qcow2",
                d.resolve("mid.qcow2").toString()).ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", d.resolve("mid.qcow2").toString(), "-F", "qcow2",
                d.resolve("top.qcow2").toString()).ok();
        List<String> options = new ArrayList<>();
        String backing = null;
        for (String layer : List.of("base", "mid", "top")) {
            options.addAll(List.of("--blockdev", "driver=file,node-name=" + layer + "-file,filename=" + d.resolve(layer + ".qcow2")));
            options.addAll(List.of("--blockdev", "driver=qcow2,node-name=" + layer + ",file=" + layer + "-file"
                    + (backing == null ? "" : ",backing=" + backing)));
            backing = layer;
        }
        StorageDaemon daemon = StorageDaemon.start(kind, d, options);
        daemons.add(daemon);
        return daemon;
    }

    @Test
    void errorsAreQemusWordForWordOnBothDaemons() throws Exception {
        StorageDaemon ours = startChain(Kind.BLOCKJOBD);
        StorageDaemon qemu = startChain(Kind.QEMU);
        for (StorageDaemon daemon : List.of(ours, qemu)) {
            String d = dir.resolve(daemon.kind.name().toLowerCase()).toString();
            for (Case c : CASES) {
                Object args = Qemu.JSON.readValue(Qemu.JSON.writeValueAsString(c.arguments()).replace("{dir}", d), Object.class);
                JsonNode error = daemon.qmp.error(c.command(), args);
                assertThat(error.get("class").asString() + ": " + error.get("desc").asString())
                        .as("%s %s on %s", c.command(), args, daemon)
                        .isEqualTo(c.errorClass() + ": " + c.desc().replace("{dir}", d));
            }
            // Nothing was changed by any of them: the chain and its nodes are as they were.
            JsonNode nodes = daemon.qmp.ok("query-named-block-nodes", map("flat", true));
            List<String> names = new ArrayList<>();
            nodes.forEach(n -> names.add(n.get("node-name").asString()));
            assertThat(names).as("%s", daemon).containsExactlyInAnyOrder("base-file", "base", "mid-file", "mid", "top-file", "top");
            assertThat(daemon.qmp.ok("query-jobs").size()).isZero();
        }
    }

    /**
     * Committing mid1 into base below a read-only mid2 (a backing layer opened with the chain):
     * mid2's header must name base afterwards, so the commit reopens mid2 read-write for it, as
     * QEMU does, where blockjobd refused with "is open read-only" before.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void commitBelowAReadOnlyOverlayRewritesItsBackingFile(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Path base = d.resolve("base.qcow2");
        Path mid1 = d.resolve("mid1.qcow2");
        Path mid2 = d.resolve("mid2.qcow2");
        Path top = d.resolve("top.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), "4M").ok();
        Qemu.io(base, "qcow2", "write -P 1 0 1M").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid1.toString()).ok();
        Qemu.io(mid1, "qcow2", "write -P 2 1M 1M").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "mid1.qcow2", "-F", "qcow2", mid2.toString()).ok();
        Qemu.io(mid2, "qcow2", "write -P 3 2M 1M").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "mid2.qcow2", "-F", "qcow2", top.toString()).ok();
        StorageDaemon daemon = StorageDaemon.start(kind, d, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top));
        daemons.add(daemon);
        daemon.qmp.ok("block-commit", map("job-id", "c", "device", "top", "top", mid1.toString(), "base", base.toString()));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", data -> "c".equals(data.path("device").asString(null)));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.quit();
        JsonNode chain = Qemu.JSON.readTree(Qemu.img("info", "--output=json", "--backing-chain", top.toString()).ok().out());
        List<String> files = new ArrayList<>();
        chain.forEach(i -> files.add(Path.of(i.get("filename").asString()).getFileName().toString()));
        assertThat(files).as("%s", kind).containsExactly("top.qcow2", "mid2.qcow2", "base.qcow2");
        Qemu.io(top, "qcow2", "read -P 1 0 1M", "read -P 2 1M 1M", "read -P 3 2M 1M").ok();
        Qemu.assertClean(mid2);
        Qemu.assertClean(base);
    }

    /**
     * A backing file name with QEMU's {@code file:} protocol prefix ({@code qemu-img create -b
     * file:...}) opens the file after it, as QEMU opens it; a stream then copies its data up.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void fileProtocolPrefixInABackingFileName(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Path base = d.resolve("base.qcow2");
        Path top = d.resolve("top.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), "1M").ok();
        Qemu.io(base, "qcow2", "write -P 9 64k 128k").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "file:" + base, "-F", "qcow2", top.toString()).ok();
        StorageDaemon daemon = StorageDaemon.start(kind, d, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top));
        daemons.add(daemon);
        JsonNode nodes = daemon.qmp.ok("query-named-block-nodes", map("flat", true));
        List<String> files = new ArrayList<>();
        nodes.forEach(n -> files.add(n.get("file").asString()));
        assertThat(files).as("%s opens the backing file", kind).contains(base.toString());
        daemon.qmp.ok("block-stream", map("job-id", "s", "device", "top"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", data -> "s".equals(data.path("device").asString(null)));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.quit();
        assertThat(Qemu.info(top).has("backing-filename")).as("streamed: no backing file left").isFalse();
        Qemu.io(top, "qcow2", "read -P 9 64k 128k", "read -P 0 0 64k").ok();
        Qemu.assertClean(top);
    }

    /**
     * QEMU's {@code json:} pseudo-filenames as backing file names, nested and with dotted keys:
     * both daemons open the node tree they describe read-only, show the file it names, and a
     * stream copies its data up; a name whose JSON does not parse is refused by both with QEMU's
     * "Could not parse the JSON options".
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void jsonPseudoFilenamesAsBackingFileNames(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve("json-" + kind.name().toLowerCase()));
        Path base = d.resolve("base.qcow2");
        Path raw = d.resolve("base.raw");
        Path top = d.resolve("top.qcow2");
        Path top2 = d.resolve("top2.qcow2");
        Path bad = d.resolve("bad.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), "1M").ok();
        Qemu.io(base, "qcow2", "write -P 9 64k 128k").ok();
        Qemu.img("create", "-q", "-f", "raw", raw.toString(), "1M").ok();
        Qemu.io(raw, "raw", "write -P 7 0 64k").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\""
                + base + "\"}}", "-F", "qcow2", top.toString()).ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "json:{\"driver\":\"raw\",\"file.driver\":\"file\",\"file.filename\":\""
                + raw + "\"}", "-F", "raw", top2.toString()).ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-u", "-b", "json:{\"driver\":", "-F", "qcow2", bad.toString(), "1M").ok();
        StorageDaemon daemon = StorageDaemon.start(kind, d, List.of(
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top,
                "--blockdev", "driver=qcow2,node-name=top2,file.driver=file,file.filename=" + top2));
        daemons.add(daemon);
        JsonNode nodes = daemon.qmp.ok("query-named-block-nodes", map("flat", true));
        List<String> files = new ArrayList<>();
        nodes.forEach(n -> {
            if (n.get("file").asString().startsWith(d.resolve("base").toString())) {
                files.add(n.get("file").asString() + (n.get("ro").asBoolean() ? " ro" : " rw"));
            }
        });
        assertThat(files).as("%s opens both backing files read-only", kind).contains(base + " ro", raw + " ro");
        String error = daemon.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "bad",
                "file", map("driver", "file", "filename", bad.toString()))).get("desc").asString();
        assertThat(error).as("%s", kind).contains("Could not parse the JSON options");
        daemon.qmp.ok("block-stream", map("job-id", "s", "device", "top"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", data -> "s".equals(data.path("device").asString(null)));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.quit();
        assertThat(Qemu.info(top).has("backing-filename")).as("streamed: no backing file left").isFalse();
        Qemu.io(top, "qcow2", "read -P 9 64k 128k", "read -P 0 0 64k").ok();
        Qemu.io(top2, "qcow2", "read -P 7 0 64k", "read -P 0 64k 64k").ok();
        Qemu.assertClean(top);
        Qemu.assertClean(top2);
    }
}
