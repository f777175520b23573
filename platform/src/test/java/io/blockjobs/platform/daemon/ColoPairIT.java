package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * COLO block replication between two blockjobd processes, laid out as QEMU's
 * {@code docs/COLO-FT.txt} lays out the disks: on the primary a {@code fifo} quorum
 * {@code colo-disk0} over the local disk and a replication node forwarding to the secondary's
 * export of its secondary disk {@code parent0}; on the secondary a {@code fifo} quorum
 * {@code colo-disk0} over the replication node {@code childs0}, over active disk → hidden disk →
 * {@code parent0}. The primary's VM writes through the primary's export, the secondary's VM
 * through the secondary's; the test is the management layer: it checkpoints, kills a side with
 * SIGKILL or drops the link between them ({@link NbdLinkProxy}), fails the survivor over with
 * {@code x-colo-lost-heartbeat}, and re-protects it by mirror. Each fault runs twice: with
 * single writes of known patterns, and with both VMs writing all along ({@link VmWriter}), the
 * management layer checkpointing every 100 ms, and every disk checked against a byte-level model.
 */
class ColoPairIT {
    static final String SIZE = "16M";

    @TempDir
    Path dir;
    final List<StorageDaemon> daemons = new ArrayList<>();
    Path pdir;
    Path sdir;
    Path primaryDisk;
    Path secondaryDisk;
    StorageDaemon primary;
    StorageDaemon secondary;
    NbdLinkProxy link; // the primary reaches the secondary's export through it
    final List<VmWriter> writers = new ArrayList<>();

    @BeforeEach
    void pair() throws Exception {
        pdir = Files.createDirectories(dir.resolve("primary"));
        sdir = Files.createDirectories(dir.resolve("secondary"));
        primaryDisk = pdir.resolve("disk0.qcow2");
        secondaryDisk = sdir.resolve("parent0.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", primaryDisk.toString(), SIZE);
        Qemu.io(primaryDisk, "qcow2", "write -P 0x11 0 " + SIZE);
        Files.copy(primaryDisk, secondaryDisk); // both sides start equal, as after COLO's first full copy
        for (String n : List.of("hidden0", "active0")) {
            Qemu.img("create", "-q", "-f", "qcow2", sdir.resolve(n + ".qcow2").toString(), SIZE);
        }
        // The secondary first.
        secondary = start(sdir);
        ColoLayout.secondary(secondary.qmp, sdir, secondaryDisk);
        secondary.qmp.ok("block-export-add", map("type", "nbd", "id", "e-vm", "node-name", "colo-disk0",
                "name", "colo-disk0", "writable", true));
        // Then the primary.
        primary = start(pdir);
        link = new NbdLinkProxy(dir.resolve("link.sock"), sdir.resolve("nbd.sock"));
        ColoLayout.primary(primary.qmp, primaryDisk, link.socket);
        QmpClient p = primary.qmp;
        QmpClient s = secondary.qmp;
        assertThat(p.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"primary\",\"last-mode\":\"none\",\"reason\":\"none\"}");
        assertThat(s.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"secondary\",\"last-mode\":\"none\",\"reason\":\"none\"}");
    }

    @AfterEach
    void stop() throws Exception {
        for (VmWriter w : writers) {
            w.close();
        }
        if (link != null) {
            link.close();
        }
        for (StorageDaemon d : daemons) {
            d.close();
        }
    }

    private StorageDaemon start(Path d) throws Exception {
        StorageDaemon daemon = StorageDaemon.start(Kind.BLOCKJOBD, d, List.of());
        daemons.add(daemon);
        return daemon;
    }

    /** The secondary's three images, once its daemon is gone: {@code qemu-img check} clean. */
    private void secondaryImagesClean() {
        for (String n : List.of("parent0", "hidden0", "active0")) {
            Qemu.assertClean(sdir.resolve(n + ".qcow2"));
        }
    }

