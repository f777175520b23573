package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * {@code BLOCK_IMAGE_CORRUPTED} and {@code BLOCK_IO_ERROR}, side by side with
 * qemu-storage-daemon 7.2: qcow2 images damaged on purpose (an L2 entry aimed at metadata, or
 * unaligned) are exported over NBD and read and written with qemu-io; each daemon's events,
 * qemu-io's answers, and the images afterwards ({@code qemu-img info}'s corrupt flag,
 * {@code qemu-img check}) must match.
 */
class BlockEventsIT {
    private static final long COPIED = 1L << 63;

    @TempDir
    Path dir;

    /** One damaged image: where its L2 entry 0 (or L1 entry 0) is aimed, and what a client does. */
    private record Damage(String name, String table, String target, long flags, long delta, boolean readOnly,
                          List<String> ops) {
    }

    private static final List<Damage> DAMAGES = List.of(
            new Damage("rt", "l2", "refcount-table", COPIED, 0, false,
                    List.of("write -P 0x22 0 4k", "read 0 4k", "write 64k 4k")),
            new Damage("l1", "l2", "l1", COPIED, 0, false, List.of("write -P 0x22 512 4k", "read 0 4k")),
            new Damage("l2", "l2", "l2", COPIED, 0, false, List.of("write -P 0x22 0 4k")),
            new Damage("rb", "l2", "refcount-block", COPIED, 0, false, List.of("write -P 0x22 0 4k")),
            new Damage("unaw", "l2", "data", COPIED, 0x200, false, List.of("write 0 4k", "read 0 4k")),
            new Damage("unar", "l2", "data", COPIED, 0x200, false, List.of("read 0 4k", "write 0 4k")),
            new Damage("zero", "l2", "data", 1, 0x200, false, List.of("read 0 4k")), // preallocated zero, unaligned
            new Damage("ro", "l2", "data", COPIED, 0x200, true, List.of("read 0 4k", "read 0 4k")),
            new Damage("fine", "l2", "refcount-table", 0, 0, false, List.of("write -P 0x22 0 4k", "read -P 0x22 0 4k")));

