package io.blockjobs.platform.image.bench;

import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Throughput of the qcow2 driver beside {@code qemu-img bench} on the same kind of image:
 * sequential and random 64 KiB reads and writes on a 1 GiB image, several requests in flight.
 * Prints figures; asserts nothing. Run: {@code ./build bench [DIR] [DEPTH] [CLUSTER_SIZE]}.
 */
public final class ImageBench {
    private static final long SIZE = 1L << 30;
    private static final int BLOCK = 64 * 1024;
    private static final int COUNT = (int) (SIZE / BLOCK);

    private ImageBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-bench-");
        int depth = args.length > 1 ? Integer.parseInt(args[1]) : 16;
        int clusterSize = args.length > 2 ? Integer.parseInt(args[2]) : 65536;
        Files.createDirectories(dir);
        Path ours = dir.resolve("blockjobs.qcow2");
        Path theirs = dir.resolve("qemu.qcow2");
        System.out.printf(Locale.ROOT, "qcow2, 1 GiB, %d-byte clusters, 64 KiB requests, %d in flight, files in %s%n",
                clusterSize, depth, dir);
        System.out.printf(Locale.ROOT, "%-28s %12s %12s %8s%n", "test", "blockjobs", "qemu-img", "ratio");

        Images.createQcow2(ours, Qcow2CreateOptions.of(SIZE).withClusterSize(clusterSize));
        exec("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + clusterSize, theirs.toString(),
                String.valueOf(SIZE));

        row("sequential write (allocating)", run(ours, depth, true, false),
                qemuBench(theirs, depth, true));
        row("sequential write (allocated)", run(ours, depth, true, false),
                qemuBench(theirs, depth, true));
        row("sequential read", run(ours, depth, false, false), qemuBench(theirs, depth, false));
        row("random write (allocated)", run(ours, depth, true, true), Double.NaN);
        row("random read", run(ours, depth, false, true), Double.NaN);
        System.out.println("MiB/s; qemu-img bench has no random mode. Reads come from the page cache for both.");
        Files.delete(ours);
        Files.delete(theirs);
    }

    private static void row(String name, double ours, double qemu) {
        System.out.printf(Locale.ROOT, "%-28s %12.1f %12s %8s%n", name, ours,
                Double.isNaN(qemu) ? "-" : String.format(Locale.ROOT, "%.1f", qemu),
                Double.isNaN(qemu) ? "-" : String.format(Locale.ROOT, "%.2f", ours / qemu));
    }

    /** MiB/s for COUNT requests by {@code depth} virtual threads, with a final flush. */
    private static double run(Path image, int depth, boolean write, boolean random) throws Exception {
        try (BlockNode node = Images.open(image, "qcow2", true);
             ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            AtomicLong next = new AtomicLong();
            long start = System.nanoTime();
            List<Future<?>> workers = new ArrayList<>();
            for (int w = 0; w < depth; w++) {
                int worker = w;
                workers.add(pool.submit(() -> {
                    ByteBuffer buf = ByteBuffer.allocateDirect(BLOCK);
                    SplittableRandom rnd = new SplittableRandom(worker);
                    long i;
                    while ((i = next.getAndIncrement()) < COUNT) {
                        long block = random ? rnd.nextInt(COUNT) : i;
                        buf.clear();
                        if (write) {
                            buf.put(0, (byte) i);
                            node.write(block * BLOCK, buf);
                        } else {
                            node.read(block * BLOCK, buf);
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : workers) {
                f.get();
            }
            node.flush();
            double seconds = (System.nanoTime() - start) / 1e9;
            return SIZE / seconds / (1 << 20);
        }
    }

    private static double qemuBench(Path image, int depth, boolean write) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("qemu-img", "bench", "-f", "qcow2", "-c", String.valueOf(COUNT),
                "-d", String.valueOf(depth), "-s", "64k", "-t", "writeback"));
        if (write) {
            cmd.add("-w");
        }
        cmd.add(image.toString());
        String out = exec(cmd.toArray(String[]::new));
        Matcher m = Pattern.compile("Run completed in ([0-9.]+) seconds").matcher(out);
        if (!m.find()) {
            throw new IOException("unexpected qemu-img bench output: " + out);
        }
        return SIZE / Double.parseDouble(m.group(1)) / (1 << 20);
    }

    private static String exec(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IOException(String.join(" ", cmd) + " failed: " + out);
        }
        return out;
    }
}