    private static void vm(StorageDaemon d, String... commands) {
        Qemu.ioNbd(d.nbdUri("colo-disk0"), commands);
    }

    /** A checkpoint, after the VM's state was transferred: the secondary's view becomes the primary's. */
    private void checkpoint() throws Exception {
        secondary.qmp.ok("xen-colo-do-checkpoint");
        primary.qmp.ok("xen-colo-do-checkpoint");
    }

    private static void failover(StorageDaemon d, String mode) throws Exception {
        d.qmp.ok("x-colo-lost-heartbeat");
        var exit = d.qmp.awaitEvent("COLO_EXIT", e -> true);
        assertThat(exit.path("data").toString()).isEqualTo("{\"mode\":\"" + mode + "\",\"reason\":\"request\"}");
        assertThat(d.qmp.ok("query-colo-status").toString()).isEqualTo(
                "{\"mode\":\"none\",\"last-mode\":\"" + mode + "\",\"reason\":\"request\"}");
        assertThat(d.qmp.ok("query-xen-replication-status").toString()).isEqualTo("{\"error\":false}");
    }

    /** The primary's failover: replication stops, its child leaves the quorum, the NBD node goes. */
    private void primaryGoesOnAlone() throws Exception {
        failover(primary, "primary");
        primary.qmp.ok("x-blockdev-change", map("parent", "colo-disk0", "child", "children.1"));
        primary.qmp.ok("blockdev-del", map("node-name", "replication0"));
        primary.qmp.ok("blockdev-del", map("node-name", "nbd0"));
    }

    /**
     * Re-protection: a new secondary's empty disk, exported; the survivor mirrors its VM's disk
     * onto it (sync full) and, with its writer paused, cancels at READY, which leaves a point-in-time
     * copy; both disks are then equal.
     */
    private void reprotect(StorageDaemon survivor, Path survivorDisk) throws Exception {
        Path nd = Files.createDirectories(dir.resolve("new-secondary"));
        Path fresh = nd.resolve("fresh.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", fresh.toString(), SIZE);
        StorageDaemon next = start(nd);
        next.qmp.ok("blockdev-add", ColoLayout.qcow2("fresh", fresh, null));
        next.qmp.ok("block-export-add", map("type", "nbd", "id", "e", "node-name", "fresh", "name", "fresh", "writable", true));
        survivor.qmp.ok("blockdev-add", map("driver", "nbd", "node-name", "buddy", "export", "fresh",
                "server", map("type", "unix", "path", nd.resolve("nbd.sock").toString())));
        survivor.qmp.ok("blockdev-mirror", map("job-id", "reprotect", "device", "colo-disk0", "target", "buddy",
                "sync", "full"));
        survivor.qmp.awaitEvent("BLOCK_JOB_READY", e -> e.path("device").asString().equals("reprotect"));
        survivor.qmp.ok("block-job-cancel", map("device", "reprotect"));
        survivor.qmp.awaitEvent("BLOCK_JOB_COMPLETED", e -> e.path("device").asString().equals("reprotect"));
        survivor.qmp.ok("blockdev-del", map("node-name", "buddy"));
        survivor.quit();
        next.quit();
        Qemu.assertClean(survivorDisk);
        Qemu.assertClean(fresh);
        assertThat(Qemu.identical(survivorDisk, "qcow2", fresh, "qcow2")).as("the new secondary equals the survivor").isTrue();
    }

