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
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import tools.jackson.databind.JsonNode;

/**
 * Storage migration between two daemon processes on this machine, as QEMU's
 * {@code tests/qemu-iotests/194} does it: the destination starts an NBD server on a unix socket
 * of its own ({@code nbd-server-start}) and exports a new image writable; the source adds an
 * {@code nbd} node for that export and mirrors its disk onto it while {@code qemu-io} writes
 * through the source's own export, completes, and from then on the source's export writes through
 * to the destination. blockjobd on either side, qemu-storage-daemon 7.2 on the other (and on both,
 * to show the sequence itself is right). A raw shadow receives every write the client makes; the
 * images are compared with it ({@code qemu-img compare}) and checked once both daemons are gone.
 * Faults: either daemon SIGKILLed mid-mirror.
 */
class MigrationIT {
    private static final int MIB = 1 << 20;
    private static final long SIZE = 32L * MIB;

    Path dir;
    Path source;
    /** What the source's disk must read: as made, then every write through its export. */
    Path shadow;
    /** The destination's migration socket, started by nbd-server-start. */
    Path migrationSocket;
    final List<StorageDaemon> daemons = new ArrayList<>();

    @BeforeEach
    void image(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        dir = tmp;
        source = dir.resolve("source.qcow2");
        Qemu.img("create", "-f", "qcow2", source.toString(), String.valueOf(SIZE));
        Qemu.io(source, "qcow2", "write -P 0x11 0 12M", "write -z 14M 1M", "write -P 0x12 20M 4M");
        shadow = dir.resolve("shadow.raw");
        Qemu.img("convert", "-O", "raw", source.toString(), shadow.toString());
        migrationSocket = dir.resolve("migration.sock");
    }

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : daemons.reversed()) {
            d.close();
        }
    }

    static List<Object[]> pairs() {
        return List.of(new Object[] {Kind.BLOCKJOBD, Kind.BLOCKJOBD}, new Object[] {Kind.BLOCKJOBD, Kind.QEMU},
                new Object[] {Kind.QEMU, Kind.BLOCKJOBD}, new Object[] {Kind.QEMU, Kind.QEMU});
    }

    // ---- the two sides ----------------------------------------------------------------------------

    /** The source: its disk as node {@code disk}, exported writable as {@code src} for the client. */
    private StorageDaemon startSource(Kind kind) throws Exception {
        StorageDaemon d = StorageDaemon.start(kind, Files.createDirectories(dir.resolve("source-" + kind.name().toLowerCase())),
                List.of("--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + source,
                        "--export", "type=nbd,id=e,node-name=disk,name=src,writable=on"));
        daemons.add(d);
        return d;
    }

    /**
     * The destination: {@code image} opened as node {@code disk}; the NBD server the test kit
     * starts is stopped and one started on {@link #migrationSocket} instead, as a destination of a
     * migration does, and the disk exported writable on it as {@code disk}.
     */
    private StorageDaemon startDestination(Kind kind, String home, Path image, String format) throws Exception {
        StorageDaemon d = StorageDaemon.start(kind, Files.createDirectories(dir.resolve(home)),
                List.of("--blockdev", "driver=" + format + ",node-name=disk,file.driver=file,file.filename=" + image));
        daemons.add(d);
        d.qmp.ok("nbd-server-stop");
        d.qmp.ok("nbd-server-start", map("addr", map("type", "unix", "data", map("path", migrationSocket.toString()))));
        d.qmp.ok("block-export-add", map("type", "nbd", "id", "mig", "node-name", "disk", "name", "disk", "writable", true));
        return d;
    }

    private String destinationUri() {
        return "nbd+unix:///disk?socket=" + migrationSocket;
    }

    private Path newImage(String name, String format) {
        Path p = dir.resolve(name);
        Qemu.img("create", "-f", format, p.toString(), String.valueOf(SIZE));
        return p;
    }

    /** The source's view of the destination: an {@code nbd} node, under a {@code raw} node as libvirt stacks it. */
    private Map<String, Object> remote(boolean underRaw, Object... extra) {
        Map<String, Object> nbd = new java.util.LinkedHashMap<>(map("driver", "nbd",
                "server", map("type", "unix", "path", migrationSocket.toString()), "export", "disk"));
        for (int i = 0; i < extra.length; i += 2) {
            nbd.put((String) extra[i], extra[i + 1]);
        }
        if (!underRaw) {
            nbd.put("node-name", "remote");
            return nbd;
        }
        return map("driver", "raw", "node-name", "remote", "file", nbd);
    }

    /** Writes through the source's export and into the shadow. */
    private void write(StorageDaemon src, String... commands) {
        Qemu.ioNbd(src.nbdUri("src"), commands).ok();
        Qemu.io(shadow, "raw", commands).ok();
    }

    private static JsonNode job(StorageDaemon d, String id) throws Exception {
        for (JsonNode j : d.qmp.ok("query-block-jobs")) {
            if (j.get("device").asString().equals(id)) {
                return j;
            }
        }
        throw new AssertionError(d + ": no block job " + id);
    }

    /** Polls query-block-jobs until the copy has moved {@code bytes} (the job is under way, not done). */
    private static void awaitCopied(StorageDaemon d, String id, long bytes) throws Exception {
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (job(d, id).get("offset").asLong() < bytes) {
            assertThat(System.nanoTime()).as("%s: the copy got under way", d).isLessThan(deadline);
            Thread.onSpinWait();
        }
    }

    /** SIGKILL: the daemon closes nothing; then the test's connection to it is closed too. */
    private void kill(StorageDaemon d) throws Exception {
        d.killHard();
        d.close();
        daemons.remove(d);
    }

    private static String exportedNode(StorageDaemon d) throws Exception {
        return d.qmp.ok("query-block-exports").get(0).get("node-name").asString();
    }

    private Path copyOf(Path p, String name) throws Exception {
        Path c = dir.resolve(name);
        Files.copy(p, c);
        return c;
    }

    // ---- migration -----------------------------------------------------------------------------------

    @ParameterizedTest(name = "{0} to {1}")
    @MethodSource("pairs")
    void aLiveDiskMovesToAnotherDaemonAndItsExportWritesThroughToIt(Kind from, Kind to) throws Exception {
        Path target = newImage("destination.qcow2", "qcow2");
        StorageDaemon dst = startDestination(to, "destination", target, "qcow2");
        StorageDaemon src = startSource(from);
        src.qmp.ok("blockdev-add", remote(true));
        // 1 MiB/s over 17 MiB of data: seconds to go, while the client writes
        src.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "remote", "sync", "full",
                "speed", MIB));
        write(src, "write -P 0x31 1M 64k", "write -P 0x32 21M 1M", "write -z 5M 64k", "write -P 0x33 28M 256k");
        assertThat(job(src, "m").get("ready").asBoolean()).as("written while the job copies").isFalse();
        src.qmp.ok("block-job-set-speed", map("device", "m", "speed", 0));
        src.qmp.awaitEvent("BLOCK_JOB_READY", d -> d.get("device").asString().equals("m"));
        write(src, "write -P 0x34 2M 4k", "write -P 0x35 31M 512", "write -z 20M 128k");
        src.qmp.ok("job-complete", map("id", "m"));
        JsonNode done = src.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("m"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: %s", from, done).isTrue();
        assertThat(done.at("/data/offset").asLong()).isEqualTo(done.at("/data/len").asLong());
        assertThat(exportedNode(src)).as("the source's export now writes to the destination").isEqualTo("remote");

        Path atSwitch = copyOf(shadow, "at-switch.raw");
        write(src, "write -P 0x36 7M 64k", "write -P 0x37 30M 4k");
        Qemu.ioNbd(destinationUri(), "read -P 0x36 7M 64k", "read -P 0x37 30M 4k", "read -P 0x34 2M 4k");

        src.quit(); // first: it is the destination's NBD client
        dst.quit();
        assertThat(Qemu.identical(target, "qcow2", shadow, "raw")).as("the destination holds every write").isTrue();
        assertThat(Qemu.identical(source, "qcow2", atSwitch, "raw")).as("the source stopped at the switch").isTrue();
        Qemu.assertClean(target);
        Qemu.assertClean(source);
    }

    // ---- faults -----------------------------------------------------------------------------------------

    /** The destination SIGKILLed mid-mirror: the job's error, from a source of {@code from}. */
    private String destinationKilled(Kind from) throws Exception {
        Path target = newImage("destination-" + from + ".qcow2", "qcow2");
        Path shadowBefore = copyOf(shadow, "shadow-" + from + ".raw");
        StorageDaemon dst = startDestination(Kind.BLOCKJOBD, "destination-" + from, target, "qcow2");
        StorageDaemon src = startSource(from);
        src.qmp.ok("blockdev-add", remote(false));
        src.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "remote", "sync", "full",
                "speed", MIB));
        write(src, "write -P 0x41 3M 64k", "write -P 0x42 22M 8k");
        awaitCopied(src, "m", MIB);
        kill(dst);
        JsonNode done = src.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("m"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s: the job fails: %s", from, done).isFalse();
        // The source goes on serving its disk, which the job never wrote.
        assertThat(exportedNode(src)).isEqualTo("disk");
        write(src, "write -P 0x43 9M 4k");
        src.quit();
        daemons.remove(src);
        assertThat(Qemu.identical(source, "qcow2", shadow, "raw")).as("%s: the source holds every write", from).isTrue();
        Qemu.assertClean(source);
        Qemu.assertNoCorruption(target);
        Files.copy(shadowBefore, shadow, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Qemu.img("convert", "-O", "qcow2", shadow.toString(), source.toString()); // as made, for the next run
        return done.at("/data/error").asString();
    }

    @Test
    void destinationKilledMidMirrorFailsTheJobAsQemuAndSparesTheSource() throws Exception {
        String qemu = destinationKilled(Kind.QEMU);
        String ours = destinationKilled(Kind.BLOCKJOBD);
        assertThat(ours).isEqualTo(qemu).isEqualTo("Input/output error");
    }

    /**
     * With {@code reconnect-delay} the source's NBD client holds the job's requests while the
     * destination is away; a destination back within the delay (the same raw image: what a killed
     * server acknowledged is in the kernel's page cache) receives them and the mirror completes.
     */
    @Test
    void destinationBackWithinTheReconnectDelayLetsTheMirrorComplete() throws Exception {
        Path target = newImage("destination.raw", "raw");
        StorageDaemon dst = startDestination(Kind.BLOCKJOBD, "destination", target, "raw");
        StorageDaemon src = startSource(Kind.BLOCKJOBD);
        src.qmp.ok("blockdev-add", remote(false, "reconnect-delay", 60));
        src.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "remote", "sync", "full",
                "speed", MIB));
        write(src, "write -P 0x51 3M 64k");
        awaitCopied(src, "m", MIB);
        kill(dst);
        write(src, "write -P 0x52 26M 64k"); // the client is not held up: its writes go to the source
        startDestination(Kind.BLOCKJOBD, "destination-again", target, "raw");
        src.qmp.ok("block-job-set-speed", map("device", "m", "speed", 0));
        JsonNode ready = src.qmp.awaitEvent("", d -> d.path("device").asString().equals("m"));
        assertThat(ready.get("event").asString()).as("%s", ready).isEqualTo("BLOCK_JOB_READY");
        write(src, "write -P 0x53 11M 4k");
        src.qmp.ok("job-complete", map("id", "m"));
        JsonNode done = src.qmp.awaitEvent("BLOCK_JOB_COMPLETED", d -> d.get("device").asString().equals("m"));
        assertThat(done.at("/data/error").isMissingNode()).as("%s", done).isTrue();
        for (StorageDaemon d : List.copyOf(daemons)) {
            d.quit();
            daemons.remove(d);
        }
        assertThat(Qemu.identical(target, "raw", shadow, "raw")).as("the destination holds every write").isTrue();
        Qemu.assertClean(source);
    }

    @Test
    void sourceKilledMidMirrorLeavesItsImageIntact() throws Exception {
        Path target = newImage("destination.qcow2", "qcow2");
        StorageDaemon dst = startDestination(Kind.BLOCKJOBD, "destination", target, "qcow2");
        StorageDaemon src = startSource(Kind.BLOCKJOBD);
        src.qmp.ok("blockdev-add", remote(true));
        src.qmp.ok("blockdev-mirror", map("job-id", "m", "device", "disk", "target", "remote", "sync", "full",
                "speed", MIB));
        write(src, "write -P 0x61 2M 1M", "write -P 0x62 13M 64k", "write -z 21M 64k");
        awaitCopied(src, "m", MIB);
        kill(src);
        Qemu.assertClean(source);
        assertThat(Qemu.identical(source, "qcow2", shadow, "raw")).as("the source holds every acknowledged write").isTrue();
        assertThat(exportedNode(dst)).as("the destination goes on").isEqualTo("disk");
        dst.quit();
        daemons.remove(dst);
        Qemu.assertClean(target);
    }

    // ---- scripts/migrate.js ------------------------------------------------------------------------

    /** The distribution's client, {@code bin/blockjobs}. */
    private static Path clientLauncher() {
        return io.blockjobs.platform.testkit.DaemonProcess.blockjobd().resolveSibling("blockjobs");
    }

    /** Polls query-jobs until the workflow's mirror job is running; returns its id. */
    private static String awaitMirrorRunning(StorageDaemon d) throws Exception {
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (true) {
            for (JsonNode j : d.qmp.ok("query-jobs")) {
                if (j.get("type").asString().equals("mirror") && j.get("status").asString().equals("running")) {
                    return j.get("id").asString();
                }
            }
            assertThat(System.nanoTime()).as("%s: the workflow's mirror runs", d).isLessThan(deadline);
            Thread.onSpinWait();
        }
    }

    /**
     * {@code blockjobs run migrate.js} as a user runs it, onto a new local image; the copy is
     * held to 4 MiB/s over 16 MiB of data, so it is not ready by the 1 s deadline and the script
     * switches it to write-blocking, then completes it.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"qcow2", "raw"})
    void migrateJsMovesADiskToANewLocalImageFallingBackToWriteBlocking(String format) throws Exception {
        StorageDaemon src = startSource(Kind.BLOCKJOBD);
        Path target = dir.resolve("moved." + format);
        java.util.concurrent.CompletableFuture<Qemu.Result> run = java.util.concurrent.CompletableFuture.supplyAsync(
                () -> Qemu.run(clientLauncher().toString(), "--socket", dir.resolve("source-blockjobd/qmp.sock").toString(),
                        "run", "migrate.js", "--id", "mig", "--arg", "node=disk", "--arg", "target=" + target,
                        "--arg", "format=" + format,
                        "--arg", "deadline=1", "--arg", "speed=" + 4 * MIB),
                r -> Thread.ofVirtual().start(r));
        String job = awaitMirrorRunning(src);
        write(src, "write -P 0x71 1M 64k", "write -P 0x72 29M 8k", "write -z 21M 64k");
        Qemu.Result r = run.get(120, java.util.concurrent.TimeUnit.SECONDS);
        assertThat(r.exit()).as("%s", r).isZero();
        assertThat(r.out()).contains("migrating disk (" + SIZE + " bytes, exported as e) to " + target + " (" + format + ")\n",
                        "not ready after 1 s (", "switching " + job + " to copy-mode write-blocking\n",
                        "migrated disk to disk-migrated in ")
                .containsPattern("job " + job + " mirror completed 100%")
                .containsPattern("ready after [0-9.]+ s \\(write-blocking\\)");
        JsonNode result = Qemu.JSON.readTree(r.out().substring(r.out().lastIndexOf("\n{") + 1));
        assertThat(result.get("copyMode").asString()).isEqualTo("write-blocking");
        assertThat(result.get("targetNode").asString()).isEqualTo("disk-migrated");
        assertThat(result.get("exports").toString()).isEqualTo("[\"e\"]");
        assertThat(exportedNode(src)).isEqualTo("disk-migrated");

        Path atSwitch = copyOf(shadow, "at-switch.raw");
        write(src, "write -P 0x73 7M 64k");
        src.quit();
        assertThat(Qemu.identical(target, format, shadow, "raw")).as("the new image holds every write").isTrue();
        assertThat(Qemu.identical(source, "qcow2", atSwitch, "raw")).as("the source stopped at the switch").isTrue();
        assertThat(Qemu.info(target).get("format").asString()).isEqualTo(format);
        if (format.equals("qcow2")) {
            Qemu.assertClean(target);
        }
        Qemu.assertClean(source);
    }

    /** {@code workflow-run migrate.js} over QMP, onto another daemon's NBD export; converges in background mode. */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.EnumSource(Kind.class)
    void migrateJsMovesADiskToAnotherDaemonOverNbd(Kind to) throws Exception {
        Path target = newImage("destination.qcow2", "qcow2");
        StorageDaemon dst = startDestination(to, "destination", target, "qcow2");
        StorageDaemon src = startSource(Kind.BLOCKJOBD);
        String id = src.qmp.ok("workflow-run", map("script", "migrate.js", "args", map("node", "disk",
                "server", migrationSocket.toString(), "export", "disk", "targetNode", "remote", "speed", 2 * MIB)))
                .get("id").asString();
        String job = awaitMirrorRunning(src);
        write(src, "write -P 0x81 3M 64k", "write -P 0x82 27M 4k");
        assertThat(job(src, job).get("ready").asBoolean()).as("written while the job copies").isFalse();
        JsonNode done = src.qmp.awaitEvent("WORKFLOW_FINISHED", d -> d.get("id").asString().equals(id)).get("data");
        assertThat(done.get("state").asString()).as("%s", done).isEqualTo("completed");
        assertThat(done.at("/result/copyMode").asString()).isEqualTo("background");
        assertThat(done.at("/result/bytes").asLong()).as("the disk and what was written during the copy")
                .isGreaterThanOrEqualTo(SIZE);
        List<String> log = new ArrayList<>();
        for (JsonNode w : src.qmp.ok("query-workflows")) {
            if (w.get("id").asString().equals(id)) {
                w.get("log").forEach(l -> log.add(l.asString()));
            }
        }
        assertThat(log).anyMatch(l -> l.equals("migrating disk (" + SIZE + " bytes, exported as e) to NBD export 'disk' at "
                + migrationSocket)).anyMatch(l -> l.matches(job + " ready after [0-9.]+ s \\(background\\): .*"))
                .noneMatch(l -> l.contains("write-blocking"));
        assertThat(exportedNode(src)).isEqualTo("remote");

        write(src, "write -P 0x83 9M 64k");
        Qemu.ioNbd(destinationUri(), "read -P 0x83 9M 64k", "read -P 0x81 3M 64k");
        src.quit();
        dst.quit();
        assertThat(Qemu.identical(target, "qcow2", shadow, "raw")).as("the destination holds every write").isTrue();
        Qemu.assertClean(target);
        Qemu.assertClean(source);
    }

    @Test
    void migrateJsRefusesWhatItCannotDo() throws Exception {
        Path small = dir.resolve("small.qcow2");
        Qemu.img("create", "-f", "qcow2", small.toString(), "16M");
        StorageDaemon dst = startDestination(Kind.BLOCKJOBD, "destination", small, "qcow2");
        StorageDaemon src = startSource(Kind.BLOCKJOBD);
        assertThat(failure(src, map("target", "/nowhere.qcow2"))).contains("needs the node to move");
        assertThat(failure(src, map("node", "disk"))).contains("needs one destination");
        assertThat(failure(src, map("node", "nope", "target", dir.resolve("x.qcow2").toString())))
                .contains("Cannot find node 'nope'");
        assertThat(failure(src, map("node", "disk", "server", migrationSocket.toString(), "export", "disk")))
                .contains("the destination is " + 16 * MIB + " bytes, disk is " + SIZE);
        assertThat(src.qmp.ok("query-named-block-nodes").toString()).as("the target node is dropped again")
                .doesNotContain("disk-migrated");
        assertThat(src.qmp.ok("query-jobs").isEmpty()).isTrue();
        assertThat(exportedNode(src)).isEqualTo("disk");
        assertThat(exportedNode(dst)).isEqualTo("disk");
    }

    /** Runs migrate.js with {@code args}; it must fail; returns its error's desc. */
    private static String failure(StorageDaemon d, Map<String, Object> args) throws Exception {
        String id = d.qmp.ok("workflow-run", map("script", "migrate.js", "args", args)).get("id").asString();
        JsonNode done = d.qmp.awaitEvent("WORKFLOW_FINISHED", e -> e.get("id").asString().equals(id)).get("data");
        assertThat(done.get("state").asString()).as("%s", done).isEqualTo("failed");
        return done.at("/error/desc").asString();
    }
}
