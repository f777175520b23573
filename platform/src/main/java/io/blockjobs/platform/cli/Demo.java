package io.blockjobs.platform.cli;

import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.platform.nbd.NbdClientDriver;
import io.blockjobs.sdk.block.BlockNode;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import tools.jackson.databind.JsonNode;

/**
 * The built-in demo: the product's main job on a demo disk that a client keeps writing through
 * NBD. A real {@code blockjobd} serves the disk; {@code backup-policy.js} takes a full backup and
 * then two incrementals (three simulated nights) while the client writes on, each backup the disk
 * as it was when it started; {@code restore.js} then rebuilds every point in time into a new image,
 * and each is compared with what the client read from the disk at that instant.
 */
final class Demo {
    private static final long MIB = 1 << 20;
    private static final long SIZE = 64 * MIB;
    private static final int BLOCK = 64 * 1024;

    private Demo() {
    }

    /** One backup of the demo: what the policy made, and the disk as the client read it then. */
    private record Point(String id, String mode, String file, long size, Path truth, long writesDuring) {
    }

    static int run(String[] args) throws Exception {
        Path dir = (args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-demo-")).toAbsolutePath();
        Files.createDirectories(dir);
        String home = System.getProperty("blockjobs.home");
        if (home == null) {
            System.err.println("blockjobs: the demo runs blockjobd: start it through bin/blockjobs demo");
            return 2;
        }
        Path disk = dir.resolve("disk.qcow2");
        Path store = dir.resolve("backups");
        Files.deleteIfExists(disk);
        Images.createQcow2(disk, Qcow2CreateOptions.of(SIZE));
        fill(disk, 0, 24 * MIB, (byte) 0x5a); // an "installed system": 24 MiB of data, the rest never written
        System.out.println("Demo disk " + disk + " (64 MiB qcow2, 24 MiB written); backups into " + store);

        Path qmpSocket = dir.resolve("qmp.sock");
        Path nbdSocket = dir.resolve("nbd.sock");
        ProcessBuilder daemonCommand = new ProcessBuilder(List.of(home + "/bin/blockjobd",
                "--blockdev", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + disk,
                "--chardev", "socket,id=m,path=" + qmpSocket + ",server=on,wait=off", "--monitor", "m",
                "--nbd-server", "addr.type=unix,addr.path=" + nbdSocket,
                "--export", "type=nbd,id=disk0,node-name=disk0,name=disk0,writable=on",
                "--backup-dir", store.toString()))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD);
        daemonCommand.environment().put("BLOCKJOBS_LOG_LEVEL", "INFO"); // its "ready" line says when it is ready
        Process daemon = daemonCommand.start();
        EventLoopGroup group = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
        try (BufferedReader log = new BufferedReader(new InputStreamReader(daemon.getErrorStream()))) {
            awaitReady(log);
            Thread.ofVirtual().start(() -> log.lines().forEach(l -> { }));
            try (BlockNode nbd = NbdClientDriver.connectUnix(group, nbdSocket.toString(), "disk0")) {
                Writer writer = new Writer(nbd);
                Thread.ofVirtual().start(writer);
                System.out.println("blockjobd serves it as NBD export disk0; a client writes 64 KiB blocks into it"
                        + " through " + nbdSocket);
                List<Point> points = backups(dir, qmpSocket, nbd, writer);
                writer.stop();
                return restoreAndCheck(dir, qmpSocket, store, points);
            } finally {
                try (QmpConnection qmp = new QmpConnection(qmpSocket)) {
                    qmp.execute("quit", null);
                } catch (IOException e) {
                    daemon.destroy();
                }
                daemon.waitFor(30, TimeUnit.SECONDS);
            }
        } finally {
            daemon.destroy();
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /** Three nights: the client changes the disk, stops for a moment so the demo can read it, and
     * writes on while the backup of that instant runs. */
    private static List<Point> backups(Path dir, Path qmpSocket, BlockNode nbd, Writer writer) throws Exception {
        List<Point> points = new ArrayList<>();
        Instant night = Instant.now().truncatedTo(ChronoUnit.DAYS).plus(2, ChronoUnit.HOURS);
        for (int i = 0; i < 3; i++) {
            if (i > 0) {
                writer.writeMore(96); // a day's changes: 6 MiB
            }
            Path truth = dir.resolve("disk-at-backup-" + (i + 1) + ".raw");
            readAll(nbd, truth); // the disk at the instant the backup starts: the client is paused
            String now = night.plus(i, ChronoUnit.DAYS).toString();
            System.out.printf("%n== Night %d (%s): backup-policy.js, mode auto, while the client writes on%n", i + 1, now);
            long before = writer.count();
            JsonNode result;
            try (QmpConnection watch = new QmpConnection(qmpSocket)) {
                Thread during = Thread.ofVirtual().start(() -> writeWhileTheJobRuns(watch, writer));
                result = runWorkflow(qmpSocket, "backup-policy.js", "disks=disk0", "mode=auto", "now=" + now,
                        "speed=" + 16 * MIB, "keep-last=7");
                writer.pause();
                during.interrupt();
            }
            JsonNode b = result.path("backups").path(0);
            points.add(new Point(b.path("id").asString(), b.path("mode").asString(), b.path("file").asString(),
                    b.path("size").asLong(), truth, writer.count() - before));
        }
        return points;
    }

    private static int restoreAndCheck(Path dir, Path qmpSocket, Path store, List<Point> points) throws Exception {
        boolean qemuImg = onPath("qemu-img");
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"BACKUP", "MODE", "FILE SIZE", "CLIENT WRITES DURING IT", "RESTORED IMAGE",
                "EQUALS THE DISK THEN"});
        boolean allEqual = true;
        for (Point p : points) {
            Path restored = dir.resolve("restored-" + p.id() + ".qcow2");
            Files.deleteIfExists(restored);
            System.out.printf("%n== Restore %s (%s) with restore.js%n", p.id(), p.mode());
            runWorkflow(qmpSocket, "restore.js", "disk=disk0", "backup=" + p.id(), "target=" + restored);
            boolean equal = qemuImg ? qemuImgCompare(p.truth(), restored) : sameContent(p.truth(), restored);
            allEqual &= equal;
            rows.add(new String[] {p.id(), p.mode(), Terminal.bytes(p.size()), String.valueOf(p.writesDuring()),
                    restored.getFileName().toString(), equal ? "yes" : "NO"});
        }
        System.out.println();
        System.out.println("The backup store, as `blockjobs backups " + store + "` lists it:");
        BlockjobsClient.commandLine().execute("backups", store.toString());
        System.out.println();
        System.out.println(Terminal.columns(rows));
        System.out.println();
        System.out.println(qemuImg ? "Each restored image was compared with the disk at its instant by qemu-img compare."
                : "Each restored image was compared with the disk at its instant by blockjobs' own reader"
                        + " (install qemu-utils to have qemu-img compare them).");
        System.out.println("Check them yourself: qemu-img compare -f raw " + points.get(0).truth() + " "
                + dir.resolve("restored-" + points.get(0).id() + ".qcow2") + "; qemu-img check "
                + store.resolve(points.get(points.size() - 1).file()));
        return allEqual ? 0 : 1;
    }

