package io.blockjobs.platform.daemon;

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
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * The {@code format-specific} member of {@code query-named-block-nodes}' images, which libvirt
 * reads (qcow2's {@code compat} and persistent {@code bitmaps}): the same images opened by
 * blockjobd and by qemu-storage-daemon 7.2 show the same information.
 */
class FormatSpecificIT {
    @TempDir
    Path dir;

    /** Each node's format-specific information (a missing node where it has none), by node name. */
    private Map<String, JsonNode> formatSpecific(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Path v3 = d.resolve("v3.qcow2");
        Path lazy = d.resolve("lazy.qcow2");
        Path v2 = d.resolve("v2.qcow2");
        Path raw = d.resolve("disk.raw");
        Qemu.img("create", "-q", "-f", "qcow2", v3.toString(), "64M").ok();
        Qemu.img("bitmap", "--add", v3.toString(), "b0").ok();
        Qemu.img("bitmap", "--add", "-g", "128k", "--disable", v3.toString(), "b1").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,refcount_bits=32", lazy.toString(), "64M").ok();
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2.toString(), "64M").ok();
        Qemu.img("create", "-q", "-f", "raw", raw.toString(), "64M").ok();
        List<String> args = new ArrayList<>();
        for (String[] n : new String[][] {{"v3", v3.toString()}, {"lazy", lazy.toString()}, {"v2", v2.toString()}}) {
            args.addAll(List.of("--blockdev", "driver=qcow2,node-name=" + n[0] + ",file.driver=file,file.node-name="
                    + n[0] + "-file,file.filename=" + n[1]));
        }
        args.addAll(List.of("--blockdev", "driver=raw,node-name=raw,file.driver=file,file.node-name=raw-file,"
                + "file.filename=" + raw));
        Map<String, JsonNode> out = new TreeMap<>();
        try (StorageDaemon daemon = StorageDaemon.start(kind, d, args)) {
            for (JsonNode n : daemon.qmp.ok("query-named-block-nodes")) {
                out.put(n.get("node-name").asString(), n.at("/image/format-specific")); // JSON objects: equal in any order
            }
        }
        return out;
    }

    @Test
    void qcow2ImagesShowWhatQemuShows() throws Exception {
        Map<String, JsonNode> blockjobd = formatSpecific(Kind.BLOCKJOBD);
        Map<String, JsonNode> qemu = formatSpecific(Kind.QEMU);
        assertThat(blockjobd).as("blockjobd beside qemu-storage-daemon").isEqualTo(qemu);
        // and what that is: bitmaps marked in use by the read-write open, b0 enabled (auto)
        assertThat(blockjobd.get("v3").toString()).contains("\"compat\":\"1.1\"", "\"name\":\"b0\"", "\"in-use\",\"auto\"",
                "\"granularity\":131072");
        assertThat(blockjobd.get("lazy").toString()).contains("\"lazy-refcounts\":true", "\"refcount-bits\":32");
        assertThat(blockjobd.get("v2").toString()).contains("\"compat\":\"0.10\"").doesNotContain("lazy-refcounts");
        assertThat(blockjobd.get("raw").isMissingNode()).as("raw: none").isTrue();
        assertThat(blockjobd.get("raw-file").isMissingNode()).as("file: none").isTrue();
    }
}
