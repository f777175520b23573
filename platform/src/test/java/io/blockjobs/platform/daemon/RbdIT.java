package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.CephCluster;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import tools.jackson.databind.JsonNode;

/**
 * The {@code rbd} protocol driver against a real single-node Ceph cluster ({@link CephCluster}),
 * blockjobd beside qemu-storage-daemon 7.2 where both run the same QMP, with QEMU's tools
 * ({@code qemu-img}, {@code qemu-io} on {@code rbd:pool/image:conf=...} names) as the judges.
 */
class RbdIT {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    StorageDaemon daemon;
    final CephCluster ceph = CephCluster.get();

    @AfterEach
    void stop() throws Exception {
        if (daemon != null) {
            daemon.close();
        }
    }

    private void start(Kind kind) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        daemon = StorageDaemon.start(kind, d, List.of());
    }

    /** A new image of the pool, unique to this test and daemon, made by qemu-img. */
    private String newImage(String name, Kind kind, long size) {
        String image = name + "-" + kind.name().toLowerCase() + "-" + Long.toHexString(System.nanoTime());
        Qemu.img("create", "-f", "raw", ceph.rbdName(image), String.valueOf(size));
        return image;
    }

    private Map<String, Object> rbd(String node, String image, Object... more) {
        Map<String, Object> args = new LinkedHashMap<>(map("driver", "rbd", "node-name", node, "pool", CephCluster.POOL,
                "image", image, "conf", ceph.conf.toString()));
        for (int i = 0; i < more.length; i += 2) {
            args.put((String) more[i], more[i + 1]);
        }
        return args;
    }

    /** Exports {@code node} writable over NBD (export id {@code e}), under its own name. */
    private void exportWritable(String node) throws Exception {
        daemon.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", node, "name", node,
                "writable", true));
    }

    private JsonNode node(String name) throws Exception {
        for (JsonNode n : daemon.qmp.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(name)) {
                return n;
            }
        }
        throw new AssertionError("no node " + name);
    }

    @Test
    void theClusterServesQemusRbdDriver() {
        String name = ceph.rbdName("fixture-" + Long.toHexString(System.nanoTime()));
        Qemu.img("create", "-f", "raw", name, "64M");
        Qemu.Result info = Qemu.img("info", "--output=json", name);
        assertThat(info.out()).contains("\"virtual-size\": 67108864");
        assertThat(ceph.startMillis).as("cluster start").isLessThan(60_000);
    }

    /**
     * blockdev-add of an rbd node and a raw node over it, exported and written with qemu-io
     * (data, zeroes, a discard); QEMU's own rbd driver then reads the image back, and
     * {@code qemu-img map} through the export sees the holes QEMU sees in the image.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void writesThroughAnExportLandInTheImage(Kind kind) throws Exception {
        start(kind);
        String image = newImage("io", kind, 64L * MIB);
        daemon.qmp.ok("blockdev-add", rbd("r0", image, "discard", "unmap"));
        daemon.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "disk", "file", "r0", "discard", "unmap"));
        exportWritable("disk");
        String uri = daemon.nbdUri("disk");
        // Many requests in flight: qemu-io's aio_write issues them together.
        Qemu.ioNbd(uri, "aio_write -P 0x5a 0 1M", "aio_write -P 0x5b 1M 1M", "aio_write -P 0x5c 2M 1M",
                "aio_write -P 0x5d 3M 1M", "aio_flush", "write -P 0x61 20M 64k", "write -z 21M 1M",
                "write -P 0x62 40M 4M", "discard 40M 4M", "write -P 0x63 50M 512", "flush");
        Qemu.ioNbd(uri, "read -P 0x5a 0 1M", "read -P 0x5d 3M 1M", "read -P 0x61 20M 64k", "read -P 0 21M 1M",
                "read -P 0x63 50M 512");
        daemon.qmp.ok("block-export-del", map("id", "e"));
        daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> true);

        String name = ceph.rbdName(image);
        Qemu.Result qemu = Qemu.run("qemu-io", "-f", "raw", "-c", "read -P 0x5b 1M 1M", "-c", "read -P 0x5c 2M 1M",
                "-c", "read -P 0x61 20M 64k", "-c", "read -P 0 21M 1M", "-c", "read -P 0 40M 4M",
                "-c", "read -P 0x63 50M 512", "-c", "read -P 0 10M 64k", name).ok();
        assertThat(qemu.out()).doesNotContain("Pattern verification failed", "failed");

        JsonNode r0 = node("r0");
        assertThat(r0.get("drv").asString()).isEqualTo("rbd");
        assertThat(r0.at("/image/virtual-size").asLong()).isEqualTo(64L * MIB);
        for (String n : List.of("r0", "disk")) { // the object size, as QEMU's rbd_getinfo gives it
            assertThat(node(n).at("/image/cluster-size").asLong()).as(n).isEqualTo(4L * MIB);
            assertThat(node(n).at("/image/dirty-flag").asBoolean(true)).as(n).isFalse();
        }
        String rbdOptions = "{\"pool\": \"rbd\", \"image\": \"" + image + "\", \"conf\": \"" + ceph.conf
                + "\", \"driver\": \"rbd\"}";
        assertThat(r0.get("file").asString()).isEqualTo("json:" + rbdOptions);
        // a format node over it has no plain name either: QEMU names it with its child's options nested
        assertThat(node("disk").get("file").asString()).as("%s", kind)
                .isEqualTo("json:{\"driver\": \"raw\", \"file\": " + rbdOptions + "}");

        // Holes: the map through a read-only export of the node equals QEMU's map of the image.
        daemon.qmp.ok("block-export-add", map("type", "nbd", "id", "m", "node-name", "r0", "name", "map"));
        String throughExport = zeroMap(Qemu.img("map", "--output=json", "-f", "raw", daemon.nbdUri("map")).out());
        String direct = zeroMap(Qemu.img("map", "--output=json", "-f", "raw", name).out());
        assertThat(throughExport).as("map through %s's export", kind).isEqualTo(direct);
        assertThat(direct).as("QEMU sees holes").contains("zero");
    }

    /** {@code qemu-img map --output=json} as start, length and zero per extent (merged). */
    private static String zeroMap(String json) throws Exception {
        StringBuilder b = new StringBuilder();
        long runStart = 0;
        long runEnd = 0;
        Boolean zero = null;
        for (JsonNode e : Qemu.JSON.readTree(json)) {
            boolean z = e.get("zero").asBoolean();
            long start = e.get("start").asLong();
            if (zero != null && z == zero && start == runEnd) {
                runEnd = start + e.get("length").asLong();
                continue;
            }
            if (zero != null) {
                b.append(runStart).append('+').append(runEnd - runStart).append(zero ? " zero\n" : " data\n");
            }
            zero = z;
            runStart = start;
            runEnd = start + e.get("length").asLong();
        }
        if (zero != null) {
            b.append(runStart).append('+').append(runEnd - runStart).append(zero ? " zero\n" : " data\n");
        }
        return b.toString();
    }

    /** Bad input: each a clear error naming what is wrong, the same as QEMU's; the daemon goes on. */
    @Test
    void badLocationsFailAsInQemu() throws Exception {
        List<String> answers = new ArrayList<>();
        String wrongKey = Qemu.run("ceph-authtool", "--gen-print-key").ok().out().strip();
        String image = newImage("err", Kind.QEMU, MIB);
        for (Kind kind : Kind.values()) {
            start(kind);
            List<String> mine = new ArrayList<>();
            Map<String, Object> noPool = rbd("a", image);
            noPool.put("pool", "nopool");
            mine.add(daemon.qmp.error("blockdev-add", noPool).get("desc").asString());
            mine.add(daemon.qmp.error("blockdev-add", rbd("b", "nosuch")).get("desc").asString());
            Map<String, Object> noConf = rbd("c", image);
            noConf.put("conf", dir.resolve("absent.conf").toString());
            mine.add(daemon.qmp.error("blockdev-add", noConf).get("desc").asString());
            mine.add(daemon.qmp.error("blockdev-add", rbd("d", image, "user", "nobody")).get("desc").asString());
            mine.add(daemon.qmp.error("blockdev-add", rbd("e", image, "snapshot", "nosnap")).get("desc").asString());
            // A wrong key: a secret holding another key than the admin's
            daemon.qmp.ok("object-add", map("qom-type", "secret", "id", "wrong", "data", wrongKey, "format", "base64"));
            mine.add(daemon.qmp.error("blockdev-add", rbd("f", image, "key-secret", "wrong")).get("desc").asString());
            mine.add(daemon.qmp.error("blockdev-add", rbd("g", image, "key-secret", "absent")).get("desc").asString());
            mine.add(daemon.qmp.error("blockdev-add", rbd("h", image, "auth-client-required", List.of("none")))
                    .get("desc").asString());
            // the admin's key given as a secret, with cephx required: that opens
            daemon.qmp.ok("object-add", map("qom-type", "secret", "id", "admin", "data", ceph.adminKey(),
                    "format", "base64"));
            daemon.qmp.ok("blockdev-add", rbd("keyed", image, "key-secret", "admin", "auth-client-required",
                    List.of("cephx")));
            daemon.qmp.ok("blockdev-add", rbd("ok", image)); // still up, still opening images
            answers.add(kind + ": " + String.join(" | ", mine));
            daemon.close();
            daemon = null;
        }
        assertThat(answers.get(0).substring(answers.get(0).indexOf(':')))
                .as("blockjobd's errors beside QEMU's").isEqualTo(answers.get(1).substring(answers.get(1).indexOf(':')));
        assertThat(answers.get(0)).contains("error opening pool nopool: No such file or directory",
                "error reading header from nosuch: No such file or directory", "error connecting: Permission denied");
    }

    /**
     * A monitor that does not answer: the open fails after blockjobd's mount timeout with QEMU's
     * message (QEMU waits librados' five minutes), and the daemon goes on.
     */
    @Test
    void aMonitorThatIsDownFailsTheOpenNotTheDaemon() throws Exception {
        start(Kind.BLOCKJOBD);
        String image = newImage("down", Kind.BLOCKJOBD, MIB);
        int dead;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            dead = s.getLocalPort(); // nothing listens there once closed
        }
        long t0 = System.nanoTime();
        JsonNode e = daemon.qmp.error("blockdev-add", rbd("r", image, "server",
                List.of(map("host", "127.0.0.1", "port", String.valueOf(dead)))));
        assertThat(e.get("desc").asString()).isEqualTo("error connecting: Connection timed out");
        assertThat((System.nanoTime() - t0) / 1_000_000_000).as("seconds to fail").isLessThan(60);
        assertThat(daemon.qmp.ok("query-named-block-nodes")).isEmpty();
        daemon.qmp.ok("blockdev-add", rbd("r", image, "server", List.of(map("host", "127.0.0.1", "port",
                String.valueOf(ceph.monPort)))));
    }

    /**
     * Storage migration into the cluster: a local qcow2 disk, written through its export while
     * the mirror copies (slowed, so the writes land mid-copy) and after it is ready, mirrored
     * into a new RBD image; after {@code job-complete} the image equals the disk.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void mirrorALocalDiskIntoTheCluster(Kind kind) throws Exception {
        Path disk = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", disk.toString(), "32M");
        Qemu.io(disk, "qcow2", "write -P 0x11 0 8M", "write -P 0x12 12M 2M", "write -z 20M 1M");
        start(kind);
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "src",
                "file", map("driver", "file", "filename", disk.toString())));
        exportWritable("src");
        String image = newImage("mirror", kind, 32L * MIB);
        daemon.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "tgt", "file", rbd("tgt-file", image)));
        // QEMU's ImageInfoSpecificRbd on the rbd node (no LUKS header: no encryption-format), none on the raw node
        assertThat(node("tgt-file").at("/image/format-specific").toString()).as("%s", kind)
                .isEqualTo("{\"type\":\"rbd\",\"data\":{}}");
        assertThat(node("tgt").at("/image/format-specific").isMissingNode()).as("%s", kind).isTrue();
        daemon.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "src", "target", "tgt", "sync", "full",
                "speed", 4L * MIB));
        String uri = daemon.nbdUri("src");
        Qemu.ioNbd(uri, "aio_write -P 0x21 1M 64k", "aio_write -P 0x22 7M 1M", "aio_write -P 0x23 30M 1M",
                "aio_flush");
        daemon.qmp.ok("block-job-set-speed", map("device", "m", "speed", 0));
        daemon.qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("m"));
        Qemu.ioNbd(uri, "write -P 0x24 13M 512k", "write -z 0 64k", "flush");
        daemon.qmp.ok("job-complete", map("id", "m"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("m"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.qmp.ok("block-export-del", map("id", "e"));
        daemon.qmp.awaitEvent("BLOCK_EXPORT_DELETED", d -> true);
        Qemu.Result compare = Qemu.run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", disk.toString(),
                ceph.rbdName(image));
        assertThat(compare.exit()).as("qemu-img compare: %s %s", compare.out(), compare.err()).isZero();
        Qemu.run("qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -P 0x24 13M 512k", disk.toString()).ok();
        // Thin: sync full zeroes the rest of the target, and librbd's zeroes allocate nothing, so
        // blockjobd's image holds the 4 MiB objects with data (0-8M, 12-14M, 30M) and no others.
        // QEMU copies a zero run that does not cover whole objects as data (mirror_iteration's
        // bdrv_round_to_clusters test): [20M, 30M) reads as zeroes, so it allocates 20-28M too.
        assertThat(usedBytes(image)).as("%s: bytes the image allocates in the cluster", kind)
                .isEqualTo(kind == Kind.BLOCKJOBD ? 16L * MIB : 24L * MIB);
    }

    /** What {@code rbd du} says the image allocates (whole objects, from its object map). */
    private long usedBytes(String image) {
        JsonNode du = Qemu.JSON.readTree(ceph.rbd("du", "--format", "json",
                CephCluster.POOL + "/" + image).ok().out());
        return du.at("/images/0/used_size").asLong();
    }

    /** {@code block_resize} grows the image in the cluster; a snapshot opens read-only and reads what it held. */
    @Test
    void resizeAndSnapshots() throws Exception {
        start(Kind.BLOCKJOBD);
        String image = newImage("snap", Kind.BLOCKJOBD, 8L * MIB);
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x31 0 1M", ceph.rbdName(image)).ok();
        ceph.rbd("snap", "create", CephCluster.POOL + "/" + image + "@s1").ok();
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x32 0 1M", ceph.rbdName(image)).ok();

        daemon.qmp.ok("blockdev-add", rbd("r", image));
        daemon.qmp.ok("block_resize", map("node-name", "r", "size", 16L * MIB));
        assertThat(Qemu.img("info", "--output=json", ceph.rbdName(image)).out()).contains("\"virtual-size\": 16777216");
        assertThat(node("r").at("/image/virtual-size").asLong()).isEqualTo(16L * MIB);

        assertThat(daemon.qmp.error("blockdev-add", rbd("s", image, "snapshot", "s1")).get("desc").asString())
                .isEqualTo("rbd snapshots are read-only");
        daemon.qmp.ok("blockdev-add", rbd("s", image, "snapshot", "s1", "read-only", true));
        assertThat(node("s").get("ro").asBoolean()).isTrue();
        daemon.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "s", "name", "s"));
        Qemu.Result old = Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x31 0 1M", daemon.nbdUri("s")).ok();
        assertThat(old.out()).doesNotContain("Pattern verification failed");
        daemon.qmp.ok("block-export-add", map("type", "nbd", "id", "w", "node-name", "r", "name", "r", "writable", true));
        Qemu.ioNbd(daemon.nbdUri("r"), "read -P 0x32 0 1M", "read -P 0 8M 8M");
    }

    /** Runs blockdev-create to its end; the job's error, or null. */
    private String create(String jobId, Map<String, Object> options) throws Exception {
        daemon.qmp.ok("blockdev-create", map("job-id", jobId, "options", options));
        daemon.qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("id").asString().equals(jobId)
                && d.get("status").asString().equals("concluded"));
        JsonNode job = daemon.qmp.ok("query-jobs").get(0);
        daemon.qmp.ok("job-dismiss", map("id", jobId));
        return job.has("error") ? job.get("error").asString() : null;
    }

    /** {@code blockdev-create} with {@code driver: rbd}: the image QEMU's {@code qemu-img info} then sees, and QEMU's errors. */
    @Test
    void blockdevCreateMakesRbdImagesAsQemuDoes() throws Exception {
        List<String> seen = new ArrayList<>();
        for (Kind kind : Kind.values()) {
            start(kind);
            String image = "created-" + kind.name().toLowerCase() + "-" + Long.toHexString(System.nanoTime());
            Map<String, Object> location = map("pool", CephCluster.POOL, "image", image, "conf", ceph.conf.toString());
            assertThat(create("c", map("driver", "rbd", "location", location, "size", 24L * MIB,
                    "cluster-size", 1 << 20))).isNull();
            JsonNode info = Qemu.JSON.readTree(Qemu.img("info", "--output=json", ceph.rbdName(image)).out());
            assertThat(info.get("virtual-size").asLong()).isEqualTo(24L * MIB);
            assertThat(info.get("cluster-size").asLong()).isEqualTo(1 << 20);
            String again = create("c", map("driver", "rbd", "location", location, "size", MIB));
            Map<String, Object> badPool = new LinkedHashMap<>(location);
            badPool.put("pool", "nopool");
            String noPool = create("c", map("driver", "rbd", "location", badPool, "size", MIB));
            String notPower = create("c", map("driver", "rbd", "location", location, "size", MIB, "cluster-size", 12288));
            Map<String, Object> snap = new LinkedHashMap<>(location);
            snap.put("snapshot", "s");
            String withSnap;
            JsonNode r = daemon.qmp.execute("blockdev-create", map("job-id", "c", "options",
                    map("driver", "rbd", "location", snap, "size", MIB)));
            if (r.has("error")) {
                withSnap = r.at("/error/desc").asString();
            } else {
                daemon.qmp.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("status").asString().equals("concluded"));
                JsonNode job = daemon.qmp.ok("query-jobs").get(0);
                daemon.qmp.ok("job-dismiss", map("id", "c"));
                withSnap = job.path("error").asString();
            }
            seen.add(again + " | " + noPool + " | " + notPower + " | " + withSnap);
            daemon.close();
            daemon = null;
        }
        assertThat(seen.get(0)).as("blockjobd beside QEMU").isEqualTo(seen.get(1));
        assertThat(seen.get(0)).contains("error rbd create: File exists", "error opening pool nopool");
    }

    /**
     * A golden image in the cluster under a local qcow2 overlay ({@code rbd:} backing file name):
     * the overlay reads through to it, and {@code block-stream} copies it up so that the overlay
     * stands alone and reads the same.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void streamAnRbdBackingFileIntoALocalOverlay(Kind kind) throws Exception {
        String image = newImage("golden", kind, 16L * MIB);
        String name = ceph.rbdName(image);
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x41 0 4M", "-c", "write -P 0x42 9M 1M", name).ok();
        Path overlay = dir.resolve("overlay.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", name, "-F", "raw", overlay.toString());
        Qemu.io(overlay, "qcow2", "write -P 0x43 1M 64k");
        Path expected = dir.resolve("expected.raw");
        Qemu.img("convert", "-O", "raw", overlay.toString(), expected.toString());

        start(kind);
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "top",
                "file", map("driver", "file", "filename", overlay.toString())));
        assertThat(node("top").at("/image/backing-filename").asString()).isEqualTo(name);
        daemon.qmp.ok("block-stream", map("job-id", "s", "device", "top"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("s"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.qmp.ok("blockdev-del", map("node-name", "top"));
        JsonNode info = Qemu.JSON.readTree(Qemu.img("info", "--output=json", overlay.toString()).out());
        assertThat(info.has("backing-filename")).as("stand-alone after the stream").isFalse();
        assertThat(Qemu.identical(overlay, "qcow2", expected, "raw")).isTrue();
        Qemu.assertClean(overlay);
    }

    /**
     * A local overlay committed down into its RBD base (active commit: the base, opened
     * read-only as a backing file, is reopened writable): the image in the cluster then holds
     * what the overlay showed.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void commitALocalOverlayIntoAnRbdBase(Kind kind) throws Exception {
        String image = newImage("base", kind, 16L * MIB);
        String name = ceph.rbdName(image);
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x51 0 8M", name).ok();
        Path overlay = dir.resolve("overlay.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", name, "-F", "raw", overlay.toString());
        Qemu.io(overlay, "qcow2", "write -P 0x52 2M 1M", "write -z 4M 64k", "write -P 0x53 12M 1M");
        Path expected = dir.resolve("expected.raw");
        Qemu.img("convert", "-O", "raw", overlay.toString(), expected.toString());

        start(kind);
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "top",
                "file", map("driver", "file", "filename", overlay.toString())));
        daemon.qmp.ok("block-commit", map("job-id", "c", "device", "top"));
        daemon.qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("c"));
        daemon.qmp.ok("job-complete", map("id", "c"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("c"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.close();
        daemon = null;
        Qemu.Result compare = Qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), name);
        assertThat(compare.exit()).as("qemu-img compare: %s %s", compare.out(), compare.err()).isZero();
    }

    /**
     * Backups of a disk in the cluster into local qcow2 files: a full one with a dirty bitmap
     * started beside it, writes through the export, then an incremental one (the bitmap's
     * clusters only) onto an overlay of the full one; each restores the disk as it was.
     */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void fullAndIncrementalBackupsOfAnRbdDisk(Kind kind) throws Exception {
        String image = newImage("backup", kind, 16L * MIB);
        String name = ceph.rbdName(image);
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x61 0 4M", "-c", "write -P 0x62 10M 1M", name).ok();
        start(kind);
        daemon.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "disk", "file", rbd("r", image)));
        exportWritable("disk");
        Path full = dir.resolve("full.qcow2");
        Qemu.img("create", "-f", "qcow2", full.toString(), "16M");
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "full",
                "file", map("driver", "file", "filename", full.toString())));
        daemon.qmp.ok("transaction", map("actions", List.of(
                map("type", "block-dirty-bitmap-add", "data", map("node", "disk", "name", "b0")),
                map("type", "blockdev-backup", "data", map("job-id", "f", "device", "disk", "target", "full",
                        "sync", "full")))));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("f"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        Path atFull = dir.resolve("at-full.raw");
        Qemu.img("convert", "-f", "raw", "-O", "raw", name, atFull.toString());
        daemon.qmp.ok("blockdev-del", map("node-name", "full"));

        Qemu.ioNbd(daemon.nbdUri("disk"), "write -P 0x63 1M 64k", "write -P 0x64 12M 2M", "write -z 10M 512k");
        Path inc = dir.resolve("inc.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", full.toString(), "-F", "qcow2", inc.toString());
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "inc",
                "file", map("driver", "file", "filename", inc.toString())));
        daemon.qmp.ok("blockdev-backup", map("job-id", "i", "device", "disk", "target", "inc", "sync", "incremental",
                "bitmap", "b0"));
        done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("i"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.close();
        daemon = null;

        assertThat(Qemu.identical(full, "qcow2", atFull, "raw")).as("the full backup restores the first point").isTrue();
        Qemu.Result compare = Qemu.run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", inc.toString(), name);
        assertThat(compare.exit()).as("incremental on full equals the disk: %s %s", compare.out(), compare.err()).isZero();
        assertThat(Files.size(inc)).as("the incremental holds the dirty clusters only").isLessThan(4L * MIB);
        Qemu.assertClean(full);
        Qemu.assertClean(inc);
    }

    /** And out again: an RBD disk, written through its export meanwhile, mirrored into a local qcow2 file. */
    @ParameterizedTest
    @EnumSource(Kind.class)
    void mirrorAnRbdDiskOutOfTheCluster(Kind kind) throws Exception {
        String image = newImage("out", kind, 24L * MIB);
        String name = ceph.rbdName(image);
        Qemu.run("qemu-io", "-f", "raw", "-c", "write -P 0x71 0 6M", "-c", "write -P 0x72 16M 2M", name).ok();
        start(kind);
        daemon.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "disk", "file", rbd("r", image)));
        exportWritable("disk");
        Path local = dir.resolve("local.qcow2");
        Qemu.img("create", "-f", "qcow2", local.toString(), "24M");
        daemon.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "tgt",
                "file", map("driver", "file", "filename", local.toString())));
        daemon.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "tgt", "sync", "full",
                "speed", 4L * MIB));
        Qemu.ioNbd(daemon.nbdUri("disk"), "aio_write -P 0x73 1M 64k", "aio_write -P 0x74 20M 1M", "aio_flush");
        daemon.qmp.ok("block-job-set-speed", map("device", "m", "speed", 0));
        daemon.qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("m"));
        Qemu.ioNbd(daemon.nbdUri("disk"), "write -P 0x75 3M 512k", "write -z 16M 64k", "flush");
        daemon.qmp.ok("job-complete", map("id", "m"));
        JsonNode done = daemon.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("m"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", kind, done).isTrue();
        daemon.close();
        daemon = null;
        Qemu.Result compare = Qemu.run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", local.toString(), name);
        assertThat(compare.exit()).as("qemu-img compare: %s %s", compare.out(), compare.err()).isZero();
        Qemu.io(local, "qcow2", "read -P 0x75 3M 512k", "read -P 0x74 20M 1M");
        Qemu.assertClean(local);
    }

    /** {@code query-qmp-schema}: blockdev-add's {@code rbd} variant has QEMU's members, with the same names and optionality. */
    @Test
    void theSchemaHasQemusRbdOptions() throws Exception {
        List<String> members = new ArrayList<>();
        for (Kind kind : Kind.values()) {
            start(kind);
            JsonNode schema = daemon.qmp.ok("query-qmp-schema");
            Map<String, JsonNode> byName = new LinkedHashMap<>();
            for (JsonNode e : schema) {
                byName.put(e.get("name").asString(), e);
            }
            JsonNode union = byName.get(byName.get("blockdev-add").get("arg-type").asString());
            String rbdType = null;
            for (JsonNode v : union.get("variants")) {
                if (v.get("case").asString().equals("rbd")) {
                    rbdType = v.get("type").asString();
                }
            }
            assertThat(rbdType).as("%s has an rbd variant", kind).isNotNull();
            List<String> names = new ArrayList<>();
            for (JsonNode m : byName.get(rbdType).get("members")) {
                names.add(m.get("name").asString() + (m.has("default") ? "?" : ""));
            }
            members.add(String.join(",", names));
            daemon.close();
            daemon = null;
        }
        assertThat(members.get(0)).as("blockjobd's BlockdevOptionsRbd beside QEMU's").isEqualTo(members.get(1));
    }
}
