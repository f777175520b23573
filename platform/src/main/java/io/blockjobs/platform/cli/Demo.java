package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import tools.jackson.databind.JsonNode;

/**
 * The built-in demo: a three-layer qcow2 chain written by blockjobs, a real {@code blockjobd}
 * serving it, a job run over QMP with a speed limit (events and progress shown as they come),
 * and the map of where each range of the top image's data lives, as {@code qemu-img map} shows it.
 */
final class Demo {
    private static final long MIB = 1 << 20;

    private Demo() {
    }

    static int run(String[] args) throws Exception {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-demo-");
        Files.createDirectories(dir);
        Path base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(base, Qcow2CreateOptions.of(64 * MIB));
        Images.createQcow2(mid, Qcow2CreateOptions.of(64 * MIB).withBacking("base.qcow2", "qcow2"));
        Images.createQcow2(top, Qcow2CreateOptions.of(64 * MIB).withBacking("mid.qcow2", "qcow2"));
        fill(base, 0, 4 * MIB, (byte) 0xaa);
        fill(mid, 2 * MIB, 4 * MIB, (byte) 0xbb);
        fill(top, 5 * MIB, 3 * MIB, (byte) 0xcc);
        try (BlockNode node = Images.open(top, null, true)) {
            node.writeZeroes(MIB, MIB, true);
        }
        System.out.println("Chain in " + dir + ": base.qcow2 <- mid.qcow2 <- top.qcow2");

        runJob(dir, top);

        System.out.printf("%n%12s %12s  %-5s %-5s %s%n", "start", "length", "depth", "zero", "layer");
        String[] layers = {"top.qcow2", "mid.qcow2", "base.qcow2", "(none)"};
        try (BlockNode node = Images.open(top, null, false)) {
            long pos = 0;
            while (pos < node.size()) {
                BlockStatus s = node.chainStatus(pos, node.size() - pos);
                System.out.printf("%12d %12d  %-5d %-5s %s%n", s.offset(), s.length(), s.depth(), s.zero(),
                        layers[Math.min(s.depth(), 3)]);
                pos = s.end();
            }
        }
        System.out.println("Check it with: qemu-img check " + top + " && qemu-img map " + top);
        return 0;
    }

    /** Starts blockjobd on the chain and runs block-null over QMP at 8 MiB/s, showing its events. */
    private static void runJob(Path dir, Path top) throws Exception {
        String home = System.getProperty("blockjobs.home");
        if (home == null) {
            System.out.println("(run through bin/blockjobs to see a job run in blockjobd)");
            return;
        }
        Path socket = dir.resolve("qmp.sock");
        Process daemon = new ProcessBuilder(List.of(home + "/bin/blockjobd",
                "--blockdev", "driver=qcow2,node-name=top,file.driver=file,file.filename=" + top,
                "--chardev", "socket,id=m,path=" + socket + ",server=on,wait=off", "--monitor", "m"))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        try (BufferedReader log = new BufferedReader(new InputStreamReader(daemon.getErrorStream()))) {
            String line;
            while ((line = log.readLine()) != null && !line.contains(" ready")) {
                // the daemon logs that it is ready once its monitor listens
            }
            if (line == null) {
                throw new IOException("blockjobd did not start");
            }
            Thread.ofVirtual().start(() -> log.lines().forEach(l -> { }));
            System.out.println("blockjobd is serving top.qcow2; running block-null at 8 MiB/s over QMP:");
            try (QmpConnection qmp = new QmpConnection(socket)) {
                qmp.execute("block-null", Json.object().put("job-id", "demo").put("device", "top").put("speed", 8 * MIB));
                while (true) {
                    JsonNode event = qmp.nextEvent();
                    show(event);
                    if (event.get("event").asString().equals("JOB_STATUS_CHANGE")
                            && event.at("/data/status").asString().equals("null")) {
                        break;
                    }
                }
                qmp.execute("quit", null);
            }
            daemon.waitFor();
        } finally {
            daemon.destroy();
        }
    }

    private static void show(JsonNode event) {
        String name = event.get("event").asString();
        JsonNode data = event.path("data");
        if (name.equals("JOB_STATUS_CHANGE")) {
            System.out.printf("  job %-6s %s%n", data.get("id").asString(), data.get("status").asString());
        } else {
            System.out.printf("  %s %s%n", name, data);
        }
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
