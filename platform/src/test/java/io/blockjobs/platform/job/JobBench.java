package io.blockjobs.platform.job;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpArgs;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
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
 * Stream, intermediate commit, active commit and mirror (sync full, onto a fresh qcow2; and
 * "mirror to nbd": onto a fresh qcow2 that a second daemon of the same kind exports writable over
 * a unix socket, the source reaching it through a {@code driver: nbd} node) of a qcow2 chain,
 * blockjobd beside
 * qemu-storage-daemon, with the same cache mode on both ({@code cache.direct=on} on every layer
 * of both, then off on both). Rounds are interleaved (blockjobd, qsd, blockjobd, qsd, ...), each
 * run on a fresh chain made the same way, its files synced and dropped from the page cache
 * first. Throughput counts from the job command to {@code BLOCK_JOB_COMPLETED}, the job's final
 * flush included (an active commit's {@code job-complete} too); CPU time is the daemon's user +
 * system time over that span, per GiB copied. Prints figures; asserts nothing, except that
 * the cache mode is in effect in both daemons (their descriptors' {@code O_DIRECT} flag).
 *
 * <p>Run: {@code ./build bench-jobs [-Dbench.X=...] [DIR]}. Settings: {@code bench.size} (virtual
 * size of the chain, default {@code 2G}; e.g. {@code 512M} for a quick trial),
 * {@code bench.rounds} (default 3), {@code bench.cache} ({@code on,off}), {@code bench.jobs}
 * ({@code stream,commit,active,mirror,mirror-nbd}), {@code bench.speed} (MiB/s of the speed-limit line, default
 * 100, 0 to skip it), {@code bench.bjJavaOpts} (JVM options for blockjobd, e.g. a JFR
 * recording whose file name holds {@code %p}), {@code bench.threads} ({@code true}: print each
 * run's CPU seconds by thread, user and system, of the daemon and of a mirror's destination: the
 * JIT compiler's share, say), {@code bench.warmup} (N: each daemon first runs the same job N times,
 * untimed, on chains of its own, so the figures are those of a daemon that has run the job before;
 * default 0, a fresh daemon), {@code bench.backup} ({@code yes}: then
 * {@link BackupBench}; {@code no}; {@code only}).
 */
public final class JobBench {
    private static final long GIB = 1L << 30;
    private static final long MIB = 1L << 20;
    private static final Duration JOB_TIMEOUT = Duration.ofMinutes(10);

    /** The jobs compared, and how each is started on the chain base <- mid <- top. */
    enum Job {
        STREAM("stream", "block-stream"),
        COMMIT("commit", "block-commit"),
        ACTIVE("active commit", "block-commit"),
        MIRROR("mirror", "blockdev-mirror"),
        MIRROR_NBD("mirror to nbd", "blockdev-mirror");

        final String label;
        final String command;

        Job(String label, String command) {
            this.label = label;
            this.command = command;
        }

        Map<String, Object> args(long speed) {
            return switch (this) {
                case STREAM -> QmpArgs.map("job-id", "j", "device", "top", "base-node", "base", "speed", speed);
                case COMMIT -> QmpArgs.map("job-id", "j", "device", "top", "top-node", "mid", "speed", speed);
                case ACTIVE -> QmpArgs.map("job-id", "j", "device", "top", "base-node", "base", "speed", speed);
                case MIRROR, MIRROR_NBD -> QmpArgs.map("job-id", "j", "device", "top", "target", "tgt", "sync", "full", "speed", speed);
            };
        }

        /** The layer the job writes (whose descriptors and page cache tell its mode). */
        String target() {
            return switch (this) {
                case STREAM -> "top";
                case MIRROR, MIRROR_NBD -> "tgt";
                default -> "base";
            };
        }

        /** Whether the job converges and is completed with {@code job-complete}. */
        boolean completes() {
            return this == ACTIVE || this == MIRROR || this == MIRROR_NBD;
        }
    }

    /** One run: throughput, CPU per GiB, and what the check of the cache mode found. */
    record Run(double mibPerSec, double cpuPerGib, int descriptors, int direct, long cachedBytes, double switchMs,
               double dstCpuPerGib) {
    }

    private final Path dir;
    private final String blockjobd;
    private final long size;
    private final long copied;
    private final Map<String, String> bjEnv;

    private JobBench(Path dir, String blockjobd, long size, Map<String, String> bjEnv) {
        this.dir = dir;
        this.blockjobd = blockjobd;
        this.size = size;
        this.copied = size / 8 * 3; // mid's data: what each of the three jobs copies
        this.bjEnv = bjEnv;
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-job-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        long size = parseSize(System.getProperty("bench.size", "2G"));
        int rounds = Integer.getInteger("bench.rounds", 3);
        List<Boolean> modes = Arrays.stream(System.getProperty("bench.cache", "on,off").split(","))
                .map(m -> switch (m.trim()) {
                    case "on" -> true;
                    case "off" -> false;
                    default -> throw new IllegalArgumentException("bench.cache: on, off or on,off; not " + m);
                }).toList();
        List<Job> jobs = Arrays.stream(System.getProperty("bench.jobs", "stream,commit,active,mirror,mirror-nbd").split(","))
                .map(j -> Job.valueOf(j.trim().toUpperCase(Locale.ROOT).replace('-', '_'))).toList();
        long speedMib = Long.getLong("bench.speed", 100);
        String opts = System.getProperty("bench.bjJavaOpts", "");
        Map<String, String> env = opts.isBlank() ? Map.of() : Map.of("BLOCKJOBS_JAVA_OPTS", opts);
        String backup = System.getProperty("bench.backup", "yes"); // yes, no, only (BackupBench)
        if (backup.equals("only")) {
            BackupBench.run(dir.resolve("backup"));
            return;
        }
        JobBench bench = new JobBench(dir, blockjobd, size, env);
        System.out.printf(Locale.ROOT, "qcow2 chain base <- mid <- top of %s (base: data in the first half; mid: %s "
                        + "of data from 3/8; top: empty); each job copies %s. Files in %s%n",
                human(size), human(bench.copied), human(bench.copied), dir);
        System.out.printf(Locale.ROOT, "%d rounds, interleaved (blockjobd, qsd, ...), a fresh chain per run, "
                + "synced and dropped from the page cache before the daemon starts.%n", rounds);
        int warmups = Integer.getInteger("bench.warmup", 0);
        if (warmups > 0) {
            System.out.printf(Locale.ROOT, "Warm daemons: each runs the job %d time(s), untimed, on chains of its own "
                    + "before the timed run (the speed-limited stream excepted).%n", warmups);
        }
        for (boolean direct : modes) {
            bench.mode(direct, jobs, rounds, speedMib);
        }
        System.out.println("MiB/s: data copied over the time from the job command to BLOCK_JOB_COMPLETED (the job's "
                + "flush, and an active commit's or a mirror's job-complete, included; mirror copies base's half and "
                + "mid's data, 3/4 of the size).");
        System.out.println("CPU s/GiB: the (source) daemon's user + system time over that span, per GiB copied. "
                + "Cells: median [min-max] of the rounds; ratios: of the medians [min-max of each round's].");
        if (!backup.equals("no")) {
            BackupBench.run(dir.resolve("backup"));
        }
    }

    private void mode(boolean direct, List<Job> jobs, int rounds, long speedMib) throws Exception {
        Map<Job, List<Run>> ours = new EnumMap<>(Job.class);
        Map<Job, List<Run>> theirs = new EnumMap<>(Job.class);
        List<Run> oursLimited = new ArrayList<>();
        List<Run> theirsLimited = new ArrayList<>();
        for (int r = 0; r < rounds; r++) {
            for (Job job : jobs) {
                ours.computeIfAbsent(job, j -> new ArrayList<>()).add(run(blockjobd, job, direct, 0));
                theirs.computeIfAbsent(job, j -> new ArrayList<>()).add(run("qemu-storage-daemon", job, direct, 0));
            }
            if (speedMib > 0) {
                oursLimited.add(run(blockjobd, Job.STREAM, direct, speedMib * MIB));
                theirsLimited.add(run("qemu-storage-daemon", Job.STREAM, direct, speedMib * MIB));
            }
        }
        System.out.println();
        System.out.printf(Locale.ROOT, "cache.direct=%s on every layer of both daemons%n", direct ? "on" : "off");
        System.out.printf(Locale.ROOT, "%-14s %-22s %-22s %-18s %-20s %-20s %-18s%n", "job", "blockjobd MiB/s",
                "qsd MiB/s", "ratio", "bj CPU s/GiB", "qsd CPU s/GiB", "CPU ratio");
        for (Job job : jobs) {
            List<Run> a = ours.get(job);
            List<Run> b = theirs.get(job);
            System.out.printf(Locale.ROOT, "%-14s %-22s %-22s %-18s %-20s %-20s %-18s%n", job.label,
                    cell(a, Run::mibPerSec, 1), cell(b, Run::mibPerSec, 1), ratio(a, b, Run::mibPerSec),
                    cell(a, Run::cpuPerGib, 2), cell(b, Run::cpuPerGib, 2), ratio(a, b, Run::cpuPerGib));
        }
        if (jobs.contains(Job.MIRROR_NBD)) {
            System.out.printf(Locale.ROOT, "mirror to nbd, the destination daemon's CPU s/GiB: blockjobd %s, qsd %s%n",
                    cell(ours.get(Job.MIRROR_NBD), Run::dstCpuPerGib, 2),
                    cell(theirs.get(Job.MIRROR_NBD), Run::dstCpuPerGib, 2));
        }
        for (Job job : jobs) {
            if (job.completes()) {
                System.out.printf(Locale.ROOT, "%s, job-complete to BLOCK_JOB_COMPLETED (ms): blockjobd %s, qsd %s%n",
                        job.label, cell(ours.get(job), Run::switchMs, 1), cell(theirs.get(job), Run::switchMs, 1));
            }
        }
        if (speedMib > 0) {
            double ourRate = median(oursLimited, Run::mibPerSec);
            double theirRate = median(theirsLimited, Run::mibPerSec);
            System.out.printf(Locale.ROOT, "stream at speed %d MiB/s: blockjobd %s MiB/s (off by %+.1f%%), "
                            + "qsd %s MiB/s (off by %+.1f%%)%n", speedMib,
                    cell(oursLimited, Run::mibPerSec, 1), 100 * (ourRate - speedMib) / speedMib,
                    cell(theirsLimited, Run::mibPerSec, 1), 100 * (theirRate - speedMib) / speedMib);
        }
        List<Run> allOurs = ours.values().stream().flatMap(List::stream).toList();
        List<Run> allTheirs = theirs.values().stream().flatMap(List::stream).toList();
        System.out.printf(Locale.ROOT, "mode check: descriptors of the written layer with O_DIRECT: blockjobd %s, qsd %s; "
                        + "its pages in the page cache after the job: blockjobd at most %s, qsd at most %s%n",
                directCount(allOurs), directCount(allTheirs),
                human(allOurs.stream().mapToLong(Run::cachedBytes).max().orElse(0)),
                human(allTheirs.stream().mapToLong(Run::cachedBytes).max().orElse(0)));
    }

    /**
     * Makes a fresh chain, runs {@code job} in {@code daemon} on it, and measures. With
     * {@code bench.warmup} N, the same daemon first runs the job N times, untimed, on chains of its
     * own (nodes {@code w0-top}, ...): the figures of a daemon that has run before, JIT-compiled.
     */
    private Run run(String daemon, Job job, boolean direct, long speed) throws Exception {
        boolean qsd = daemon.endsWith("qemu-storage-daemon");
        Path runDir = dir.resolve(qsd ? "qsd" : "bj");
        int warmups = speed > 0 ? 0 : Integer.getInteger("bench.warmup", 0);
        Map<String, Path> files = new java.util.HashMap<>(makeChain(runDir, ""));
        Path qmp = runDir.resolve("qmp.sock");
        Files.deleteIfExists(qmp);
        String cache = ",cache.direct=" + (direct ? "on" : "off");
        List<String> prefixes = new ArrayList<>();
        for (int w = 0; w < warmups; w++) {
            prefixes.add("w" + w + "-");
        }
        prefixes.add("");
        List<String> args = new ArrayList<>(List.of(
                "--chardev", "socket,id=m,path=" + qmp + ",server=on,wait=off", "--monitor", "m"));
        List<String> dstArgs = new ArrayList<>();
        Path dstDir = runDir.resolve("dst");
        Path nbd = dstDir.resolve("nbd.sock");
        for (String p : prefixes) {
            Map<String, Path> chain = p.isEmpty() ? files : makeChain(runDir, p);
            args.addAll(List.of(
                    "--blockdev", "driver=qcow2,node-name=" + p + "base,file.driver=file,file.filename=" + chain.get("base") + cache,
                    "--blockdev", "driver=qcow2,node-name=" + p + "mid,backing=" + p + "base,file.driver=file,file.filename="
                            + chain.get("mid") + cache,
                    "--blockdev", "driver=qcow2,node-name=" + p + "top,backing=" + p + "mid,file.driver=file,file.filename="
                            + chain.get("top") + cache));
            if (job == Job.MIRROR || job == Job.MIRROR_NBD) { // a fresh image of the chain's size, as blockdev-mirror's users make one
                Path tgt = runDir.resolve(p + "tgt.qcow2");
                Files.deleteIfExists(tgt);
                Qemu.img("create", "-q", "-f", "qcow2", tgt.toString(), String.valueOf(size));
                String node = "driver=qcow2,node-name=" + p + "tgt,file.driver=file,file.filename=" + tgt + cache;
                if (job == Job.MIRROR) {
                    if (p.isEmpty()) {
                        files.put("tgt", tgt);
                    }
                    args.addAll(List.of("--blockdev", node));
                } else {
                    dstArgs.addAll(List.of("--blockdev", node,
                            "--export", "type=nbd,id=" + p + "tgt,node-name=" + p + "tgt,name=" + p + "tgt,writable=on"));
                    args.addAll(List.of("--blockdev", "driver=nbd,node-name=" + p + "tgt,server.type=unix,server.path=" + nbd
                            + ",export=" + p + "tgt"));
                }
            }
        }
        BenchDaemon dst = null; // mirror to nbd: a second daemon of the same kind exports the target
        if (job == Job.MIRROR_NBD) {
            Files.createDirectories(dstDir);
            Files.deleteIfExists(nbd);
            dstArgs.addAll(0, List.of("--nbd-server", "addr.type=unix,addr.path=" + nbd));
            dst = BenchDaemon.start(daemon, dstArgs, dstDir, qsd ? Map.of() : bjEnv);
        }
        long bytes = job == Job.MIRROR || job == Job.MIRROR_NBD ? size / 4 * 3 : copied; // mirror copies base's half and mid's
        try (BenchDaemon destination = dst;
             BenchDaemon d = BenchDaemon.start(daemon, args, runDir, qsd ? Map.of() : bjEnv);
             QmpClient c = QmpClient.connect(qmp)) {
            BenchDaemon writer = dst != null ? dst : d; // the daemon that writes the target image
            for (Path f : files.values()) {
                checkMode(d, f, direct, daemon);
            }
            for (String p : prefixes.subList(0, warmups)) {
                runJob(c, job, p, speed);
            }
            Path target = job == Job.MIRROR_NBD ? runDir.resolve("tgt.qcow2") : files.get(job.target());
            double dstCpu0 = dst != null ? dst.cpuSeconds() : 0;
            Map<String, Double> threads0 = d.threadCpuSeconds();
            long[] io0 = d.ioBytes();
            Map<String, Double> dstThreads0 = dst != null ? dst.threadCpuSeconds() : Map.of();
            double cpu0 = d.cpuSeconds();
            long start = System.nanoTime();
            JobTimes times = runJob(c, job, "", speed);
            double seconds = (times.completed() - start) / 1e9;
            double switchMs = times.completeSent() == 0 ? 0 : (times.completed() - times.completeSent()) / 1e6;
            double cpu = d.cpuSeconds() - cpu0;
            if (Boolean.getBoolean("bench.threads")) {
                printThreads(daemon + " " + job.label, threads0, d.threadCpuSeconds());
                long[] io = d.ioBytes();
                System.out.printf(Locale.ROOT, "  system calls read %s, wrote %s%n", human(io[0] - io0[0]),
                        human(io[1] - io0[1]));
                if (dst != null) {
                    printThreads(daemon + " " + job.label + " (destination)", dstThreads0, dst.threadCpuSeconds());
                }
            }
            double dstCpu = dst != null ? dst.cpuSeconds() - dstCpu0 : 0;
            // The written layer, after the job: its descriptors (the top is reopened read-write by
            // a stream) must still have the mode, and its pages tell whether the writes went round
            // the page cache.
            List<BenchDaemon.Descriptor> fds = checkMode(writer, target, direct, daemon);
            int directFds = (int) fds.stream().filter(BenchDaemon.Descriptor::direct).count();
            return new Run(bytes / (double) MIB / seconds, cpu / (bytes / (double) GIB),
                    fds.size(), directFds, cachedBytes(target), switchMs, dstCpu / (bytes / (double) GIB));
        }
    }

    /** When a job's {@code job-complete} was sent (0 if it needs none) and its BLOCK_JOB_COMPLETED came, in nanoTime. */
    private record JobTimes(long completeSent, long completed) {
    }

    /**
     * Runs {@code job} on the chain of nodes named with {@code prefix} (job id {@code PREFIXj}) to
     * its {@code BLOCK_JOB_COMPLETED}; throws if it failed.
     */
    private JobTimes runJob(QmpClient c, Job job, String prefix, long speed) throws Exception {
        String id = prefix + "j";
        Map<String, Object> args = new java.util.LinkedHashMap<>();
        job.args(speed).forEach((k, v) -> args.put(k, v instanceof String s && !k.equals("sync") ? prefix + s : v));
        c.ok(job.command, args);
        long completeAt = 0;
        if (job.completes()) {
            c.awaitEvent("BLOCK_JOB_READY", x -> x.path("device").asString().equals(id), JOB_TIMEOUT);
            completeAt = System.nanoTime();
            c.ok("job-complete", QmpArgs.map("id", id));
        }
        JsonNode done = c.awaitEvent("BLOCK_JOB_COMPLETED", x -> x.path("device").asString().equals(id), JOB_TIMEOUT);
        long completed = System.nanoTime();
        if (done.at("/data/error").isString()) {
            throw new IllegalStateException(job.label + " " + id + " failed: " + done);
        }
        return new JobTimes(completeAt, completed);
    }

    /** The threads that used most CPU between two readings, a line for the source daemon of a run. */
    private static void printThreads(String what, Map<String, Double> before, Map<String, Double> after) {
        StringBuilder line = new StringBuilder("threads' CPU s, " + what + ":");
        after.entrySet().stream()
                .map(e -> Map.entry(e.getKey(), e.getValue() - before.getOrDefault(e.getKey(), 0.0)))
                .filter(e -> e.getValue() >= 0.02)
                .sorted(Map.Entry.<String, Double>comparingByValue().reversed())
                .forEach(e -> line.append(String.format(Locale.ROOT, " %s %.2f;", e.getKey(), e.getValue())));
        System.out.println(line);
    }

    /**
     * Checks that {@code daemon} has {@code file} open with {@code O_DIRECT} if {@code direct},
     * and never with it otherwise. blockjobd also holds a buffered descriptor per file for its
     * locks (closing any descriptor would drop them), so at least one must be direct.
     */
    private static List<BenchDaemon.Descriptor> checkMode(BenchDaemon d, Path file, boolean direct, String daemon)
            throws IOException {
        List<BenchDaemon.Descriptor> fds = d.descriptorsOf(file);
        boolean anyDirect = fds.stream().anyMatch(BenchDaemon.Descriptor::direct);
        if (fds.isEmpty() || anyDirect != direct) {
            throw new IllegalStateException(daemon + " does not have " + file + " open with cache.direct="
                    + (direct ? "on" : "off") + ": " + fds);
        }
        return fds;
    }

    /** A fresh chain base <- mid <- top in {@code runDir}, made identically each time, out of the page cache. */
    private Map<String, Path> makeChain(Path runDir, String prefix) throws IOException {
        Files.createDirectories(runDir);
        Path base = runDir.resolve(prefix + "base.qcow2");
        Path mid = runDir.resolve(prefix + "mid.qcow2");
        Path top = runDir.resolve(prefix + "top.qcow2");
        for (Path p : List.of(base, mid, top)) {
            Files.deleteIfExists(p);
        }
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), String.valueOf(size));
        writePattern(base, 0x11, 0, size / 2);
        Qemu.img("create", "-q", "-f", "qcow2", "-b", base.getFileName().toString(), "-F", "qcow2", mid.toString());
        writePattern(mid, 0x22, size / 8 * 3, copied);
        Qemu.img("create", "-q", "-f", "qcow2", "-b", mid.getFileName().toString(), "-F", "qcow2", top.toString());
        for (Path p : List.of(base, mid, top)) {
            Qemu.run("sync", p.toString()).ok(); // fsync: nothing left to write back during the job
            Qemu.run("dd", "if=" + p, "iflag=nocache", "count=0", "status=none").ok(); // drop its cached pages
        }
        return Map.of("base", base, "mid", mid, "top", top);
    }

    /** Writes {@code pattern} over {@code [offset, offset + length)}, at most 1 GiB per qemu-io request. */
    private static void writePattern(Path image, int pattern, long offset, long length) {
        List<String> cmds = new ArrayList<>();
        for (long pos = offset; pos < offset + length; pos += GIB) {
            cmds.add(String.format(Locale.ROOT, "write -P 0x%x %d %d", pattern, pos, Math.min(GIB, offset + length - pos)));
        }
        Qemu.io(image, "qcow2", cmds.toArray(String[]::new));
    }

    /** Bytes of {@code file} in the page cache ({@code fincore}). */
    private static long cachedBytes(Path file) {
        Qemu.Result r = Qemu.run("fincore", "--bytes", "--noheadings", "--output", "RES", file.toString());
        return r.exit() == 0 ? Long.parseLong(r.out().trim()) : -1;
    }

    private static String directCount(List<Run> runs) {
        int fds = runs.stream().mapToInt(Run::descriptors).max().orElse(0);
        int direct = runs.stream().mapToInt(Run::direct).min().orElse(0);
        int maxDirect = runs.stream().mapToInt(Run::direct).max().orElse(0);
        return (direct == maxDirect ? String.valueOf(direct) : direct + "-" + maxDirect) + " of " + fds;
    }

    private static String cell(List<Run> runs, java.util.function.ToDoubleFunction<Run> f, int digits) {
        double[] v = runs.stream().mapToDouble(f).sorted().toArray();
        String fmt = "%." + digits + "f [%." + digits + "f-%." + digits + "f]";
        return String.format(Locale.ROOT, fmt, median(v), v[0], v[v.length - 1]);
    }

    /** Ratio of the medians, and the spread of the ratios of the runs of each round. */
    private static String ratio(List<Run> a, List<Run> b, java.util.function.ToDoubleFunction<Run> f) {
        double[] perRound = new double[a.size()];
        for (int i = 0; i < a.size(); i++) {
            perRound[i] = f.applyAsDouble(a.get(i)) / f.applyAsDouble(b.get(i));
        }
        Arrays.sort(perRound);
        return String.format(Locale.ROOT, "%.2f [%.2f-%.2f]", median(a, f) / median(b, f),
                perRound[0], perRound[perRound.length - 1]);
    }

    private static double median(List<Run> runs, java.util.function.ToDoubleFunction<Run> f) {
        return median(runs.stream().mapToDouble(f).sorted().toArray());
    }

    private static double median(double[] sorted) {
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static long parseSize(String s) {
        String t = s.trim().toUpperCase(Locale.ROOT);
        long unit = switch (t.charAt(t.length() - 1)) {
            case 'K' -> 1L << 10;
            case 'M' -> 1L << 20;
            case 'G' -> 1L << 30;
            default -> 1;
        };
        String digits = unit == 1 ? t : t.substring(0, t.length() - 1);
        long size = Long.parseLong(digits) * unit;
        if (size < 64 * MIB || size % (8 * MIB) != 0) {
            throw new IllegalArgumentException("bench.size must be a multiple of 8 MiB, at least 64 MiB: " + s);
        }
        return size;
    }

    private static String human(long bytes) {
        if (bytes >= GIB && bytes % (GIB / 4) == 0) {
            return String.format(Locale.ROOT, "%.2f GiB", bytes / (double) GIB).replace(".00 ", " ");
        }
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (double) MIB).replace(".0 ", " ");
    }
}