    /** Writes a qcow2 image with two data clusters and aims its L2 entry 0 where {@code d} says. */
    private static Path damaged(Path d, Damage damage) throws Exception {
        Path image = d.resolve(damage.name() + ".qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", image.toString(), "16M");
        Qemu.io(image, "qcow2", "write -P 0x11 0 128k");
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            long l1 = readLong(ch, 40);
            long refcountTable = readLong(ch, 48);
            long mask = 0x00ff_ffff_ffff_fe00L;
            long l2 = readLong(ch, l1) & mask;
            long data = readLong(ch, l2) & mask;
            long target = switch (damage.target()) {
                case "refcount-table" -> refcountTable;
                case "refcount-block" -> readLong(ch, refcountTable);
                case "l1" -> l1;
                case "l2" -> l2;
                default -> data;
            };
            assertThat(target).as("%s: the image has the layout the test aims at", damage.name()).isPositive();
            ByteBuffer entry = ByteBuffer.allocate(8).putLong(0, damage.flags() | (target + damage.delta()));
            ch.write(entry, damage.table().equals("l1") ? l1 : l2);
        }
        return image;
    }

    private static long readLong(FileChannel ch, long at) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(8);
        ch.read(b, at);
        return b.getLong(0);
    }

    /** Each event member but the timestamp, and qemu-io's first line of each answer, by step. */
    private Map<String, String> run(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind == Kind.QEMU ? "q" : "b"));
        Map<String, String> seen = new LinkedHashMap<>();
        List<Path> images = new ArrayList<>();
        try (StorageDaemon daemon = StorageDaemon.start(kind, d, List.of())) {
            seen.put("schema BLOCK_IMAGE_CORRUPTED", schemaOf(daemon, "BLOCK_IMAGE_CORRUPTED"));
            seen.put("schema BLOCK_IO_ERROR", schemaOf(daemon, "BLOCK_IO_ERROR"));
            for (Damage damage : DAMAGES) {
                Path image = damaged(d, damage);
                images.add(image);
                daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", damage.name(), "read-only",
                        damage.readOnly(), "file", map("driver", "file", "filename", image.toString())));
                daemon.qmp.ok("block-export-add", map("type", "nbd", "id", damage.name(), "node-name", damage.name(),
                        "writable", !damage.readOnly()));
                for (String op : damage.ops()) {
                    seen.put(damage.name() + ": " + op, qemuIo(daemon.nbdUri(damage.name()), damage.readOnly(), op));
                }
                seen.put(damage.name() + ": events", corruptionEvents(daemon, damage.name()));
            }

            // BLOCK_IO_ERROR: an NBD client's write fails on an injected ENOSPC; the export reports it to the client.
            Path raw = d.resolve("io.raw");
            Qemu.img("create", "-q", "-f", "raw", raw.toString(), "1M");
            daemon.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "io", "file", map("driver", "blkdebug",
                    "inject-error", List.of(map("event", "write_aio", "errno", 28)),
                    "image", map("driver", "file", "filename", raw.toString()))));
            daemon.qmp.ok("block-export-add", map("type", "nbd", "id", "io", "node-name", "io", "writable", true));
            seen.put("io: write", qemuIo(daemon.nbdUri("io"), false, "write 0 4k"));
            // hard: qemu-io has gone, but the daemon may not have read its disconnect yet
            daemon.qmp.ok("block-export-del", map("id", "io", "mode", "hard"));
            daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals("io"));
            seen.put("io: BLOCK_IO_ERROR events", String.valueOf(daemon.qmp.seenEvents().stream()
                    .filter(e -> e.get("event").asString().equals("BLOCK_IO_ERROR")).count()));
            seen.put("still up", daemon.qmp.ok("query-block-exports").toString());
            daemon.quit();
        }
        for (Path image : images) {
            String name = image.getFileName().toString();
            JsonNode info = Qemu.info(image);
            seen.put(name + " corrupt", info.at("/format-specific/data/corrupt").toString());
            JsonNode check = Qemu.JSON.readTree(Qemu.check(image).out());
            seen.put(name + " check", "corruptions=" + check.path("corruptions").asInt() + " leaks="
                    + check.path("leaks").asInt());
        }
        return seen;
    }

    /** qemu-io's first line for one command on an export. */
    private static String qemuIo(String uri, boolean readOnly, String op) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io"));
        if (readOnly) {
            cmd.add("-r");
        }
        cmd.addAll(List.of("-f", "raw", "-c", op, uri));
        Qemu.Result r = Qemu.run(cmd.toArray(String[]::new));
        return (r.out() + r.err()).lines().findFirst().orElse("").replaceAll("\\(.*/sec.*\\)", "(rate)");
    }

    /** The node's BLOCK_IMAGE_CORRUPTED events so far: its export is deleted and that event awaited first. */
    private static String corruptionEvents(StorageDaemon daemon, String node) throws Exception {
        daemon.qmp.ok("block-export-del", map("id", node, "mode", "hard")); // QSD may hold a failed client a while
        daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", e -> e.get("id").asString().equals(node));
        List<String> out = new ArrayList<>();
        for (JsonNode e : daemon.qmp.seenEvents()) {
            if (e.get("event").asString().equals("BLOCK_IMAGE_CORRUPTED") && e.at("/data/node-name").asString().equals(node)) {
                out.add(sorted(e.get("data")));
            }
        }
        return out.toString();
    }

    /** An object's members sorted by name (QEMU's dictionaries come in hash order). */
    private static String sorted(JsonNode data) {
        ObjectNode o = Qemu.JSON.createObjectNode();
        List<String> names = new ArrayList<>(data.propertyNames());
        names.sort(null);
        names.forEach(n -> o.set(n, data.get(n)));
        return o.toString();
    }

    /** An event's members in {@code query-qmp-schema}: name, "?" if optional, and type (an enum's values). */
    private static String schemaOf(StorageDaemon d, String event) throws Exception {
        Map<String, JsonNode> byName = new LinkedHashMap<>();
        for (JsonNode e : d.qmp.ok("query-qmp-schema")) {
            byName.put(e.get("name").asString(), e);
        }
        JsonNode entry = byName.get(event);
        if (entry == null || !entry.get("meta-type").asString().equals("event")) {
            return "absent";
        }
        List<String> out = new ArrayList<>();
        for (JsonNode m : byName.get(entry.get("arg-type").asString()).get("members")) {
            JsonNode type = byName.get(m.get("type").asString());
            String t = switch (type.get("meta-type").asString()) {
                case "builtin" -> type.get("json-type").asString();
                case "enum" -> type.get("values").toString();
                default -> type.get("meta-type").asString();
            };
            out.add(m.get("name").asString() + (m.has("default") ? "?" : "") + ":" + t);
        }
        return String.join(",", out);
    }

    @Test
    void corruptionAndIoErrorEventsAreQemuStorageDaemons() throws Exception {
        Map<String, String> qsd = run(Kind.QEMU);
        Map<String, String> bj = run(Kind.BLOCKJOBD);
        assertThat(bj.keySet()).containsExactlyElementsOf(qsd.keySet());
        for (String step : qsd.keySet()) {
            assertThat(bj.get(step)).as(step).isEqualTo(qsd.get(step));
        }
        // what the comparison stands on: QSD's own answers
        assertThat(qsd.get("schema BLOCK_IMAGE_CORRUPTED"))
                .isEqualTo("device:string,node-name?:string,msg:string,offset?:int,size?:int,fatal:boolean");
        assertThat(qsd.get("schema BLOCK_IO_ERROR")).isEqualTo("device:string,node-name?:string,"
                + "operation:[\"read\",\"write\"],action:[\"ignore\",\"report\",\"stop\"],nospace?:boolean,reason:string");
        assertThat(qsd.get("rt: events")).isEqualTo("[{\"device\":\"\",\"fatal\":true,\"msg\":\"Preventing invalid write"
                + " on metadata (overlaps with refcount table)\",\"node-name\":\"rt\",\"offset\":65536,\"size\":4096}]");
        assertThat(qsd.get("rt: write -P 0x22 0 4k")).isEqualTo("write failed: Input/output error");
        assertThat(qsd.get("rt: read 0 4k")).isEqualTo("read failed: Invalid argument"); // the node is unusable
        assertThat(qsd.get("l1: events")).contains("overlaps with active L1 table", "\"offset\":197120");
        assertThat(qsd.get("l2: events")).contains("overlaps with active L2 table");
        assertThat(qsd.get("rb: events")).contains("overlaps with refcount block");
        assertThat(qsd.get("unaw: events")).contains("Data cluster offset 0x50200 unaligned (guest offset: 0)");
        assertThat(qsd.get("unar: events"))
                .contains("Cluster allocation offset 0x50200 unaligned (L2 offset: 0x40000, L2 index: 0)");
        assertThat(qsd.get("ro: events")).contains("\"fatal\":false").doesNotContain("},{"); // once, not fatal
        assertThat(qsd.get("fine: events")).isEqualTo("[]"); // no COPIED flag: the write goes to a new cluster
        assertThat(qsd.get("rt.qcow2 corrupt")).isEqualTo("true");
        assertThat(qsd.get("ro.qcow2 corrupt")).isEqualTo("false");
        assertThat(qsd.get("io: write")).isEqualTo("write failed: No space left on device");
        assertThat(qsd.get("io: BLOCK_IO_ERROR events")).isEqualTo("0");
    }
}