    /** (a) The secondary is killed: the primary's writer notices nothing, and the primary goes on alone. */
    @Test
    void theSecondaryKilledThePrimaryFailsOverWithNothingLost() throws Exception {
        vm(primary, "write -P 0x22 0 1M");
        Qemu.ioNbd(secondary.nbdUri("parent0"), "read -P 0x22 0 1M"); // forwarded
        checkpoint();
        vm(secondary, "read -P 0x22 0 1M");
        secondary.killHard();
        vm(primary, "write -P 0x33 2M 1M", "read -P 0x33 2M 1M"); // no error for the writer
        assertThat(primary.qmp.ok("query-xen-replication-status").toString())
                .isEqualTo("{\"error\":true,\"desc\":\"I/O error occurred\"}");
        primaryGoesOnAlone();
        vm(primary, "write -P 0x44 4M 1M", "read -P 0x22 0 1M", "read -P 0x11 1M 1M", "read -P 0x33 2M 1M",
                "read -P 0x44 4M 1M");
        reprotect(primary, primaryDisk);
        Qemu.io(primaryDisk, "qcow2", "read -P 0x22 0 1M", "read -P 0x33 2M 1M", "read -P 0x44 4M 1M",
                "read -P 0x11 5M 11M");
        Qemu.assertNoCorruption(secondaryDisk);
    }

    /**
     * (b) The primary is killed: the secondary fails over and its disk is the last checkpoint plus
     * its own VM's writes since; the primary's writes after that checkpoint, which the secondary VM
     * never saw, are not in it.
     */
    @Test
    void thePrimaryKilledTheSecondaryTakesOverWithTheCheckpointAndItsOwnWrites() throws Exception {
        vm(primary, "write -P 0x22 0 1M");
        vm(secondary, "write -P 0x33 4M 1M"); // the secondary VM diverges until the checkpoint
        checkpoint();
        vm(secondary, "read -P 0x22 0 1M", "read -P 0x11 4M 1M"); // the secondary's view is the primary's again
        vm(primary, "write -P 0x44 2M 1M"); // after the checkpoint: only the secondary disk gets it
        vm(secondary, "read -P 0x11 2M 1M", "write -P 0x55 8M 1M");
        primary.killHard();
        failover(secondary, "secondary");
        vm(secondary, "read -P 0x22 0 1M", "read -P 0x11 1M 3M", "read -P 0x11 4M 1M", "read -P 0x55 8M 1M",
                "write -P 0x66 12M 1M", "read -P 0x66 12M 1M");
        reprotect(secondary, secondaryDisk);
        Qemu.io(secondaryDisk, "qcow2", "read -P 0x22 0 1M", "read -P 0x11 1M 7M", "read -P 0x55 8M 1M",
                "read -P 0x11 9M 3M", "read -P 0x66 12M 1M", "read -P 0x11 13M 3M");
        for (String n : List.of("hidden0", "active0")) {
            Qemu.assertClean(sdir.resolve(n + ".qcow2"));
        }
        Qemu.assertNoCorruption(primaryDisk);
    }

    private static boolean reads(StorageDaemon d, String pattern, String range) {
        Qemu.Result r = Qemu.run("qemu-io", "-f", "raw", "-c", "read -P " + pattern + " " + range, d.nbdUri("colo-disk0"));
        return r.exit() == 0 && !(r.out() + r.err()).contains("Pattern verification failed") && !(r.out() + r.err()).contains("failed");
    }

