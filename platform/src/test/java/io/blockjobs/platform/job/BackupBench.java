package io.blockjobs.platform.job;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpArgs;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import tools.jackson.databind.JsonNode;

/**
 * Backups, blockjobd beside qemu-storage-daemon on identical images with the same cache mode on
 * both ({@code cache.direct=on}, then off): a full backup, an incremental one (100 MiB dirty in
 * a persistent bitmap), the read throughput of a pull-mode client ({@code nbdcopy} from a
 * {@code snapshot-access} export to {@code null:}), and a client's write latency through NBD
 * (4 KiB random writes, one at a time) while a full backup runs onto a slow target (a throttle
 * filter), against the same writes with no backup. Rounds interleave the daemons; images are
 * made afresh, synced and dropped from the page cache before each run. Prints figures; asserts
 * nothing.
 *
 * <p>Run: {@code ./build bench-jobs -Dbench.backup=only [DIR]} (or with the other jobs, by
 * default after them). Settings: {@code bench.size} (default {@code 2G}), {@code bench.rounds}
 * (default 3), {@code bench.cache} ({@code on,off}), {@code bench.slowTarget} (MiB/s of the slow
 * target, default 50).
 */
public final class BackupBench {
    private static final long MIB = 1L << 20;
    private static final long GIB = 1L << 30;
    private static final long DIRTY = 100 * MIB;
    private static final Duration TIMEOUT = Duration.ofMinutes(10);

    /** What is measured, one figure per run. */
    enum Test {
        FULL("full backup", "MiB/s"),
        INCREMENTAL("incremental (100 MiB)", "MiB/s"),
        PULL("pull-mode read", "MiB/s"),
        LATENCY_MEDIAN("write latency, median", "ms"),
        LATENCY_P99("write latency, p99", "ms"),
        IDLE_MEDIAN("same, no backup: median", "ms");

        final String label;
        final String unit;

        Test(String label, String unit) {
            this.label = label;
            this.unit = unit;
        }
    }

    private final Path dir;
    private final String blockjobd;
    private final long size;
    private final long slowTarget;

    private BackupBench(Path dir, String blockjobd, long size, long slowTarget) {
        this.dir = dir;
        this.blockjobd = blockjobd;
        this.size = size;
        this.slowTarget = slowTarget;
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-backup-bench-");
        Files.createDirectories(dir);
        run(dir);
    }

    /** Runs the benchmark with the {@code bench.*} settings, its files in {@code dir}. */
    static void run(Path dir) throws Exception {
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        long size = parseSize(System.getProperty("bench.size", "2G"));
        int rounds = Integer.getInteger("bench.rounds", 3);
        long slow = Long.getLong("bench.slowTarget", 50);
        BackupBench bench = new BackupBench(dir, blockjobd, size, slow * MIB);
        System.out.printf(Locale.ROOT, "%nbackup: qcow2 disk of %s, data in its first half; incremental: %d MiB dirty "
                + "in 64 KiB pieces; files in %s%n", human(size), DIRTY / MIB, dir);
        for (String m : System.getProperty("bench.cache", "on,off").split(",")) {
            bench.mode(m.trim().equals("on"), rounds);
        }
        System.out.println("MiB/s: full backup: the disk's data over the time from blockdev-backup to "
                + "BLOCK_JOB_COMPLETED; incremental: the dirty bytes over that time; pull-mode read: the disk's "
                + "size over nbdcopy's run. Latency: a client's 4 KiB writes through NBD, one at a time, while a "
                + "full backup runs onto a target throttled to " + slow + " MiB/s. Cells: median [min-max] of the "
                + "rounds; ratio: of the medians (for latency, lower is better).");
    }

    private void mode(boolean direct, int rounds) throws Exception {
        Map<Test, List<Double>> ours = new LinkedHashMap<>();
        Map<Test, List<Double>> theirs = new LinkedHashMap<>();
        for (int r = 0; r < rounds; r++) {
            for (String daemon : List.of(blockjobd, "qemu-storage-daemon")) {
                Map<Test, Double> got = runAll(daemon, direct);
                Map<Test, List<Double>> into = daemon.equals(blockjobd) ? ours : theirs;
                got.forEach((t, v) -> into.computeIfAbsent(t, x -> new ArrayList<>()).add(v));
            }
        }
        System.out.println();
        System.out.printf(Locale.ROOT, "cache.direct=%s on disk and target of both daemons%n", direct ? "on" : "off");
        System.out.printf(Locale.ROOT, "%-26s %-26s %-26s %-8s%n", "test", "blockjobd", "qsd", "ratio");
        for (Test t : Test.values()) {
            List<Double> a = ours.get(t);
            List<Double> b = theirs.get(t);
            System.out.printf(Locale.ROOT, "%-26s %-26s %-26s %-8.2f%n", t.label + " (" + t.unit + ")",
                    cell(a), cell(b), median(a) / median(b));
        }
    }