    /** Runs a shipped workflow through the client, as an operator would: its log and result shown. */
    private static JsonNode runWorkflow(Path qmpSocket, String script, String... args) throws Exception {
        List<String> argv = new ArrayList<>(List.of("--socket", qmpSocket.toString(), "run", script));
        for (String a : args) {
            argv.add("--arg");
            argv.add(a);
        }
        java.io.ByteArrayOutputStream captured = new java.io.ByteArrayOutputStream();
        java.io.PrintStream stdout = System.out;
        // The client prints the result (JSON) last: keep the log lines on screen, take the result.
        // Log lines stay on screen as they come; the result (pretty JSON, printed last) is taken, not shown.
        try (java.io.PrintStream tee = new java.io.PrintStream(new java.io.OutputStream() {
            private final java.io.ByteArrayOutputStream line = new java.io.ByteArrayOutputStream();
            private boolean result;

            @Override
            public void write(int b) {
                captured.write(b);
                if (result) {
                    return;
                }
                line.write(b);
                if (b == '\n') {
                    result = line.size() == 2 && line.toByteArray()[0] == '{';
                    if (!result) {
                        stdout.write(line.toByteArray(), 0, line.size());
                        stdout.flush();
                    }
                    line.reset();
                }
            }
        }, true)) {
            System.setOut(tee);
            int exit = BlockjobsClient.commandLine().execute(argv.toArray(String[]::new));
            if (exit != 0) {
                throw new IOException(script + " failed (exit status " + exit + ")");
            }
        } finally {
            System.setOut(stdout);
        }
        String out = captured.toString(java.nio.charset.StandardCharsets.UTF_8);
        int start = out.lastIndexOf("\n{");
        return io.blockjobs.platform.Json.MAPPER.readTree(start < 0 ? out.substring(out.indexOf('{')) : out.substring(start + 1));
    }