    /**
     * (c) The primary is killed while the secondary checkpoints: whichever comes first, the
     * secondary takes over with one consistent view — the checkpoint's (the primary's 0x22, its
     * own 0x33 gone) or the one before it (its own 0x33, the primary's 0x22 not yet seen) — never
     * half of each.
     */
    @Test
    void thePrimaryKilledDuringACheckpointLeavesOneConsistentView() throws Exception {
        vm(primary, "write -P 0x22 0 1M");
        vm(secondary, "write -P 0x33 4M 1M");
        var checkpoint = java.util.concurrent.CompletableFuture.runAsync(() -> {
            try {
                secondary.qmp.execute("xen-colo-do-checkpoint", null);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        primary.killHard();
        checkpoint.get(1, java.util.concurrent.TimeUnit.MINUTES);
        failover(secondary, "secondary");
        boolean after = reads(secondary, "0x22", "0 1M") && reads(secondary, "0x11", "4M 1M");
        boolean before = reads(secondary, "0x11", "0 1M") && reads(secondary, "0x33", "4M 1M");
        assertThat(after || before).as("the view after the checkpoint or the one before it").isTrue();
        secondary.quit();
        secondaryImagesClean();
    }

    /**
     * (d) The NBD link between them drops: the primary's writer notices nothing, its status says
     * an error occurred, and it fails over and goes on alone; the secondary, cut off, still holds
     * the last checkpoint and its own writes since.
     */
    @Test
    void theLinkDroppedThePrimaryGoesOnAloneAndTheSecondaryKeepsItsView() throws Exception {
        vm(primary, "write -P 0x22 0 1M");
        checkpoint();
        vm(secondary, "write -P 0x33 4M 1M");
        link.cut();
        vm(primary, "write -P 0x44 2M 1M", "read -P 0x44 2M 1M"); // no error for the writer
        assertThat(primary.qmp.ok("query-xen-replication-status").toString())
                .isEqualTo("{\"error\":true,\"desc\":\"I/O error occurred\"}");
        primaryGoesOnAlone();
        vm(primary, "read -P 0x22 0 1M", "read -P 0x44 2M 1M", "read -P 0x11 4M 1M");
        vm(secondary, "read -P 0x22 0 1M", "read -P 0x11 2M 1M", "read -P 0x33 4M 1M");
        reprotect(primary, primaryDisk);
        Qemu.io(primaryDisk, "qcow2", "read -P 0x22 0 1M", "read -P 0x11 1M 1M", "read -P 0x44 2M 1M",
                "read -P 0x11 3M 13M");
        secondary.quit();
        secondaryImagesClean();
    }

    // ---- The same four faults with both VMs writing all along, checked against a byte-level model.

    /** Every 8 bytes of both disks at the start: the 0x11 pattern. */
    static final long INITIAL = 0x1111111111111111L;
    /** The management layer's checkpoint interval, as COLO's {@code x-checkpoint-delay}. */
    static final Duration CADENCE = Duration.ofMillis(100);
    /** Writes awaited from a VM at each step: after the last checkpoint before a fault, and after each step of a failover. */
    static final int WRITES = 16;

    /** The primary's VM and the secondary's, each writing to its side's {@code colo-disk0}. */
    record Vms(VmWriter primary, VmWriter secondary) {
    }

    private VmWriter writer(Path side, int id, long seed) {
        VmWriter w = new VmWriter(side.resolve("nbd.sock"), "colo-disk0",
                new VmWriter.Model(16L << 20, INITIAL), id, seed);
        writers.add(w);
        return w;
    }

    /**
     * The management layer's timer: every {@link #CADENCE} a checkpoint with both VMs paused, as
     * COLO pauses them to transfer their state, and the secondary's model becomes the primary's; on
     * a thread of its own while the VMs write, until closed. It counts the checkpoints whose period
     * had writes by both VMs, and keeps how many writes each VM had acknowledged at the last
     * checkpoint. The test thread uses neither daemon's QMP while it runs; {@link #close} waits for
     * a checkpoint in flight.
     */
    final class Cadence {
        private final Vms vms;
        private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(
                r -> Thread.ofPlatform().name("colo-cadence").daemon().unstarted(r));
        private int checkpoints; // guarded by this
        private int busyPeriods; // checkpoints after writes by both VMs; guarded by this
        private int primaryAcked; // at the last checkpoint; guarded by this
        private int secondaryAcked;
        private Throwable failure; // guarded by this

        Cadence(Vms vms) {
            this.vms = vms;
            timer.scheduleWithFixedDelay(this::tick, CADENCE.toMillis(), CADENCE.toMillis(), TimeUnit.MILLISECONDS);
        }

        private void tick() {
            try {
                vms.primary.pause();
                vms.secondary.pause();
                try {
                    checkpoint();
                    vms.secondary.model.copyFrom(vms.primary.model);
                    int p = vms.primary.acked();
                    int s = vms.secondary.acked();
                    synchronized (this) {
                        if (p > primaryAcked && s > secondaryAcked) {
                            busyPeriods++;
                        }
                        primaryAcked = p;
                        secondaryAcked = s;
                        checkpoints++;
                        notifyAll();
                    }
                } finally {
                    vms.secondary.resume();
                    vms.primary.resume();
                }
            } catch (Throwable t) {
                synchronized (this) {
                    failure = t;
                    notifyAll();
                }
                throw new IllegalStateException(t); // no further ticks
            }
        }

        /** Waits until {@code n} checkpoints have each followed writes by both VMs since the one before. */
        synchronized void awaitBusyPeriods(int n) throws InterruptedException {
            long end = System.nanoTime() + VmWriter.WAIT.toNanos();
            while (busyPeriods < n && failure == null) {
                long left = end - System.nanoTime();
                assertThat(left).as("%d checkpoints after writes by both VMs (%d checkpoints so far)", n, checkpoints)
                        .isPositive();
                wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
            }
            assertThat(failure).as("the scheduled checkpoints").isNull();
        }

        synchronized int primaryAcked() {
            return primaryAcked;
        }

        synchronized int secondaryAcked() {
            return secondaryAcked;
        }

        /** Stops the timer, after the checkpoint in flight if there is one. */
        void close() throws InterruptedException {
            timer.shutdown(); // a periodic task does not run again after shutdown
            assertThat(timer.awaitTermination(VmWriter.WAIT.toMillis(), TimeUnit.MILLISECONDS))
                    .as("the checkpoint in flight ends").isTrue();
            synchronized (this) {
                assertThat(failure).as("the scheduled checkpoints").isNull();
            }
        }
    }

    /**
     * Both VMs writing, checkpointed every {@link #CADENCE} until {@code periods} checkpoints have
     * come after writes by both; then, with the checkpoints stopped as when the heartbeat is lost,
     * {@link #WRITES} more writes by each VM, so that the fault finds both VMs' writes since
     * the last checkpoint.
     */
    private Vms replicating(int periods, long seed) throws Exception {
        Vms vms = new Vms(writer(pdir, 1, seed), writer(sdir, 2, seed + 1));
        Cadence cadence = new Cadence(vms);
        try {
            cadence.awaitBusyPeriods(periods);
        } finally {
            cadence.close(); // the last checkpoint is over before its counts are read
        }
        vms.primary.awaitAcked(cadence.primaryAcked(), WRITES);
        vms.secondary.awaitAcked(cadence.secondaryAcked(), WRITES);
        return vms;
    }

    /** The guest-visible disk a side's VM sees, whole. */
    private byte[] exported(StorageDaemon d) throws Exception {
        return Qemu.readAllNbd(d.nbdUri("colo-disk0"), dir);
    }

    /** Writes acknowledged by {@code w} after {@code WRITES} more, which must come without an error. */
    private static int writesOn(VmWriter w) throws Exception {
        int n = w.awaitAcked(w.acked(), WRITES);
        assertThat(w.error()).as("the VM's writes").isNull();
        return n;
    }

    /** (a) under load: the secondary killed while both VMs write; the primary's VM loses no write. */
    @Test
    void underLoadTheSecondaryKilledThePrimaryLosesNoWrite() throws Exception {
        Vms vms = replicating(5, 16_01);
        secondary.killHard();
        vms.secondary.stop();
        writesOn(vms.primary);
        assertThat(primary.qmp.ok("query-xen-replication-status").toString())
                .isEqualTo("{\"error\":true,\"desc\":\"I/O error occurred\"}");
        primaryGoesOnAlone(); // while its VM writes
        writesOn(vms.primary);
        vms.primary.stop();
        assertThat(vms.primary.error()).isNull();
        vms.primary.model.assertMatches(exported(primary), "(a) the primary's colo-disk0");
        reprotect(primary, primaryDisk);
        vms.primary.model.assertMatches(Qemu.readAll(primaryDisk, dir), "(a) the primary's disk");
        for (String n : List.of("parent0", "hidden0", "active0")) {
            Qemu.assertNoCorruption(sdir.resolve(n + ".qcow2"));
        }
    }

    /**
     * (b) under load: the primary killed while both VMs write; the secondary fails over with its VM
     * writing through the failover, and its disk is the last checkpoint plus every write of its own.
     */
    @Test
    void underLoadThePrimaryKilledTheSecondaryKeepsTheCheckpointAndItsOwnWrites() throws Exception {
        Vms vms = replicating(5, 16_02);
        primary.killHard();
        vms.primary.stop();
        failover(secondary, "secondary");
        writesOn(vms.secondary); // the VM wrote through the failover and goes on
        vms.secondary.stop();
        assertThat(vms.secondary.error()).isNull();
        vms.secondary.model.assertMatches(exported(secondary), "(b) the secondary's colo-disk0");
        reprotect(secondary, secondaryDisk);
        vms.secondary.model.assertMatches(Qemu.readAll(secondaryDisk, dir), "(b) the secondary disk");
        for (String n : List.of("hidden0", "active0")) {
            Qemu.assertClean(sdir.resolve(n + ".qcow2"));
        }
        Qemu.assertNoCorruption(primaryDisk);
    }

    /**
     * (c) under load: the primary killed while the secondary checkpoints; the secondary holds the
     * primary's disk at the checkpoint, or the previous checkpoint plus its own writes, never a mix.
     */
    @Test
    void underLoadThePrimaryKilledDuringACheckpointLeavesOneOfTwoViews() throws Exception {
        Vms vms = replicating(4, 16_03);
        vms.primary.pause();
        vms.secondary.pause();
        VmWriter.Model atCheckpoint = vms.primary.model.copy();
        VmWriter.Model withoutIt = vms.secondary.model.copy();
        var checkpoint = java.util.concurrent.CompletableFuture.runAsync(() -> {
            try {
                secondary.qmp.execute("xen-colo-do-checkpoint", null);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        primary.killHard();
        checkpoint.get(1, java.util.concurrent.TimeUnit.MINUTES);
        vms.primary.stop();
        vms.secondary.stop();
        failover(secondary, "secondary");
        byte[] disk = exported(secondary);
        List<String> after = atCheckpoint.mismatches(disk);
        List<String> before = withoutIt.mismatches(disk);
        assertThat(after.isEmpty() || before.isEmpty())
                .as("the checkpoint's view %s or the one before it %s", after, before).isTrue();
        secondary.quit();
        secondaryImagesClean();
    }

    /**
     * (d) under load: the link dropped while both VMs write; the primary's VM loses no write and the
     * primary goes on alone; the secondary's VM, cut off, keeps the checkpoint and its own writes.
     */
    @Test
    void underLoadTheLinkDroppedNeitherVmLosesAWrite() throws Exception {
        Vms vms = replicating(5, 16_04);
        link.cut();
        writesOn(vms.primary);
        assertThat(primary.qmp.ok("query-xen-replication-status").toString())
                .isEqualTo("{\"error\":true,\"desc\":\"I/O error occurred\"}");
        primaryGoesOnAlone();
        writesOn(vms.primary);
        writesOn(vms.secondary);
        vms.primary.stop();
        vms.secondary.stop();
        assertThat(vms.primary.error()).isNull();
        assertThat(vms.secondary.error()).isNull();
        vms.primary.model.assertMatches(exported(primary), "(d) the primary's colo-disk0");
        vms.secondary.model.assertMatches(exported(secondary), "(d) the secondary's colo-disk0");
        reprotect(primary, primaryDisk);
        vms.primary.model.assertMatches(Qemu.readAll(primaryDisk, dir), "(d) the primary's disk");
        secondary.quit();
        secondaryImagesClean();
    }
}
