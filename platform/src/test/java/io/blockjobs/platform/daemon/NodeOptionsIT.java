package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.HostFiles;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import io.blockjobs.platform.testkit.Strace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * The options every node takes ({@code detect-zeroes}, {@code discard}, {@code cache.direct},
 * {@code cache.no-flush}, {@code read-only}, {@code auto-read-only}, {@code force-share},
 * {@code locking}), each shown by its effect: the same sequence runs on blockjobd and on QEMU's
 * qemu-storage-daemon, each on its own copy of the image, and what the host and qemu-img see
 * afterwards is compared.
 */
class NodeOptionsIT {
    private static final List<Kind> BOTH = List.of(Kind.BLOCKJOBD, Kind.QEMU);
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;
    private final List<StorageDaemon> running = new ArrayList<>();
    private int runs;

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : running) {
            d.close();
        }
    }

    // ---- set-up ----------------------------------------------------------------------------------

    /** A 4 MiB qcow2 (64 KiB clusters) of {@code kind}'s own, 0xaa in [0, 2M): [0, 1M) allocated, [2M, 3M) not. */
    private Path image(Kind kind, String name) throws Exception {
        Path d = Files.createDirectories(dir.resolve(kind.name().toLowerCase()));
        Path img = d.resolve(name);
        Qemu.img("create", "-f", "qcow2", img.toString(), "4M");
        Qemu.io(img, "qcow2", "write -P 0xaa 0 2M");
        return img;
    }

    private StorageDaemon start(Kind kind, List<String> launcher, List<String> options) throws Exception {
        Path d = Files.createDirectories(dir.resolve("run" + runs++));
        if (!launcher.isEmpty()) {
            Files.setPosixFilePermissions(d, PosixFilePermissions.fromString("rwxrwxrwx")); // another user's sockets
        }
        StorageDaemon s = StorageDaemon.start(kind, launcher, d, options);
        running.add(s);
        return s;
    }

    private StorageDaemon start(Kind kind, List<String> options) throws Exception {
        return start(kind, List.of(), options);
    }

    /** {@code d0}, a qcow2 node with {@code options} on {@code img}, exported writable as {@code d0}. */
    private StorageDaemon startExported(Kind kind, Path img, String options) throws Exception {
        return start(kind, List.of(
                "--blockdev", "driver=qcow2,node-name=d0," + (options.isEmpty() ? "" : options + ",")
                        + "file.driver=file,file.filename=" + img,
                "--export", "type=nbd,id=e,node-name=d0,name=d0,writable=on"));
    }

    private static JsonNode namedNode(StorageDaemon d, String name) throws Exception {
        for (JsonNode n : d.qmp.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(name)) {
                return n;
            }
        }
        throw new AssertionError(d + " has no node " + name);
    }

    /** The {@code file} node opened for {@code img} (an implicit child: its name is generated). */
    private static JsonNode fileNode(StorageDaemon d, Path img) throws Exception {
        for (JsonNode n : d.qmp.ok("query-named-block-nodes")) {
            if (n.get("drv").asString().equals("file") && n.get("file").asString().equals(img.toString())) {
                return n;
            }
        }
        throw new AssertionError(d + " has no file node for " + img);
    }

    /** The extent of a {@code qemu-img map --output=json} that holds {@code offset}. */
    private static JsonNode extentAt(JsonNode map, long offset) {
        for (JsonNode e : map) {
            long start = e.get("start").asLong();
            if (start <= offset && offset < start + e.get("length").asLong()) {
                return e;
            }
        }
        throw new AssertionError("no extent holds " + offset + " in " + map);
    }

    // ---- detect-zeroes ---------------------------------------------------------------------------

    @ParameterizedTest(name = "detect-zeroes={0}")
    @ValueSource(strings = {"off", "on", "unmap"})
    void detectZeroesMakesZeroWritesWhatQemuMakesOfThem(String mode) throws Exception {
        Map<Kind, JsonNode> maps = new EnumMap<>(Kind.class);
        Map<Kind, Long> freed = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "dz.qcow2");
            long before = HostFiles.allocatedBytes(img);
            StorageDaemon d = startExported(kind, img, "detect-zeroes=" + mode + (mode.equals("unmap") ? ",discard=unmap" : ""));
            assertThat(namedNode(d, "d0").get("detect_zeroes").asString()).isEqualTo(mode);
            assertThat(fileNode(d, img).get("detect_zeroes").asString()).as("not inherited").isEqualTo("off");
            Qemu.ioNbd(d.nbdUri("d0"), "write -P 0 0 1M", "write -P 0 2M 1M"); // zero buffers, allocated and not
            d.quit();
            maps.put(kind, Qemu.map(img));
            freed.put(kind, before - HostFiles.allocatedBytes(img));
            Qemu.assertClean(img);
            Qemu.io(img, "qcow2", "read -P 0 0 1M", "read -P 0xaa 1M 1M", "read -P 0 2M 2M");
        }
        assertThat(maps.get(Kind.BLOCKJOBD)).as("qemu-img map after blockjobd (QEMU's: %s)", maps.get(Kind.QEMU))
                .isEqualTo(maps.get(Kind.QEMU));
        JsonNode allocated = extentAt(maps.get(Kind.BLOCKJOBD), 0);
        JsonNode unallocated = extentAt(maps.get(Kind.BLOCKJOBD), 2 * MIB);
        switch (mode) {
            case "off" -> { // zero buffers are data
                assertThat(allocated.get("data").asBoolean()).isTrue();
                assertThat(unallocated.get("data").asBoolean()).isTrue();
            }
            case "on" -> { // zero clusters that keep their storage; new ones are plain zero clusters
                assertThat(allocated.get("zero").asBoolean()).isTrue();
                assertThat(allocated.has("offset")).as("ZERO_ALLOC keeps its host cluster").isTrue();
                assertThat(unallocated.get("zero").asBoolean()).isTrue();
                assertThat(unallocated.get("present").asBoolean()).isTrue();
            }
            default -> { // unmap: the clusters are freed, and the file gives the space back
                assertThat(allocated.get("zero").asBoolean()).isTrue();
                assertThat(allocated.has("offset")).as("the host cluster is freed").isFalse();
                assertThat(unallocated.get("present").asBoolean()).isTrue();
            }
        }
        for (Kind kind : BOTH) {
            if (mode.equals("unmap")) {
                assertThat(freed.get(kind)).as("%s gives back the host space", kind).isGreaterThanOrEqualTo(900 * 1024);
            } else {
                assertThat(freed.get(kind)).as("%s keeps the host space", kind).isLessThan(64 * 1024);
            }
        }
    }

    @Test
    void badOptionValuesAreRefusedWithQemusWords() throws Exception {
        Path q = dir.resolve("q.qcow2");
        Qemu.img("create", "-f", "qcow2", q.toString(), "1M");
        Path raw = dir.resolve("r.raw");
        Qemu.img("create", "-f", "raw", raw.toString(), "1M");
        Map<String, Object> file = map("driver", "file", "filename", q.toString());
        List<Map<String, Object>> bad = List.of(
                map("driver", "qcow2", "node-name", "a", "detect-zeroes", "unmap", "file", file),
                map("driver", "qcow2", "node-name", "a", "detect-zeroes", "unmap", "discard", "ignore", "file", file),
                map("driver", "qcow2", "node-name", "a", "detect-zeroes", "bogus", "file", file),
                map("driver", "qcow2", "node-name", "a", "discard", "bogus", "file", file),
                map("driver", "qcow2", "node-name", "a", "discard", "on", "file", file),
                map("driver", "qcow2", "node-name", "a", "force-share", true, "file", file),
                map("driver", "qcow2", "node-name", "a", "cache", map("bogus", true), "file", file),
                map("driver", "qcow2", "node-name", "a", "file", map("driver", "file", "filename", q.toString(), "locking", "bogus")));
        List<String> words = List.of(
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap",
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap",
                "Parameter 'detect-zeroes' does not accept value 'bogus'",
                "Parameter 'discard' does not accept value 'bogus'",
                "Parameter 'discard' does not accept value 'on'",
                "force-share=on can only be used with read-only images",
                "Parameter 'cache.bogus' is unexpected",
                "Parameter 'locking' does not accept value 'bogus'");
        for (Kind kind : BOTH) {
            StorageDaemon d = start(kind, List.of());
            for (int i = 0; i < bad.size(); i++) {
                assertThat(d.qmp.error("blockdev-add", bad.get(i)).get("desc").asString())
                        .as("%s: blockdev-add %s", kind, bad.get(i)).isEqualTo(words.get(i));
            }
            assertThat(d.qmp.ok("query-named-block-nodes").isEmpty()).as("%s opened nothing", kind).isTrue();
            d.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "ok", "detect-zeroes", "unmap", "discard", "unmap",
                    "file", file));
            d.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "r", "read-only", true,
                    "file", map("driver", "file", "filename", raw.toString())));
            assertThat(d.qmp.error("block-export-add", map("type", "nbd", "id", "w", "node-name", "r", "writable", true))
                    .get("desc").asString()).as("%s", kind).isEqualTo("Cannot export read-only node as writable");
            d.quit();
        }
    }

    // ---- discard ---------------------------------------------------------------------------------

    @ParameterizedTest(name = "discard={0}")
    @ValueSource(strings = {"ignore", "unmap", "(default)"})
    void discardIsDroppedOrPassedOnAsQemuDoes(String discard) throws Exception {
        boolean unmap = discard.equals("unmap");
        Map<Kind, JsonNode> maps = new EnumMap<>(Kind.class);
        Map<Kind, Long> freed = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "discard.qcow2");
            long before = HostFiles.allocatedBytes(img);
            StorageDaemon d = startExported(kind, img, discard.startsWith("(") ? "" : "discard=" + discard);
            // Accepted either way: with discard=ignore the trim succeeds and does nothing.
            assertThat(Qemu.ioNbd(d.nbdUri("d0"), "discard 0 1M").out()).contains("discard 1048576/1048576 bytes at offset 0");
            d.quit();
            maps.put(kind, Qemu.map(img));
            freed.put(kind, before - HostFiles.allocatedBytes(img));
            Qemu.assertClean(img);
            Qemu.io(img, "qcow2", unmap ? "read -P 0 0 1M" : "read -P 0xaa 0 1M", "read -P 0xaa 1M 1M");
        }
        assertThat(maps.get(Kind.BLOCKJOBD)).as("qemu-img map after blockjobd (QEMU's: %s)", maps.get(Kind.QEMU))
                .isEqualTo(maps.get(Kind.QEMU));
        JsonNode first = extentAt(maps.get(Kind.BLOCKJOBD), 0);
        if (unmap) {
            assertThat(first.get("zero").asBoolean()).isTrue();
            assertThat(first.has("offset")).isFalse();
            assertThat(first.get("length").asLong()).isEqualTo(MIB);
        } else {
            assertThat(first.get("data").asBoolean()).as("the clusters stay allocated").isTrue();
            assertThat(first.get("length").asLong()).isEqualTo(2 * MIB);
        }
        for (Kind kind : BOTH) {
            if (unmap) {
                assertThat(freed.get(kind)).as("%s gives back the host space", kind).isGreaterThanOrEqualTo(900 * 1024);
            } else {
                assertThat(freed.get(kind)).as("%s keeps the host space", kind).isLessThan(64 * 1024);
            }
        }
    }

    @ParameterizedTest(name = "discard={0}: {1}")
    @CsvSource({"ignore, write -z", "unmap, write -z", "unmap, write -z -u"})
    void writeZeroesLeaveWhatQemusLeave(String discard, String command) throws Exception {
        boolean frees = command.endsWith("-u");
        Map<Kind, JsonNode> maps = new EnumMap<>(Kind.class);
        Map<Kind, Long> freed = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "wz.qcow2");
            long before = HostFiles.allocatedBytes(img);
            StorageDaemon d = startExported(kind, img, "discard=" + discard);
            Qemu.ioNbd(d.nbdUri("d0"), command + " 0 1M", command + " 2M 1M");
            d.quit();
            maps.put(kind, Qemu.map(img));
            freed.put(kind, before - HostFiles.allocatedBytes(img));
            Qemu.assertClean(img);
            Qemu.io(img, "qcow2", "read -P 0 0 1M", "read -P 0xaa 1M 1M", "read -P 0 2M 2M");
        }
        assertThat(maps.get(Kind.BLOCKJOBD)).as("qemu-img map after blockjobd (QEMU's: %s)", maps.get(Kind.QEMU))
                .isEqualTo(maps.get(Kind.QEMU));
        JsonNode first = extentAt(maps.get(Kind.BLOCKJOBD), 0);
        assertThat(first.get("zero").asBoolean()).isTrue();
        assertThat(first.has("offset")).as("the host cluster is %s", frees ? "freed" : "kept").isEqualTo(!frees);
        assertThat(extentAt(maps.get(Kind.BLOCKJOBD), 2 * MIB).get("present").asBoolean())
                .as("an unallocated cluster becomes a zero cluster").isTrue();
        for (Kind kind : BOTH) {
            if (frees) {
                assertThat(freed.get(kind)).as("%s", kind).isGreaterThanOrEqualTo(900 * 1024);
            } else {
                assertThat(freed.get(kind)).as("%s", kind).isLessThan(64 * 1024);
            }
        }
    }

    /**
     * The one place blockjobs does not copy QEMU 7.2: an NBD write-zeroes that may unmap (no
     * NO_HOLE flag) on a {@code discard=ignore} node. QEMU strips the unmap flag in
     * {@code bdrv_co_pwrite_zeroes}, which node-level callers go through, but its NBD server's
     * BlockBackend path skips that check, so qcow2 frees the clusters anyway (the file is not told:
     * {@code pass-discard-request} follows {@code discard}). blockjobs applies {@code discard=ignore}
     * to every caller: the clusters become zero clusters that keep their storage. The guest sees
     * the same zeroes and the host file keeps its space in both.
     */
    @Test
    void writeZeroesThatMayUnmapKeepTheirClustersUnderDiscardIgnore() throws Exception {
        Map<Kind, JsonNode> maps = new EnumMap<>(Kind.class);
        Map<Kind, Path> images = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "wzu.qcow2");
            long before = HostFiles.allocatedBytes(img);
            StorageDaemon d = startExported(kind, img, "");
            Qemu.ioNbd(d.nbdUri("d0"), "write -z -u 0 1M", "write -z -u 2M 1M");
            d.quit();
            maps.put(kind, Qemu.map(img));
            images.put(kind, img);
            assertThat(before - HostFiles.allocatedBytes(img)).as("%s keeps the host space", kind).isLessThan(64 * 1024);
            Qemu.assertClean(img);
        }
        assertThat(Qemu.identical(images.get(Kind.BLOCKJOBD), "qcow2", images.get(Kind.QEMU), "qcow2")).isTrue();
        JsonNode ours = extentAt(maps.get(Kind.BLOCKJOBD), 0);
        JsonNode qemus = extentAt(maps.get(Kind.QEMU), 0);
        assertThat(ours.get("zero").asBoolean()).isTrue();
        assertThat(ours.has("offset")).as("blockjobs: ZERO_ALLOC, the cluster stays").isTrue();
        assertThat(qemus.get("zero").asBoolean()).isTrue();
        assertThat(qemus.has("offset")).as("QEMU 7.2: ZERO_PLAIN, the cluster is freed").isFalse();
        ObjectNode withoutOffset = ((ObjectNode) ours.deepCopy());
        withoutOffset.remove("offset");
        assertThat(withoutOffset).isEqualTo(qemus);
        for (int i = 1; i < maps.get(Kind.QEMU).size(); i++) {
            assertThat(maps.get(Kind.BLOCKJOBD).get(i)).isEqualTo(maps.get(Kind.QEMU).get(i));
        }
    }

    // ---- cache.direct ----------------------------------------------------------------------------

    @ParameterizedTest(name = "cache.direct={0}")
    @ValueSource(booleans = {true, false})
    void cacheDirectOpensTheImageWithODirect(boolean direct) throws Exception {
        Map<Kind, Path> images = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "direct.qcow2");
            images.put(kind, img);
            StorageDaemon d = startExported(kind, img, "cache.direct=" + (direct ? "on" : "off"));
            List<Integer> flags = HostFiles.openFlagsOf(d.pid(), img);
            assertThat(flags).as("%s holds the image open", kind).isNotEmpty();
            if (direct) {
                assertThat(flags).as("%s: open flags %s", kind, octal(flags)).anyMatch(f -> (f & HostFiles.O_DIRECT) != 0);
            } else {
                assertThat(flags).as("%s: open flags %s", kind, octal(flags)).noneMatch(f -> (f & HostFiles.O_DIRECT) != 0);
            }
            ObjectNode cache = Qemu.JSON.createObjectNode().put("writeback", true).put("direct", direct).put("no-flush", false);
            assertThat(namedNode(d, "d0").get("cache")).as("%s", kind).isEqualTo(cache);
            assertThat(fileNode(d, img).get("cache")).as("%s: the file child inherits it", kind).isEqualTo(cache);
            // Requests that are not aligned to the file system's blocks: the graph pads them.
            String uri = d.nbdUri("d0");
            Qemu.ioNbd(uri, "write -P 0x5a 0 64k", "write -P 0x77 1 1", "write -P 0x33 100000 70001",
                    "write -P 0x44 4194303 1", "read -P 0x5a 2 4000", "read -P 0x33 100000 70001", "read -P 0x44 4194303 1");
            assertThat(Qemu.ioNbd(uri, "read -v 0 4").out()).contains("5a 77 5a 5a");
            d.quit();
            Qemu.assertClean(img);
            Qemu.io(img, "qcow2", "read -P 0x5a 0 1", "read -P 0x77 1 1", "read -P 0x5a 2 65534",
                    "read -P 0x33 100000 70001", "read -P 0xaa 170001 1M", "read -P 0x44 4194303 1");
        }
        assertThat(Qemu.identical(images.get(Kind.BLOCKJOBD), "qcow2", images.get(Kind.QEMU), "qcow2")).isTrue();
    }

    private static List<String> octal(List<Integer> flags) {
        return flags.stream().map(Integer::toOctalString).toList();
    }

    // ---- cache.no-flush --------------------------------------------------------------------------

    /**
     * With {@code cache.no-flush=on} no {@code fsync}/{@code fdatasync} reaches the image's file,
     * neither for NBD flushes nor for FUA writes (qemu-io writes through by default) nor at quit;
     * with {@code off} they do. strace shows it for both daemons; blockjobd's statistics show the
     * flushes stop at the node.
     */
    @ParameterizedTest(name = "{0}, cache.no-flush={1}")
    @CsvSource({"qcow2, on", "qcow2, off", "raw, on", "raw, off"})
    void noFlushKeepsFlushesFromTheFile(String format, String noFlush) throws Exception {
        boolean on = noFlush.equals("on");
        for (Kind kind : BOTH) {
            Path img = Files.createDirectories(dir.resolve(kind.name().toLowerCase())).resolve("nf." + format);
            Qemu.img("create", "-f", format, img.toString(), "4M");
            StorageDaemon d = start(kind, List.of(
                    "--blockdev", "driver=" + format + ",node-name=d0,cache.no-flush=" + noFlush
                            + ",file.driver=file,file.filename=" + img,
                    "--export", "type=nbd,id=e,node-name=d0,name=d0,writable=on"));
            assertThat(namedNode(d, "d0").at("/cache/no-flush").asBoolean()).isEqualTo(on);
            assertThat(fileNode(d, img).at("/cache/no-flush").asBoolean()).as("inherited").isEqualTo(on);
            List<Integer> fds = HostFiles.descriptorsOf(d.pid(), img);
            Strace strace = Strace.attach(d.pid(), "fsync,fdatasync", dir.resolve(kind + "-" + format + "-" + noFlush + ".strace"));
            try {
                Qemu.ioNbd(d.nbdUri("d0"), "write -P 1 0 64k", "flush", "write -z 1M 64k", "flush");
                if (kind == Kind.BLOCKJOBD) {
                    JsonNode stats = nodeStats(d, "d0");
                    assertThat(stats.at("/stats/flush_operations").asLong()).as("flushes reach the node").isGreaterThanOrEqualTo(2);
                    long fileFlushes = stats.at("/parent/stats/flush_operations").asLong();
                    if (!on) {
                        assertThat(fileFlushes).as("flushes go on to the file node").isGreaterThanOrEqualTo(2);
                    } else if (format.equals("raw")) {
                        assertThat(fileFlushes).as("raw passes no flush on").isZero();
                    } // (qcow2 orders its metadata with flushes of its file: they reach the file node and stop there)
                }
                d.quit();
                strace.awaitEnd();
            } finally {
                strace.close();
            }
            List<String> syncs = new ArrayList<>(strace.callsOn("fdatasync", fds));
            syncs.addAll(strace.callsOn("fsync", fds));
            if (on) {
                assertThat(syncs).as("%s, cache.no-flush=on: syncs of the image's descriptors %s", kind, fds).isEmpty();
            } else {
                assertThat(syncs).as("%s, cache.no-flush=off: syncs of the image's descriptors %s", kind, fds).isNotEmpty();
            }
            Qemu.io(img, format, "read -P 1 0 64k", "read -P 0 1M 64k");
        }
    }

    private static JsonNode nodeStats(StorageDaemon d, String name) throws Exception {
        for (JsonNode s : d.qmp.ok("query-blockstats", map("query-nodes", true))) {
            if (s.get("node-name").asString().equals(name)) {
                return s;
            }
        }
        throw new AssertionError(d + " has no statistics for " + name);
    }

    // ---- read-only, auto-read-only -----------------------------------------------------------------

    @Test
    void readOnlyNodesTakeNoWriter() throws Exception {
        for (Kind kind : BOTH) {
            Path img = image(kind, "ro.qcow2");
            StorageDaemon d = start(kind, List.of(
                    "--blockdev", "driver=qcow2,node-name=d0,read-only=on,file.driver=file,file.filename=" + img,
                    "--export", "type=nbd,id=e,node-name=d0,name=d0"));
            assertThat(namedNode(d, "d0").get("ro").asBoolean()).isTrue();
            assertThat(fileNode(d, img).get("ro").asBoolean()).as("%s: the file child inherits it", kind).isTrue();
            assertThat(d.qmp.error("block-export-add", map("type", "nbd", "id", "w", "node-name", "d0", "name", "w",
                    "writable", true)).get("desc").asString()).as("%s", kind).isEqualTo("Cannot export read-only node as writable");
            String uri = d.nbdUri("d0");
            assertThat(Qemu.run("nbdinfo", uri).ok().out()).contains("is_read_only: true");
            Qemu.Result write = Qemu.run("qemu-io", "-f", "raw", "-c", "write 0 4k", uri);
            assertThat(write.exit()).isNotZero();
            assertThat(write.err()).as("%s", kind).endsWith("Could not open image: Permission denied\n");
            Qemu.Result forced = Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "write 0 4k", uri);
            assertThat(forced.out() + forced.err()).as("%s", kind).contains("Block node is read-only").doesNotContain("wrote");
            Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xaa 0 2M", uri).ok();
            // Other readers may open the image; a writer may not.
            Qemu.img("info", img.toString());
            Qemu.Result local = Qemu.run("qemu-io", "-f", "qcow2", "-c", "write 0 4k", img.toString());
            assertThat(local.err()).as("%s", kind).contains("Failed to get \"write\" lock");
            d.quit();
            Qemu.io(img, "qcow2", "read -P 0xaa 0 2M", "read -P 0 2M 2M");
        }
    }

    /**
     * {@code auto-read-only=on} opens a file the daemon may not write read-only; a writer then
     * fails as QEMU's reopen does. Root may write any file, so as root both daemons run as
     * {@code nobody} (uid 65534) on a file root owns with mode 0644.
     */
    @Test
    void autoReadOnlyFallsBackToReadingAFileItCannotWrite() throws Exception {
        boolean root = HostFiles.uid() == 0;
        List<String> launcher = root ? List.of("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups") : List.of();
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path raw = dir.resolve("aro.raw");
        Qemu.img("create", "-f", "raw", raw.toString(), "1M");
        Qemu.io(raw, "raw", "write -P 0x5a 0 1M");
        Path q = dir.resolve("aro.qcow2");
        Qemu.img("create", "-f", "qcow2", q.toString(), "1M");
        for (Path p : List.of(raw, q)) {
            Files.setPosixFilePermissions(p, PosixFilePermissions.fromString(root ? "rw-r--r--" : "r--r--r--"));
        }
        String denied = "Could not open '" + raw + "': Permission denied";
        for (Kind kind : BOTH) {
            StorageDaemon d = start(kind, launcher, List.of());
            Map<String, Object> file = map("driver", "file", "filename", raw.toString());
            assertThat(d.qmp.error("blockdev-add", map("driver", "raw", "node-name", "a", "file", file))
                    .get("desc").asString()).as("%s", kind).isEqualTo(denied);
            d.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "a", "auto-read-only", true, "file", file));
            assertThat(HostFiles.openFlagsOf(d.pid(), raw)).as("%s opened it read-only", kind)
                    .isNotEmpty().allMatch(f -> (f & HostFiles.O_ACCMODE) == 0);
            assertThat(d.qmp.error("block-export-add", map("type", "nbd", "id", "w", "node-name", "a", "writable", true))
                    .get("desc").asString()).as("%s: a writer needs the file reopened for writing", kind).isEqualTo(denied);
            d.qmp.ok("block-export-add", map("type", "nbd", "id", "r", "node-name", "a"));
            Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 1M", d.nbdUri("a")).ok();
            // A format that writes its metadata needs the file writable at once.
            assertThat(d.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "q", "auto-read-only", true,
                    "file", map("driver", "file", "filename", q.toString()))).get("desc").asString()).as("%s", kind)
                    .isEqualTo("Could not open '" + q + "': Permission denied");
            d.quit();
        }
    }

    // ---- force-share, locking ----------------------------------------------------------------------

    /**
     * While one daemon has the image open for writing, another may open it only read-only with
     * {@code force-share=on}, or with {@code locking=off}; each daemon refuses the others with
     * QEMU's lock errors, and inside one daemon a second node on the file is refused the same way.
     */
    @Test
    void locksKeepOthersOutUnlessForceShareOrLockingOff() throws Exception {
        for (Kind kind : BOTH) {
            Kind other = kind == Kind.BLOCKJOBD ? Kind.QEMU : Kind.BLOCKJOBD;
            Path img = image(kind, "lk.qcow2");
            StorageDaemon holder = startExported(other, img, "");
            Qemu.ioNbd(holder.nbdUri("d0"), "write -P 0x66 0 64k", "flush");
            StorageDaemon d = start(kind, List.of());
            Map<String, Object> file = map("driver", "file", "filename", img.toString());
            assertThat(d.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "rw", "file", file))
                    .get("desc").asString()).as("%s beside %s", kind, other).isEqualTo("Failed to get \"write\" lock");
            assertThat(d.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "ro", "read-only", true, "file", file))
                    .get("desc").asString()).as("%s beside %s", kind, other).isEqualTo("Failed to get shared \"write\" lock");
            assertThat(d.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "on",
                    "file", map("driver", "file", "filename", img.toString(), "locking", "on"))).get("desc").asString())
                    .as("%s beside %s", kind, other).isEqualTo("Failed to get \"write\" lock");
            d.qmp.ok("blockdev-add", map("driver", "qcow2", "node-name", "shared", "read-only", true, "force-share", true,
                    "file", file));
            d.qmp.ok("block-export-add", map("type", "nbd", "id", "s", "node-name", "shared"));
            Qemu.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x66 0 64k", "-c", "read -P 0xaa 64k 1M",
                    d.nbdUri("shared")).ok();
            d.qmp.ok("blockdev-add", map("driver", "raw", "node-name", "nolock",
                    "file", map("driver", "file", "filename", img.toString(), "locking", "off")));
            d.quit();
            // Inside one daemon: a second writer on the same file.
            assertThat(holder.qmp.error("blockdev-add", map("driver", "qcow2", "node-name", "again", "file", file))
                    .get("desc").asString()).as("%s, second node", other).isEqualTo("Failed to get \"write\" lock");
            holder.quit();
            Qemu.assertClean(img);
        }
    }

    // ---- query-blockstats --------------------------------------------------------------------------

    /**
     * {@code query-blockstats} with {@code query-nodes} has QEMU's shape: one entry per node in
     * the order they were opened, a format node's file child as {@code parent}, a file node's
     * {@code driver-specific}, the same members in {@code stats}. blockjobs counts each node's own
     * I/O, where QEMU 7.2 counts only at BlockBackends and shows zeroes for nodes (a deliberate
     * improvement; {@code idle_time_ns} comes with the first counted request, as QEMU's does).
     */
    @Test
    void blockstatsHaveQemusShapeAndCountEachNodesIo() throws Exception {
        Map<Kind, JsonNode> before = new EnumMap<>(Kind.class);
        Map<Kind, JsonNode> after = new EnumMap<>(Kind.class);
        for (Kind kind : BOTH) {
            Path img = image(kind, "stats.qcow2");
            StorageDaemon d = startExported(kind, img, "discard=unmap");
            before.put(kind, d.qmp.ok("query-blockstats", map("query-nodes", true)));
            Qemu.ioNbd(d.nbdUri("d0"), "write -P 0x11 0 64k", "read -P 0x11 0 64k", "flush", "discard 1M 64k");
            after.put(kind, d.qmp.ok("query-blockstats", map("query-nodes", true)));
            assertThat(d.qmp.ok("query-blockstats")).as("%s: no named devices", kind).isEmpty();
            assertThat(d.qmp.ok("query-block")).as("%s: no named devices, an export's are anonymous", kind).isEmpty();
            d.quit();
        }
        // blockjobs' nodes have counted requests from the start (a format reads its header at open).
        assertThat(shape(before.get(Kind.BLOCKJOBD), true)).isEqualTo(shape(before.get(Kind.QEMU), false));
        assertThat(shape(after.get(Kind.BLOCKJOBD), true)).isEqualTo(shape(after.get(Kind.QEMU), false));
        assertThat(entry(after.get(Kind.BLOCKJOBD), "d0").at("/stats/idle_time_ns").isNumber()).isTrue();
        JsonNode ours = entry(after.get(Kind.BLOCKJOBD), "d0");
        assertThat(ours.at("/stats/wr_bytes").asLong()).isGreaterThanOrEqualTo(65536);
        assertThat(ours.at("/stats/wr_operations").asLong()).isGreaterThanOrEqualTo(1);
        assertThat(ours.at("/stats/rd_bytes").asLong()).isGreaterThanOrEqualTo(65536);
        assertThat(ours.at("/stats/rd_operations").asLong()).isGreaterThanOrEqualTo(1);
        assertThat(ours.at("/stats/flush_operations").asLong()).isGreaterThanOrEqualTo(1);
        assertThat(ours.at("/stats/unmap_operations").asLong()).isGreaterThanOrEqualTo(1);
        assertThat(ours.at("/stats/unmap_bytes").asLong()).isGreaterThanOrEqualTo(65536);
        assertThat(ours.at("/parent/stats/wr_bytes").asLong()).as("the file child counts its own writes").isGreaterThanOrEqualTo(65536);
        assertThat(ours.at("/stats/wr_highest_offset").asLong()).isEqualTo(65536);
        JsonNode qemus = entry(after.get(Kind.QEMU), "d0");
        assertThat(qemus.at("/stats/wr_bytes").asLong()).as("QEMU 7.2 accounts at BlockBackends only").isZero();
        assertThat(qemus.at("/stats/wr_highest_offset").asLong()).isEqualTo(65536);
    }

    private static JsonNode entry(JsonNode stats, String node) {
        for (JsonNode s : stats) {
            if (s.get("node-name").asString().equals(node)) {
                return s;
            }
        }
        throw new AssertionError("no statistics for " + node + " in " + stats);
    }

    /**
     * Each entry's member names, in order, with {@code node-name} kept for named nodes only;
     * {@code idle_time_ns} left out of {@code stats} if {@code dropIdle}.
     */
    private static List<String> shape(JsonNode stats, boolean dropIdle) {
        List<String> out = new ArrayList<>();
        for (JsonNode s : stats) {
            out.add(describe(s, dropIdle));
        }
        return out;
    }

    private static String describe(JsonNode s, boolean dropIdle) {
        String name = s.get("node-name").asString();
        StringBuilder b = new StringBuilder(name.startsWith("#") ? "(generated)" : name).append(' ');
        b.append(names(s, Set.of())).append(" stats=").append(names(s.get("stats"), dropIdle ? Set.of("idle_time_ns") : Set.of()));
        if (s.has("driver-specific")) {
            b.append(" driver-specific=").append(names(s.get("driver-specific"), Set.of()))
                    .append(s.at("/driver-specific/driver").asString());
        }
        if (s.has("parent")) {
            b.append(" parent=(").append(describe(s.get("parent"), dropIdle)).append(')');
        }
        return b.toString();
    }

    private static Set<String> names(JsonNode o, Set<String> except) {
        Set<String> names = new TreeSet<>();
        for (Iterator<String> it = o.propertyNames().iterator(); it.hasNext(); ) {
            String n = it.next();
            if (!except.contains(n)) {
                names.add(n);
            }
        }
        return names;
    }
}
