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
 * raw file), then writes again with one and with eight enabled dirty bitmaps on the exported
 * node (each daemon against itself without bitmaps), and the heap a bitmap of a fully dirty
 * 1 TiB disk takes. Prints figures; asserts nothing. Run: {@code ./build bench-nbd [DIR]}.
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
        double[] a = measure(blockjobd, ours, dir.resolve("bj.sock"), source, 0);
        double[] b = measure("qemu-storage-daemon", theirs, dir.resolve("qsd.sock"), source, 0);
        String[] names = {"sequential read", "sequential write"};
        for (int i = 0; i < 2; i++) {
            System.out.printf(Locale.ROOT, "%-22s %12.1f %12.1f %8.2f%n", names[i], a[i], b[i], a[i] / b[i]);
        }
        for (int n : new int[] {1, 8}) {
            double bj = measure(blockjobd, ours, dir.resolve("bj.sock"), source, n)[1];
            double qsd = measure("qemu-storage-daemon", theirs, dir.resolve("qsd.sock"), source, n)[1];
            System.out.printf(Locale.ROOT, "%-22s %12.1f %12.1f %8.2f   (with/without: blockjobd %.2f, qsd %.2f)%n",
                    "write, " + n + " bitmap" + (n > 1 ? "s" : ""), bj, qsd, bj / qsd, bj / a[1], qsd / b[1]);
        }
        System.out.println("MiB/s, best of 3 runs each.");
        io.blockjobs.platform.bitmap.NodeBitmaps node = io.blockjobs.platform.bitmap.NodeBitmaps.forBenchmark("tib");
        io.blockjobs.platform.bitmap.Bitmap all = node.create("all", 16, 1L << 40);
        for (long off = 0; off < 1L << 40; off += 1L << 16) { // marked 64 KiB at a time, as writes mark it
            node.after(new io.blockjobs.sdk.block.WriteRequest(io.blockjobs.sdk.block.WriteRequest.Kind.WRITE, off, 1 << 16,
                    java.util.Set.of()), true);
        }
        System.out.printf(Locale.ROOT, "heap of one bitmap of a fully dirty 1 TiB disk at 64 KiB granularity: %.1f KiB%n",
                all.sizeInBytes() / 1024.0);
        for (Path p : List.of(source, ours, theirs)) {
            Files.deleteIfExists(p);
        }
    }

    /**
     * Starts a daemon exporting {@code image} with {@code bitmaps} enabled dirty bitmaps on the
     * node; returns read MiB/s (without bitmaps only) and write MiB/s.
     */
    private static double[] measure(String daemon, Path image, Path socket, Path source, int bitmaps) throws Exception {
        Path monitor = image.resolveSibling(socket.getFileName() + ".qmp");
        Files.deleteIfExists(monitor);
        List<String> args = List.of("--blockdev", "driver=file,node-name=f,filename=" + image,
                "--blockdev", "driver=qcow2,node-name=disk,file=f",
                "--chardev", "socket,id=m,path=" + monitor + ",server=on,wait=off", "--monitor", "chardev=m",
                "--nbd-server", "addr.type=unix,addr.path=" + socket,
                "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on");
        try (BenchDaemon d = BenchDaemon.start(daemon, args, image.getParent());
             io.blockjobs.platform.testkit.QmpClient qmp = io.blockjobs.platform.testkit.QmpClient.connect(monitor)) {
            for (int i = 0; i < bitmaps; i++) {
                qmp.ok("block-dirty-bitmap-add", java.util.Map.of("node", "disk", "name", "b" + i));
            }
            String uri = "nbd+unix:///disk?socket=" + socket;
            double read = 0;
            double write = 0;
            for (int run = 0; run < 3; run++) {
                if (bitmaps == 0) {
                    read = Math.max(read, timed("nbdcopy", uri, "null:"));
                }
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
