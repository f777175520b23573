package io.blockjobs.platform.job;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpArgs;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * Stream and commit of a 2 GiB chain, blockjobd beside qemu-storage-daemon on identical copies
 * in the same run: throughput and ratio at speed 0, and how closely a speed limit is kept.
 * Prints figures; asserts nothing. Run: {@code ./build bench-jobs [DIR]}.
 */
public final class JobBench {
    private static final long GIB = 1L << 30;
    private static final long MIB = 1L << 20;

    private JobBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-job-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        System.out.printf(Locale.ROOT, "2 GiB qcow2 chains (base 1 GiB of data, mid 768 MiB), files in %s%n", dir);
        System.out.printf(Locale.ROOT, "%-30s %12s %12s %8s%n", "job", "blockjobd", "qsd", "ratio");
        for (String job : List.of("block-stream", "block-commit")) {
            double ours = run(blockjobd, dir.resolve("bj"), job, 0);
            double theirs = run("qemu-storage-daemon", dir.resolve("qsd"), job, 0);
            System.out.printf(Locale.ROOT, "%-30s %12.1f %12.1f %8.2f%n", job + " (MiB/s)", ours, theirs, ours / theirs);
        }
        long limit = 100 * MIB;
        double ours = run(blockjobd, dir.resolve("bj"), "block-stream", limit);
        double theirs = run("qemu-storage-daemon", dir.resolve("qsd"), "block-stream", limit);
        System.out.printf(Locale.ROOT, "%-30s %11.1f%% %11.1f%%%n", "stream at speed 100 MiB/s: off by",
                100 * (ours - 100) / 100, 100 * (theirs - 100) / 100);
        System.out.println("MiB/s of data copied (the layers' allocated bytes), over the job's whole run.");
    }

    /** Makes a fresh chain in {@code dir}, runs {@code job} in a daemon, returns MiB/s of data copied. */
    private static double run(String daemon, Path dir, String job, long speed) throws Exception {
        Files.createDirectories(dir);
        Path base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        Path top = dir.resolve("top.qcow2");
        for (Path p : List.of(base, mid, top)) {
            Files.deleteIfExists(p);
        }
        Qemu.img("create", "-q", "-f", "qcow2", base.toString(), String.valueOf(2 * GIB));
        Qemu.io(base, "qcow2", "write -P 0x11 0 1G");
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid.toString());
        Qemu.io(mid, "qcow2", "write -P 0x22 768M 768M");
        Qemu.img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top.toString());
        Path qmp = dir.resolve("qmp.sock");
        List<String> args = List.of(
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + base,
                "--blockdev", "driver=qcow2,node-name=mid,backing=base,file.driver=file,file.filename=" + mid,
                "--blockdev", "driver=qcow2,node-name=top,backing=mid,file.driver=file,file.filename=" + top,
                "--chardev", "socket,id=m,path=" + qmp + ",server=on,wait=off", "--monitor", "m");
        try (BenchDaemon d = BenchDaemon.start(daemon, args, dir); QmpClient c = QmpClient.connect(qmp)) {
            Map<String, Object> jobArgs = job.equals("block-stream")
                    ? QmpArgs.map("job-id", "j", "device", "top", "base-node", "base", "speed", speed)
                    : QmpArgs.map("job-id", "j", "device", "top", "top-node", "mid", "speed", speed);
            long start = System.nanoTime();
            c.ok(job, jobArgs);
            JsonNode done = c.awaitEvent("BLOCK_JOB_COMPLETED", x -> true);
            double seconds = (System.nanoTime() - start) / 1e9;
            if (done.at("/data/error").isString()) {
                throw new IllegalStateException(job + " failed: " + done);
            }
            return 768 / seconds;
        }
    }

}
