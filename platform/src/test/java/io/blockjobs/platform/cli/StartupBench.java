package io.blockjobs.platform.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * Start-up time of blockjobd beside qemu-storage-daemon, as a failover or crash recovery meets
 * it: from the process's start to the QMP greeting on a client-mode monitor (the benchmark
 * listens and the daemon connects, as QEMU's harnesses do), with a qcow2 node and an NBD export
 * on the command line; and the peak resident memory ({@code VmHWM}) at that moment. Each daemon
 * is started several times in turn. Prints figures; asserts nothing.
 *
 * <p>Run: {@code ./build bench-startup [-Dbench.starts=5] [-Dbench.javaOpts='A|B'] [DIR]}; each
 * {@code bench.javaOpts} set (separated by {@code |}) is passed as {@code BLOCKJOBS_JAVA_OPTS}, but
 * for its {@code BLOCKJOBS_NAME=VALUE} words, set in the environment ({@code BLOCKJOBS_AOT=off}
 * measures a start without the ahead-of-time cache).
 */
public final class StartupBench {
    private StartupBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-startup-bench-");
        Files.createDirectories(dir);
        String blockjobd = System.getProperty("blockjobs.dist", "platform/target/blockjobs") + "/bin/blockjobd";
        int starts = Integer.getInteger("bench.starts", 5);
        List<String> variants = List.of(System.getProperty("bench.javaOpts", "").split("\\|", -1));
        Path image = dir.resolve("disk.qcow2");
        run(List.of("qemu-img", "create", "-q", "-f", "qcow2", image.toString(), "1G"));
        System.out.printf(Locale.ROOT, "start to QMP greeting, qcow2 node + NBD export; %d starts each, in turn; files in %s%n",
                starts, dir);
        List<String> labels = new ArrayList<>();
        List<List<double[]>> results = new ArrayList<>();
        for (String v : variants) {
            labels.add(v.isBlank() ? "blockjobd" : "blockjobd " + v.strip());
            results.add(new ArrayList<>());
        }
        labels.add("qemu-storage-daemon");
        results.add(new ArrayList<>());
        for (int i = 0; i < starts; i++) { // interleaved, so a noisy moment hits every daemon alike
            for (int v = 0; v < labels.size(); v++) {
                boolean qsd = v == variants.size();
                results.get(v).add(once(qsd ? "qemu-storage-daemon" : blockjobd, qsd ? "" : variants.get(v).strip(), image));
            }
        }
        System.out.printf(Locale.ROOT, "%-60s %10s %10s %10s %14s%n", "daemon", "min s", "median s", "max s", "peak RSS MiB");
        for (int v = 0; v < labels.size(); v++) {
            List<double[]> r = results.get(v);
            double[] t = r.stream().mapToDouble(x -> x[0]).sorted().toArray();
            double rss = r.stream().mapToDouble(x -> x[1]).max().orElse(0);
            System.out.printf(Locale.ROOT, "%-60s %10.3f %10.3f %10.3f %14.1f%n", labels.get(v), t[0], t[t.length / 2],
                    t[t.length - 1], rss);
        }
        Files.deleteIfExists(image);
    }

    /** Seconds from start to greeting, and VmHWM in MiB then. */
    private static double[] once(String daemon, String javaOpts, Path image) throws Exception {
        Path monitor = image.resolveSibling("startup.qmp");
        Path nbd = image.resolveSibling("startup.nbd");
        Files.deleteIfExists(monitor);
        Files.deleteIfExists(nbd);
        try (ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            listener.bind(UnixDomainSocketAddress.of(monitor));
            ProcessBuilder pb = new ProcessBuilder(daemon,
                    "--blockdev", "driver=file,node-name=f,filename=" + image,
                    "--blockdev", "driver=qcow2,node-name=disk,file=f",
                    "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                    "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on",
                    "--chardev", "socket,id=m,path=" + monitor, "--monitor", "chardev=m")
                    .redirectErrorStream(true).redirectOutput(image.resolveSibling("startup.log").toFile());
            StringBuilder opts = new StringBuilder();
            for (String word : javaOpts.split("\\s+")) {
                if (word.startsWith("BLOCKJOBS_") && word.contains("=")) { // BLOCKJOBS_AOT=off, say
                    pb.environment().put(word.substring(0, word.indexOf('=')), word.substring(word.indexOf('=') + 1));
                } else if (!word.isEmpty()) {
                    opts.append(opts.isEmpty() ? "" : " ").append(word);
                }
            }
            if (!opts.isEmpty()) {
                pb.environment().put("BLOCKJOBS_JAVA_OPTS", opts.toString());
            }
            long t0 = System.nanoTime();
            Process p = pb.start();
            try (SocketChannel ch = listener.accept()) {
                BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
                String greeting = in.readLine();
                double seconds = (System.nanoTime() - t0) / 1e9;
                if (greeting == null || !greeting.contains("\"QMP\"")) {
                    throw new IOException(daemon + " sent no greeting: " + greeting);
                }
                double hwm = peakMiB(p.pid());
                var out = Channels.newOutputStream(ch);
                out.write("{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n".getBytes(StandardCharsets.UTF_8));
                out.flush();
                if (!p.waitFor(30, TimeUnit.SECONDS)) {
                    throw new IOException(daemon + " did not quit");
                }
                return new double[] {seconds, hwm};
            } finally {
                p.destroyForcibly();
            }
        }
    }

    private static double peakMiB(long pid) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("\\D", "")) / 1024.0;
            }
        }
        return 0;
    }

    private static void run(List<String> command) throws Exception {
        Process p = new ProcessBuilder(command).inheritIO().start();
        if (p.waitFor() != 0) {
            throw new IOException(command + " failed");
        }
    }
}
