package io.blockjobs.platform.job;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.CephCluster;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpArgs;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * Jobs to and from a single-node Ceph cluster ({@link CephCluster}, started here), blockjobd
 * beside qemu-storage-daemon (its {@code rbd} driver), same cluster, same images, rounds
 * interleaved (blockjobd, qsd, ...): mirror (sync full) of a local qcow2 into a new RBD image,
 * mirror of an RBD image out into a new local qcow2, and a full {@code blockdev-backup} of an
 * RBD disk into a local qcow2. Data: half the size, written by qemu-io before the daemon starts;
 * local files are synced and dropped from the page cache first. Throughput counts from the job
 * command to {@code BLOCK_JOB_COMPLETED} (a mirror's {@code job-complete} included); CPU is the
 * daemon's user + system time over that span, per GiB (the OSD's is not counted). Asserts
 * nothing except that the rbd nodes are {@code rbd} nodes and each copy has the source's size.
 *
 * <p>Run: {@code ./build bench-rbd [-Dbench.size=1G] [-Dbench.rounds=3] [-Dbench.jobs=to-rbd,from-rbd,backup] [DIR]}.
 */
public final class RbdBench {
    private static final long MIB = 1L << 20;
    private static final long GIB = 1L << 30;
    private static final Duration TIMEOUT = Duration.ofMinutes(10);

    enum Job {
        TO_RBD("mirror qcow2 -> rbd"), FROM_RBD("mirror rbd -> qcow2"), BACKUP("backup rbd -> qcow2");

        final String label;

        Job(String label) {
            this.label = label;
        }
    }

    record Run(double mibPerSec, double cpuPerGib) {
    }

    private final Path dir;
    private final String blockjobd;
    private final long size;
    private final CephCluster ceph;
    private final String srcImage;
    private final Path srcQcow2;
    private int serial;

    private RbdBench(Path dir, String blockjobd, long size, CephCluster ceph) {
        this.dir = dir;
        this.blockjobd = blockjobd;
        this.size = size;
        this.ceph = ceph;
        this.srcImage = "bench-src-" + Long.toHexString(System.nanoTime());
        this.srcQcow2 = dir.resolve("src.qcow2");
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-rbd-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        long size = parseSize(System.getProperty("bench.size", "1G"));
        int rounds = Integer.getInteger("bench.rounds", 3);
        List<Job> jobs = Arrays.stream(System.getProperty("bench.jobs", "to-rbd,from-rbd,backup").split(","))
                .map(j -> Job.valueOf(j.trim().toUpperCase(Locale.ROOT).replace('-', '_'))).toList();
        // The OSD keeps objects in memory: room for the source image and a target at a time.
        System.setProperty("blockjobs.ceph.memstore", String.valueOf(Math.max(2 * GIB, 3 * size + GIB)));
        CephCluster ceph = CephCluster.get();
        RbdBench bench = new RbdBench(dir, blockjobd, size, ceph);
        bench.makeSources();
        System.out.printf(Locale.ROOT, "single-node Ceph (memstore OSD, pool %s, one replica) started in %.1f s; "
                        + "images of %s, data in the first half (%s). Local files in %s%n", CephCluster.POOL,
                ceph.startMillis / 1e3, human(size), human(size / 2), dir);
        System.out.printf(Locale.ROOT, "%d rounds, interleaved (blockjobd, qsd, ...), a new target per run.%n", rounds);
        Map<Job, List<Run>> ours = new EnumMap<>(Job.class);
        Map<Job, List<Run>> theirs = new EnumMap<>(Job.class);
        for (int r = 0; r < rounds; r++) {
            for (Job job : jobs) {
                ours.computeIfAbsent(job, j -> new ArrayList<>()).add(bench.run(blockjobd, job));
                theirs.computeIfAbsent(job, j -> new ArrayList<>()).add(bench.run("qemu-storage-daemon", job));
            }
        }
        System.out.println();
        System.out.printf(Locale.ROOT, "%-20s %-22s %-22s %-18s %-20s %-20s %-18s%n", "job", "blockjobd MiB/s",
                "qsd MiB/s", "ratio", "bj CPU s/GiB", "qsd CPU s/GiB", "CPU ratio");
        for (Job job : jobs) {
            List<Run> a = ours.get(job);
            List<Run> b = theirs.get(job);
            System.out.printf(Locale.ROOT, "%-20s %-22s %-22s %-18s %-20s %-20s %-18s%n", job.label,
                    cell(a, Run::mibPerSec, 1), cell(b, Run::mibPerSec, 1), ratio(a, b, Run::mibPerSec),
                    cell(a, Run::cpuPerGib, 2), cell(b, Run::cpuPerGib, 2), ratio(a, b, Run::cpuPerGib));
        }
        System.out.println("MiB/s: the data (half the size) over the time from the job command to BLOCK_JOB_COMPLETED. "
                + "CPU s/GiB: the daemon's user + system time over that span. Cells: median [min-max]; ratios: of "
                + "the medians [min-max of each round's].");
        ceph.rbd("rm", "--no-progress", CephCluster.POOL + "/" + bench.srcImage);
    }