    /** One daemon, one round: every test on fresh images. */
    private Map<Test, Double> runAll(String daemon, boolean direct) throws Exception {
        boolean qsd = !daemon.equals(blockjobd);
        Path runDir = Files.createDirectories(dir.resolve(qsd ? "qsd" : "bj"));
        Map<Test, Double> out = new LinkedHashMap<>();
        String cache = ",cache.direct=" + (direct ? "on" : "off");

        Path disk = disk(runDir, false);
        Path target = fresh(runDir.resolve("target.qcow2"));
        try (Session s = new Session(daemon, runDir, List.of(
                "--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + disk + cache,
                "--blockdev", "driver=qcow2,node-name=tgt,file.driver=file,file.filename=" + target + cache))) {
            out.put(Test.FULL, (size / 2) / (double) MIB / s.backup(QmpArgs.map("job-id", "b", "device", "disk",
                    "target", "tgt", "sync", "full")));
        }

        disk = disk(runDir, true);
        target = fresh(runDir.resolve("target.qcow2"));
        try (Session s = new Session(daemon, runDir, List.of(
                "--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + disk + cache,
                "--blockdev", "driver=qcow2,node-name=tgt,file.driver=file,file.filename=" + target + cache))) {
            out.put(Test.INCREMENTAL, DIRTY / (double) MIB / s.backup(QmpArgs.map("job-id", "b", "device", "disk",
                    "target", "tgt", "sync", "incremental", "bitmap", "since")));
        }

        disk = disk(runDir, false);
        Path scratch = fresh(runDir.resolve("scratch.qcow2"));
        Path nbd = runDir.resolve("nbd.sock");
        Files.deleteIfExists(nbd);
        try (Session s = new Session(daemon, runDir, List.of(
                "--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + disk + cache,
                "--blockdev", "driver=qcow2,node-name=scratch,file.driver=file,file.filename=" + scratch + cache,
                "--blockdev", "driver=copy-before-write,node-name=cbw,file=disk,target=scratch",
                "--blockdev", "driver=snapshot-access,node-name=acc,file=cbw",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=fleece,node-name=acc,name=fleece"))) {
            long start = System.nanoTime();
            Qemu.run("nbdcopy", "nbd+unix:///fleece?socket=" + nbd, "null:").ok();
            out.put(Test.PULL, size / (double) MIB / ((System.nanoTime() - start) / 1e9));
        }

        disk = disk(runDir, false);
        target = fresh(runDir.resolve("target.qcow2"));
        Files.deleteIfExists(nbd);
        try (Session s = new Session(daemon, runDir, List.of(
                "--object", "throttle-group,id=tg,limits.bps-write=" + slowTarget,
                "--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + disk + cache,
                "--blockdev", "driver=qcow2,node-name=tgt,file.driver=file,file.filename=" + target + cache,
                "--blockdev", "driver=throttle,node-name=slow,throttle-group=tg,file=tgt",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=disk,node-name=disk,name=disk,writable=on"))) {
            try (NbdWriter w = new NbdWriter(nbd, "disk")) {
                double[] idle = w.writes(200, size / 2, 1);
                out.put(Test.IDLE_MEDIAN, percentile(idle, 50));
                s.qmp.ok("blockdev-backup", QmpArgs.map("job-id", "slow", "device", "disk", "target", "slow",
                        "sync", "full"));
                double[] busy = w.writes(200, size / 2, 2);
                out.put(Test.LATENCY_MEDIAN, percentile(busy, 50));
                out.put(Test.LATENCY_P99, percentile(busy, 99));
                s.qmp.ok("block-job-cancel", QmpArgs.map("device", "slow", "force", true));
                s.qmp.awaitEvent("BLOCK_JOB_CANCELLED", x -> true, TIMEOUT);
            }
        }
        return out;
    }

    /** A daemon with a QMP monitor, and a backup timed to its end. */
    private static final class Session implements AutoCloseable {
        final BenchDaemon daemon;
        final QmpClient qmp;

        Session(String executable, Path runDir, List<String> options) throws Exception {
            Path sock = runDir.resolve("qmp.sock");
            Files.deleteIfExists(sock);
            List<String> args = new ArrayList<>(options);
            args.addAll(List.of("--chardev", "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "m"));
            daemon = BenchDaemon.start(executable, args, runDir, Map.of());
            qmp = QmpClient.connect(sock);
        }

        /** Seconds from the command to BLOCK_JOB_COMPLETED. */
        double backup(Map<String, Object> args) throws Exception {
            long start = System.nanoTime();
            qmp.ok("blockdev-backup", args);
            JsonNode done = qmp.awaitEvent("BLOCK_JOB_COMPLETED", x -> true, TIMEOUT);
            if (done.at("/data/error").isString()) {
                throw new IllegalStateException("backup failed: " + done);
            }
            return (System.nanoTime() - start) / 1e9;
        }

        @Override
        public void close() throws Exception {
            qmp.close();
            daemon.close();
        }
    }

    /** The disk: data in its first half; with {@code dirty}, a persistent bitmap and 100 MiB written since. */
    private Path disk(Path runDir, boolean dirty) throws IOException {
        Path disk = fresh(runDir.resolve("disk.qcow2"));
        List<String> cmds = new ArrayList<>();
        for (long pos = 0; pos < size / 2; pos += GIB) {
            cmds.add(String.format(Locale.ROOT, "write -P 0x5a %d %d", pos, Math.min(GIB, size / 2 - pos)));
        }
        Qemu.io(disk, "qcow2", cmds.toArray(String[]::new));
        if (dirty) {
            Qemu.img("bitmap", "--add", disk.toString(), "since");
            List<String> writes = new ArrayList<>();
            long pieces = DIRTY / (64 * 1024);
            long stride = size / pieces / (64 * 1024) * (64 * 1024);
            for (long i = 0; i < pieces; i++) {
                writes.add("write -P 0x6b " + i * stride + " 64k");
            }
            Qemu.io(disk, "qcow2", writes.toArray(String[]::new)); // qemu-io records them in the bitmap
        }
        settle(disk);
        return disk;
    }

    private Path fresh(Path p) throws IOException {
        Files.deleteIfExists(p);
        Qemu.img("create", "-q", "-f", "qcow2", p.toString(), String.valueOf(size));
        settle(p);
        return p;
    }

    private static void settle(Path p) {
        Qemu.run("sync", p.toString()).ok();
        Qemu.run("dd", "if=" + p, "iflag=nocache", "count=0", "status=none").ok();
    }

    /**
     * A minimal NBD client (fixed newstyle, {@code NBD_OPT_EXPORT_NAME}, simple replies) that
     * writes one request at a time and times each, as a guest's synchronous write would see it.
     */
    private static final class NbdWriter implements AutoCloseable {
        private final SocketChannel channel;
        private final DataInputStream in;
        private final DataOutputStream out;
        private long handle;

        NbdWriter(Path socket, String export) throws IOException {
            channel = SocketChannel.open(StandardProtocolFamily.UNIX);
            channel.connect(UnixDomainSocketAddress.of(socket));
            in = new DataInputStream(Channels.newInputStream(channel));
            out = new DataOutputStream(new java.io.BufferedOutputStream(Channels.newOutputStream(channel)));
            in.readLong(); // NBDMAGIC
            in.readLong(); // IHAVEOPT
            int serverFlags = in.readUnsignedShort();
            boolean noZeroes = (serverFlags & 2) != 0;
            out.writeInt(1 | (noZeroes ? 2 : 0)); // fixed newstyle, no zeroes
            byte[] name = export.getBytes(StandardCharsets.UTF_8);
            out.writeLong(0x49484156454F5054L); // IHAVEOPT
            out.writeInt(1); // NBD_OPT_EXPORT_NAME
            out.writeInt(name.length);
            out.write(name);
            out.flush();
            in.readLong(); // export size
            in.readUnsignedShort(); // transmission flags
            if (!noZeroes) {
                in.readFully(new byte[124]);
            }
        }

        /** {@code n} 4 KiB writes at random 4 KiB-aligned offsets below {@code range}; milliseconds each. */
        double[] writes(int n, long range, long seed) throws IOException {
            SplittableRandom r = new SplittableRandom(seed);
            byte[] data = new byte[4096];
            r.nextBytes(data);
            double[] ms = new double[n];
            for (int i = 0; i < n; i++) {
                long off = r.nextLong(range / 4096) * 4096;
                long start = System.nanoTime();
                out.writeInt(0x25609513);
                out.writeShort(0); // flags
                out.writeShort(1); // NBD_CMD_WRITE
                out.writeLong(++handle);
                out.writeLong(off);
                out.writeInt(data.length);
                out.write(data);
                out.flush();
                if (in.readInt() != 0x67446698) {
                    throw new IOException("bad NBD reply magic");
                }
                int error = in.readInt();
                in.readLong();
                if (error != 0) {
                    throw new IOException("NBD write failed: error " + error);
                }
                ms[i] = (System.nanoTime() - start) / 1e6;
            }
            Arrays.sort(ms);
            return ms;
        }

        @Override
        public void close() throws IOException {
            out.writeInt(0x25609513);
            out.writeShort(0);
            out.writeShort(2); // NBD_CMD_DISC
            out.writeLong(++handle);
            out.writeLong(0);
            out.writeInt(0);
            out.flush();
            channel.close();
        }
    }

    private static double percentile(double[] sorted, int p) {
        int i = (int) Math.ceil(p / 100.0 * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }

    private static double median(List<Double> v) {
        double[] s = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        int n = s.length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    private static String cell(List<Double> v) {
        double[] s = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return String.format(Locale.ROOT, "%.1f [%.1f-%.1f]", median(v), s[0], s[s.length - 1]);
    }

    private static long parseSize(String s) {
        String t = s.trim().toUpperCase(Locale.ROOT);
        long unit = switch (t.charAt(t.length() - 1)) {
            case 'M' -> MIB;
            case 'G' -> GIB;
            default -> 1;
        };
        long n = Long.parseLong(unit == 1 ? t : t.substring(0, t.length() - 1)) * unit;
        if (n < 256 * MIB) {
            throw new IllegalArgumentException("bench.size must be at least 256 MiB: " + s);
        }
        return n;
    }

    private static String human(long bytes) {
        return bytes % GIB == 0 ? bytes / GIB + " GiB" : bytes / MIB + " MiB";
    }
}
