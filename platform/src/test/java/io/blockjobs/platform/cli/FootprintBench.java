package io.blockjobs.platform.cli;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The idle footprint of blockjobd, with every plugin of the distribution loaded, beside
 * qemu-storage-daemon set up the same way (a 1 GiB qcow2 node, a QMP monitor, an NBD server and
 * a writable export): resident memory ({@code VmRSS} of {@code /proc/<pid>/status}) once it is
 * ready and has sat idle, and again idle after a client wrote and read 256 MiB through the
 * export; with the CPU time each used while idle. Prints figures; asserts nothing.
 *
 * <p>Run: {@code ./build bench-footprint [-Dbench.idle=10] [-Dbench.javaOpts='A|B'] [DIR]}:
 * {@code bench.idle} is the idle time in seconds; {@code bench.javaOpts} gives JVM option sets
 * (separated by {@code |}) to measure blockjobd with, each passed as {@code BLOCKJOBS_JAVA_OPTS}
 * after the launcher's defaults (an empty set measures the defaults).
 */
public final class FootprintBench {
    private static final long SIZE = 1L << 30;
    private static final long IO = 256L << 20;

    private FootprintBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-footprint-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        int idle = Integer.getInteger("bench.idle", 10);
        List<String> variants = List.of(System.getProperty("bench.javaOpts", "").split("\\|", -1));
        Path image = dir.resolve("disk.qcow2");
        exec("qemu-img", "create", "-q", "-f", "qcow2", image.toString(), String.valueOf(SIZE));
        System.out.printf(Locale.ROOT, "idle footprint, 1 GiB qcow2 node, QMP monitor, NBD export; %d s idle; files in %s%n",
                idle, dir);
        System.out.printf(Locale.ROOT, "%-52s %10s %14s %12s %8s%n", "daemon", "RSS MiB", "after I/O MiB",
                "idle CPU ms", "plugins");
        for (String opts : variants) {
            String label = opts.isBlank() ? "blockjobd" : "blockjobd " + opts.strip();
            report(label, measure(blockjobd, image, idle, opts.strip()));
        }
        report("qemu-storage-daemon", measure("qemu-storage-daemon", image, idle, ""));
        Files.deleteIfExists(image);
    }

    private static void report(String label, double[] m) {
        System.out.printf(Locale.ROOT, "%-52s %10.1f %14.1f %12.0f %8s%n", label, m[0], m[1], m[2],
                m[3] < 0 ? "-" : String.valueOf((int) m[3]));
    }

    /** Resident MiB idle, resident MiB idle after I/O, idle CPU milliseconds, plugins loaded (-1 for QSD). */
    private static double[] measure(String daemon, Path image, int idle, String javaOpts) throws Exception {
        Path monitor = image.resolveSibling("footprint.qmp");
        Path socket = image.resolveSibling("footprint.nbd");
        Files.deleteIfExists(monitor);
        Files.deleteIfExists(socket);
        List<String> args = List.of("--blockdev", "driver=file,node-name=f,filename=" + image,
                "--blockdev", "driver=qcow2,node-name=disk,file=f",
                "--chardev", "socket,id=m,path=" + monitor + ",server=on,wait=off", "--monitor", "chardev=m",
                "--nbd-server", "addr.type=unix,addr.path=" + socket,
                "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on");
        Map<String, String> env = javaOpts.isEmpty() ? Map.of() : Map.of("BLOCKJOBS_JAVA_OPTS", javaOpts);
        try (BenchDaemon d = BenchDaemon.start(daemon, args, image.getParent(), env);
             QmpClient qmp = QmpClient.connect(monitor)) {
            double plugins = daemon.endsWith("qemu-storage-daemon") ? -1 : qmp.ok("query-plugins").size();
            double cpu0 = d.cpuSeconds();
            Thread.sleep(idle * 1000L);
            double cpu = d.cpuSeconds() - cpu0;
            double rss = rssMiB(d.pid());
            String uri = "nbd+unix:///disk?socket=" + socket;
            exec("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 " + IO, "-c", "read -P 0x5a 0 " + IO, uri);
            Thread.sleep(idle * 1000L);
            double after = rssMiB(d.pid());
            qmp.ok("quit");
            return new double[] {rss, after, cpu * 1000, plugins};
        }
    }

    /** {@code VmRSS} of {@code /proc/<pid>/status}, in MiB. */
    static double rssMiB(long pid) throws IOException {
        for (String l : Files.readAllLines(Path.of("/proc", String.valueOf(pid), "status"))) {
            if (l.startsWith("VmRSS:")) {
                return Long.parseLong(l.replaceAll("[^0-9]", "")) / 1024.0;
            }
        }
        throw new IOException("no VmRSS for " + pid);
    }

    private static void exec(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(new ArrayList<>(List.of(cmd))).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IOException(String.join(" ", cmd) + " failed: " + out);
        }
    }
}