    /** The sources: a local qcow2 and an RBD image, each with the same data in its first half. */
    private void makeSources() {
        Qemu.img("create", "-q", "-f", "qcow2", srcQcow2.toString(), String.valueOf(size));
        Qemu.io(srcQcow2, "qcow2", writes());
        Qemu.img("create", "-q", "-f", "raw", ceph.rbdName(srcImage), String.valueOf(size));
        Qemu.io(Path.of(ceph.rbdName(srcImage)), "raw", writes());
    }

    private String[] writes() {
        List<String> cmds = new ArrayList<>();
        for (long pos = 0; pos < size / 2; pos += 256 * MIB) {
            cmds.add(String.format(Locale.ROOT, "write -P 0x5a %d %d", pos, Math.min(256 * MIB, size / 2 - pos)));
        }
        return cmds.toArray(String[]::new);
    }

    private Run run(String daemon, Job job) throws Exception {
        boolean qsd = daemon.endsWith("qemu-storage-daemon");
        Path runDir = Files.createDirectories(dir.resolve(qsd ? "qsd" : "bj"));
        Path qmp = runDir.resolve("qmp.sock");
        Files.deleteIfExists(qmp);
        Path local = runDir.resolve("tgt.qcow2");
        Files.deleteIfExists(local);
        String rbdTarget = "bench-tgt-" + serial++ + "-" + Long.toHexString(System.nanoTime());
        String conf = ",pool=" + CephCluster.POOL + ",conf=" + ceph.conf;
        List<String> args = new ArrayList<>(List.of(
                "--chardev", "socket,id=m,path=" + qmp + ",server=on,wait=off", "--monitor", "m"));
        String rbdNode;
        if (job == Job.TO_RBD) {
            Qemu.run("sync", srcQcow2.toString()).ok();
            Qemu.run("dd", "if=" + srcQcow2, "iflag=nocache", "count=0", "status=none").ok();
            Qemu.img("create", "-q", "-f", "raw", ceph.rbdName(rbdTarget), String.valueOf(size));
            args.addAll(List.of("--blockdev", "driver=qcow2,node-name=src,file.driver=file,file.filename=" + srcQcow2,
                    "--blockdev", "driver=rbd,node-name=tgt,image=" + rbdTarget + conf));
            rbdNode = "tgt";
        } else {
            Qemu.img("create", "-q", "-f", "qcow2", local.toString(), String.valueOf(size));
            args.addAll(List.of("--blockdev", "driver=rbd,node-name=src,image=" + srcImage + conf,
                    "--blockdev", "driver=qcow2,node-name=tgt,file.driver=file,file.filename=" + local));
            rbdNode = "src";
        }
        long bytes = size / 2;
        try (BenchDaemon d = BenchDaemon.start(daemon, args, runDir); QmpClient c = QmpClient.connect(qmp)) {
            checkRbd(c, rbdNode, daemon);
            double cpu0 = d.cpuSeconds();
            long start = System.nanoTime();
            Map<String, Object> a = QmpArgs.map("job-id", "j", "device", "src", "target", "tgt", "sync", "full");
            if (job == Job.BACKUP) {
                c.ok("blockdev-backup", a);
            } else {
                c.ok("blockdev-mirror", a);
                c.awaitEvent("BLOCK_JOB_READY", x -> x.path("device").asString().equals("j"), TIMEOUT);
                c.ok("job-complete", QmpArgs.map("id", "j"));
            }
            JsonNode done = c.awaitEvent("BLOCK_JOB_COMPLETED", x -> x.path("device").asString().equals("j"), TIMEOUT);
            double seconds = (System.nanoTime() - start) / 1e9;
            double cpu = d.cpuSeconds() - cpu0;
            if (done.at("/data/error").isString()) {
                throw new IllegalStateException(job.label + " failed in " + daemon + ": " + done);
            }
            long len = done.at("/data/len").asLong();
            if (len != size) {
                throw new IllegalStateException(job.label + " in " + daemon + " ended with len " + len + ", not " + size);
            }
            return new Run(bytes / (double) MIB / seconds, cpu / (bytes / (double) GIB));
        } finally {
            if (job == Job.TO_RBD) {
                ceph.rbd("rm", "--no-progress", CephCluster.POOL + "/" + rbdTarget); // room for the next target
            }
        }
    }

