package io.blockjobs.platform.daemon;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Issue 16's benchmark: what COLO block replication costs the primary. Two blockjobd processes in
 * COLO-FT.txt's layout (as {@code ColoPairIT}); beside it the primary alone, its quorum over the
 * local disk only. Printed: the primary's write throughput through its NBD export
 * ({@code qemu-img bench}, 64 KiB writes or {@code bench.block}'s, 16 in flight), the latency of 4 KiB writes one at a time
 * (median, p99), and how long {@code xen-colo-do-checkpoint} takes on the secondary after the
 * primary wrote 64 MiB since the last one. A benchmark prints figures; nothing is asserted.
 *
 * <p>Run: {@code ./build bench-colo [-Dbench.size=256M] [-Dbench.rounds=3] [-Dbench.block=64k] [DIR]}.
 */
public final class ColoBench {
    private static final long MIB = 1 << 20;
    private static final Pattern COMPLETED = Pattern.compile("Run completed in ([0-9.]+) seconds");

    private ColoBench() {
    }

    record Figures(double mibPerSec, double p50Micros, double p99Micros, double checkpointMillis) {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-colo-bench-");
        long size = parse(System.getProperty("bench.size", "256M"));
        int rounds = Integer.getInteger("bench.rounds", 3);
        long block = parse(System.getProperty("bench.block", "64k"));
        System.out.printf(Locale.ROOT, "COLO primary, %d MiB disk, %d KiB writes, %d rounds, interleaved; scratch in %s%n",
                size / MIB, block >> 10, rounds, dir);
        List<Figures> alone = new ArrayList<>();
        List<Figures> replicated = new ArrayList<>();
        for (int r = 0; r < rounds; r++) {
            alone.add(run(Files.createDirectories(dir.resolve("alone-" + r)), size, block, false));
            replicated.add(run(Files.createDirectories(dir.resolve("colo-" + r)), size, block, true));
        }
        System.out.printf(Locale.ROOT, "%-28s %-22s %-22s %-8s%n", "", "primary alone", "with replication", "ratio");
        row("write MiB/s (" + (block >> 10) + "k, depth 16)", alone, replicated, Figures::mibPerSec, 1);
        row("4k write latency p50 us", alone, replicated, Figures::p50Micros, 0);
        row("4k write latency p99 us", alone, replicated, Figures::p99Micros, 0);
        double[] cp = replicated.stream().mapToDouble(Figures::checkpointMillis).sorted().toArray();
        System.out.printf(Locale.ROOT, "checkpoint after 64 MiB written: %.1f ms median [%.1f-%.1f]%n", median(cp),
                cp[0], cp[cp.length - 1]);
        System.out.println("Cells: median [min-max] over the rounds; ratio: with replication over alone.");
    }

    private static Figures run(Path d, long size, long block, boolean replication) throws Exception {
        Path pdir = Files.createDirectories(d.resolve("primary"));
        Path sdir = Files.createDirectories(d.resolve("secondary"));
        Path disk = pdir.resolve("disk0.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", disk.toString(), String.valueOf(size));
        StorageDaemon secondary = null;
        StorageDaemon primary = null;
        try {
            if (replication) {
                Path parent = sdir.resolve("parent0.qcow2");
                Files.copy(disk, parent);
                for (String n : List.of("hidden0", "active0")) {
                    Qemu.img("create", "-q", "-f", "qcow2", sdir.resolve(n + ".qcow2").toString(), String.valueOf(size));
                }
                secondary = StorageDaemon.start(Kind.BLOCKJOBD, sdir, List.of());
                ColoLayout.secondary(secondary.qmp, sdir, parent);
            }
            primary = StorageDaemon.start(Kind.BLOCKJOBD, pdir, List.of());
            ColoLayout.primary(primary.qmp, disk, replication ? sdir.resolve("nbd.sock") : null);
            String uri = primary.nbdUri("colo-disk0");
            double seconds = bench(uri, size / block, block);
            double mibPerSec = size / (double) MIB / seconds;
            double[] lat = latencies(pdir.resolve("nbd.sock"), 2000);
            double checkpoint = Double.NaN;
            if (replication) {
                secondary.qmp.ok("xen-colo-do-checkpoint");
                bench(uri, 64 * MIB / block, block); // 64 MiB the hidden disk must keep
                long t0 = System.nanoTime();
                secondary.qmp.ok("xen-colo-do-checkpoint");
                checkpoint = (System.nanoTime() - t0) / 1e6;
            }
            return new Figures(mibPerSec, lat[lat.length / 2], lat[(int) (lat.length * 0.99)], checkpoint);
        } finally {
            if (primary != null) {
                primary.close();
            }
            if (secondary != null) {
                secondary.close();
            }
        }
    }

    /** {@code qemu-img bench -w}: the seconds it reports for {@code count} writes of {@code block} bytes, 16 in flight. */
    private static double bench(String uri, long count, long block) {
        Qemu.Result r = Qemu.run("qemu-img", "bench", "-w", "-f", "raw", "-d", "16", "-s", String.valueOf(block), "-c",
                String.valueOf(count), "-o", "0", uri).ok();
        Matcher m = COMPLETED.matcher(r.out());
        if (!m.find()) {
            throw new IllegalStateException("qemu-img bench said: " + r.out() + r.err());
        }
        return Double.parseDouble(m.group(1));
    }

    /** Microseconds of {@code n} 4 KiB writes, one at a time, sorted. */
    private static double[] latencies(Path socket, int n) throws Exception {
        double[] out = new double[n];
        byte[] data = new byte[4096];
        Arrays.fill(data, (byte) 0x5a);
        try (RawNbdClient c = RawNbdClient.open(UnixDomainSocketAddress.of(socket), "colo-disk0", true)) {
            for (int i = 0; i < n; i++) {
                long t0 = System.nanoTime();
                c.request(0, 1 /* NBD_CMD_WRITE */, i, (long) i * 4096 % (64 * MIB), 4096, data);
                RawNbdClient.Reply reply = c.reply(0, Duration.ofSeconds(30));
                if (reply.errno() != 0) {
                    throw new IllegalStateException("write failed: errno " + reply.errno());
                }
                out[i] = (System.nanoTime() - t0) / 1e3;
            }
        }
        Arrays.sort(out);
        return out;
    }

    private static void row(String label, List<Figures> a, List<Figures> b,
                            java.util.function.ToDoubleFunction<Figures> f, int digits) {
        double[] x = a.stream().mapToDouble(f).sorted().toArray();
        double[] y = b.stream().mapToDouble(f).sorted().toArray();
        String fmt = "%." + digits + "f [%." + digits + "f-%." + digits + "f]";
        System.out.printf(Locale.ROOT, "%-28s %-22s %-22s %.2f%n", label,
                String.format(Locale.ROOT, fmt, median(x), x[0], x[x.length - 1]),
                String.format(Locale.ROOT, fmt, median(y), y[0], y[y.length - 1]), median(y) / median(x));
    }

    private static double median(double[] sorted) {
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static long parse(String s) {
        char unit = Character.toUpperCase(s.charAt(s.length() - 1));
        long n = Long.parseLong(Character.isDigit(unit) ? s : s.substring(0, s.length() - 1));
        return switch (unit) {
            case 'G' -> n << 30;
            case 'M' -> n << 20;
            case 'K' -> n << 10;
            default -> n;
        };
    }
}
