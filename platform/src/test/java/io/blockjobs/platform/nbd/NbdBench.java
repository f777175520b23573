package io.blockjobs.platform.nbd;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import io.blockjobs.platform.testkit.BenchDaemon;
import java.util.List;
import java.util.Locale;

/**
 * NBD throughput of blockjobd beside qemu-storage-daemon exporting identical copies of one
 * qcow2 image, measured with nbdcopy (sequential read to {@code null:}, sequential write from a
 * raw file). Prints figures; asserts nothing. Run: {@code ./build bench-nbd [DIR]}.
 */
public final class NbdBench {
    private static final long SIZE = 1L << 30;

    private NbdBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-nbd-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        Path source = dir.resolve("source.raw");
        Path ours = dir.resolve("blockjobs.qcow2");
        Path theirs = dir.resolve("qsd.qcow2");
        exec("qemu-img", "create", "-q", "-f", "raw", source.toString(), String.valueOf(SIZE));
        exec("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 " + SIZE, source.toString());
        for (Path p : List.of(ours, theirs)) {
            exec("qemu-img", "convert", "-f", "raw", "-O", "qcow2", source.toString(), p.toString());
        }
        System.out.printf(Locale.ROOT, "NBD over a unix socket, 1 GiB qcow2 export, nbdcopy, files in %s%n", dir);
        System.out.printf(Locale.ROOT, "%-22s %12s %12s %8s%n", "test", "blockjobd", "qsd", "ratio");
        double[] a = measure(blockjobd, ours, dir.resolve("bj.sock"), source);
        double[] b = measure("qemu-storage-daemon", theirs, dir.resolve("qsd.sock"), source);
        String[] names = {"sequential read", "sequential write"};
        for (int i = 0; i < 2; i++) {
            System.out.printf(Locale.ROOT, "%-22s %12.1f %12.1f %8.2f%n", names[i], a[i], b[i], a[i] / b[i]);
        }
        System.out.println("MiB/s, best of 3 runs each.");
        for (Path p : List.of(source, ours, theirs)) {
            Files.deleteIfExists(p);
        }
    }

    /** Starts a daemon exporting {@code image}; returns read and write MiB/s. */
    private static double[] measure(String daemon, Path image, Path socket, Path source) throws Exception {
        List<String> args = List.of("--blockdev", "driver=file,node-name=f,filename=" + image,
                "--blockdev", "driver=qcow2,node-name=disk,file=f",
                "--nbd-server", "addr.type=unix,addr.path=" + socket,
                "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on");
        try (BenchDaemon d = BenchDaemon.start(daemon, args, image.getParent())) {
            String uri = "nbd+unix:///disk?socket=" + socket;
            double read = 0;
            double write = 0;
            for (int run = 0; run < 3; run++) {
                read = Math.max(read, timed("nbdcopy", uri, "null:"));
                write = Math.max(write, timed("nbdcopy", source.toString(), uri));
            }
            return new double[] {read, write};
        }
    }

    private static double timed(String... cmd) throws Exception {
        long start = System.nanoTime();
        exec(cmd);
        return SIZE / ((System.nanoTime() - start) / 1e9) / (1 << 20);
    }

    private static void exec(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        StringBuilder out = new StringBuilder();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream()))) {
            r.lines().forEach(l -> out.append(l).append('\n'));
        }
        if (p.waitFor() != 0) {
            throw new IOException(String.join(" ", cmd) + " failed: " + out);
        }
    }
}