    /** The setup check: {@code node} is open with the rbd driver in {@code daemon}. */
    private static void checkRbd(QmpClient c, String node, String daemon) throws java.io.IOException {
        for (JsonNode n : c.ok("query-named-block-nodes")) {
            if (n.get("node-name").asString().equals(node)) {
                if (!n.get("drv").asString().equals("rbd")) {
                    throw new IllegalStateException(daemon + ": node " + node + " is " + n.get("drv") + ", not rbd");
                }
                return;
            }
        }
        throw new IllegalStateException(daemon + " has no node " + node);
    }

    private static String cell(List<Run> runs, java.util.function.ToDoubleFunction<Run> f, int digits) {
        double[] v = runs.stream().mapToDouble(f).sorted().toArray();
        String fmt = "%." + digits + "f [%." + digits + "f-%." + digits + "f]";
        return String.format(Locale.ROOT, fmt, median(v), v[0], v[v.length - 1]);
    }

    private static String ratio(List<Run> a, List<Run> b, java.util.function.ToDoubleFunction<Run> f) {
        double[] perRound = new double[a.size()];
        for (int i = 0; i < a.size(); i++) {
            perRound[i] = f.applyAsDouble(a.get(i)) / f.applyAsDouble(b.get(i));
        }
        Arrays.sort(perRound);
        return String.format(Locale.ROOT, "%.2f [%.2f-%.2f]",
                median(a.stream().mapToDouble(f).sorted().toArray()) / median(b.stream().mapToDouble(f).sorted().toArray()),
                perRound[0], perRound[perRound.length - 1]);
    }

    private static double median(double[] sorted) {
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static long parseSize(String s) {
        String t = s.trim().toUpperCase(Locale.ROOT);
        long unit = switch (t.charAt(t.length() - 1)) {
            case 'M' -> MIB;
            case 'G' -> GIB;
            default -> 1;
        };
        long size = Long.parseLong(unit == 1 ? t : t.substring(0, t.length() - 1)) * unit;
        if (size < 64 * MIB || size % (8 * MIB) != 0) {
            throw new IllegalArgumentException("bench.size must be a multiple of 8 MiB, at least 64 MiB: " + s);
        }
        return size;
    }

    private static String human(long bytes) {
        return bytes >= GIB ? String.format(Locale.ROOT, "%.2f GiB", bytes / (double) GIB)
                : String.format(Locale.ROOT, "%d MiB", bytes / MIB);
    }
}