    /** The client writes while the backup job runs: from its start to its end. */
    private static void writeWhileTheJobRuns(QmpConnection watch, Writer writer) {
        try {
            while (true) {
                JsonNode e = watch.nextEvent();
                if (e.path("event").asString().equals("JOB_STATUS_CHANGE")
                        && e.at("/data/id").asString().equals("bj-backup-disk0")) {
                    switch (e.at("/data/status").asString()) {
                        case "running" -> writer.resume();
                        case "concluded" -> {
                            writer.pause();
                            return;
                        }
                        default -> { }
                    }
                }
            }
        } catch (Exception e) {
            // the run ended (or the connection closed) first
        }
    }

    /** The client: 64 KiB blocks of a changing pattern at random places, paused when asked. */
    private static final class Writer implements Runnable {
        private final BlockNode nbd;
        private final AtomicLong count = new AtomicLong();
        private long budget; // writes allowed before the next pause; Long.MAX_VALUE: until paused
        private boolean stopped;
        private boolean writing;

        Writer(BlockNode nbd) {
            this.nbd = nbd;
        }

        long count() {
            return count.get();
        }

        /** Writes {@code n} more blocks, and returns once they are acknowledged. */
        synchronized void writeMore(long n) throws InterruptedException {
            budget = n;
            notifyAll();
            while (budget > 0 || writing) {
                wait();
            }
        }

        synchronized void resume() {
            budget = Long.MAX_VALUE;
            notifyAll();
        }

        /** Stops writing; returns once the write in flight is acknowledged. */
        synchronized void pause() throws InterruptedException {
            budget = 0;
            while (writing) {
                wait();
            }
        }

        synchronized void stop() {
            stopped = true;
            budget = 0;
            notifyAll();
        }

        @Override
        public void run() {
            SplittableRandom random = new SplittableRandom(42);
            ByteBuffer buf = ByteBuffer.allocate(BLOCK);
            try {
                while (true) {
                    synchronized (this) {
                        while (budget == 0 && !stopped) {
                            wait();
                        }
                        if (stopped) {
                            return;
                        }
                        writing = true;
                    }
                    Arrays.fill(buf.array(), (byte) (1 + random.nextInt(255)));
                    buf.clear();
                    nbd.write(random.nextLong(SIZE / BLOCK) * BLOCK, buf);
                    count.incrementAndGet();
                    synchronized (this) {
                        writing = false;
                        if (budget != Long.MAX_VALUE) {
                            budget--;
                        }
                        notifyAll();
                    }
                    Thread.sleep(15); // a steady client, not a flood
                }
            } catch (IOException | InterruptedException e) {
                System.err.println("blockjobs: the demo's client stopped: " + e.getMessage());
            }
        }
    }

    private static void awaitReady(BufferedReader log) throws IOException {
        String line;
        while ((line = log.readLine()) != null && !line.contains(" ready")) {
            // the daemon logs that it is ready once its monitor listens
        }
        if (line == null) {
            throw new IOException("blockjobd did not start");
        }
    }

    private static void readAll(BlockNode node, Path raw) throws IOException {
        try (FileChannel out = FileChannel.open(raw, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer buf = ByteBuffer.allocate((int) MIB);
            for (long pos = 0; pos < SIZE; pos += MIB) {
                buf.clear();
                node.read(pos, buf);
                buf.flip();
                while (buf.hasRemaining()) {
                    out.write(buf, pos + buf.position());
                }
            }
        }
    }

    private static boolean qemuImgCompare(Path raw, Path image) throws Exception {
        Process p = new ProcessBuilder("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw.toString(), image.toString())
                .redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        return p.waitFor() == 0;
    }

    private static boolean sameContent(Path raw, Path image) throws IOException {
        try (BlockNode node = Images.open(image, "qcow2", false);
             FileChannel in = FileChannel.open(raw, StandardOpenOption.READ)) {
            ByteBuffer a = ByteBuffer.allocate((int) MIB);
            ByteBuffer b = ByteBuffer.allocate((int) MIB);
            for (long pos = 0; pos < SIZE; pos += MIB) {
                a.clear();
                b.clear();
                node.read(pos, a);
                in.read(b, pos);
                if (!a.flip().equals(b.flip())) {
                    return false;
                }
            }
            return node.size() == SIZE;
        }
    }

    private static boolean onPath(String tool) {
        for (String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, tool))) {
                return true;
            }
        }
        return false;
    }

    private static void fill(Path image, long offset, long length, byte value) throws IOException {
        byte[] chunk = new byte[(int) MIB];
        Arrays.fill(chunk, value);
        try (BlockNode node = Images.open(image, null, true)) {
            for (long pos = offset; pos < offset + length; pos += MIB) {
                node.write(pos, ByteBuffer.wrap(chunk));
            }
            node.flush();
        }
    }
}
