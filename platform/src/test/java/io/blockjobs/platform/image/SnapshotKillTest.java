package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A child JVM writes into an image and takes and deletes internal snapshots, and is killed with
 * SIGKILL at a random moment. Every time: {@code qemu-img check} reports nothing worse than
 * leaked clusters and the {@code OFLAG_COPIED} mismatches of the step where counts and flags
 * change (QEMU's order has the same window), {@code qemu-img check -r all} makes it clean,
 * every snapshot the child saw made (and did not start to delete) is there, and every snapshot
 * there holds the disk of its instant.
 */
class SnapshotKillTest {
    private static final int SIZE = 4 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}-byte clusters, seed {1}")
    @CsvSource({"65536, 1", "4096, 2", "65536, 3", "512, 4", "4096, 5", "65536, 6"})
    void killedDuringSnapshotsLeavesNoDamage(int clusterSize, long seed) throws Exception {
        SplittableRandom random = new SplittableRandom(seed);
        Path img = dir.resolve("disk.qcow2");
        Images.createQcow2(img, Qcow2CreateOptions.of(SIZE).withClusterSize(clusterSize));
        int killAfter = 2 + random.nextInt(30);
        String java = ProcessHandle.current().info().command().orElse("java");
        Process child = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                Child.class.getName(), img.toString(), String.valueOf(seed))
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
        Set<String> made = new HashSet<>();
        int lines = 0;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = out.readLine()) != null) {
                String[] f = line.split(" ");
                switch (f[0]) {
                    case "created" -> made.add(f[1]);
                    case "deleting" -> made.remove(f[1]);
                    default -> { }
                }
                if (++lines == killAfter) {
                    child.toHandle().destroyForcibly(); // SIGKILL, mid-operation
                }
            }
        }
        assertThat(child.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(lines).as("the child must have got that far").isGreaterThanOrEqualTo(killAfter);

        Qemu.Result check = Qemu.run("qemu-img", "check", img.toString());
        assertThat(check.exit()).as("qemu-img check: %s %s", check.out(), check.err()).isIn(0, 2, 3);
        for (String l : (check.out() + check.err()).split("\n")) {
            if (l.startsWith("ERROR")) {
                assertThat(l).as("seed %d: qemu-img check: %s", seed, check.err()).contains("OFLAG_COPIED");
            }
        }
        Qemu.img("check", "-r", "all", img.toString());
        Qemu.assertClean(img);

        List<String> listed = new ArrayList<>();
        for (String l : Qemu.img("snapshot", "-l", img.toString()).out().split("\n")) {
            String[] f = l.trim().split("\\s+");
            if (f.length >= 2 && f[0].matches("\\d+")) {
                listed.add(f[1]);
            }
        }
        assertThat(listed).as("seed %d", seed).containsAll(made);
        for (String name : listed) {
            Path got = dir.resolve(name + ".got");
            Qemu.img("convert", "-l", "snapshot.name=" + name, "-O", "raw", img.toString(), got.toString());
            assertThat(Qemu.identical(got, "raw", dir.resolve(name + ".raw"), "raw"))
                    .as("seed %d: snapshot %s holds the disk of its instant", seed, name).isTrue();
        }

        // The image opens and takes writes, snapshots and deletes again.
        try (Qcow2Node node = (Qcow2Node) Images.open(img, null, true)) {
            node.write(SIZE / 2 + 100, ByteBuffer.wrap(new byte[3 * clusterSize]));
            node.createSnapshot("after", 0, 0, 0);
            node.discard(0, SIZE / 4);
            for (Qcow2Node.InternalSnapshot sn : node.snapshots()) {
                node.deleteSnapshot(sn.id(), null);
            }
        }
        Qemu.assertClean(img);
    }

    /**
     * The child: {@link KillWriter}'s operations, and every fifth one a snapshot (its expected
     * disk written to {@code <name>.raw} first, {@code created <name>} printed after) or, now and
     * then, a delete ({@code deleting <name>} printed before).
     */
    public static final class Child {
        public static void main(String[] args) throws Exception {
            Path image = Path.of(args[0]);
            long seed = Long.parseLong(args[1]);
            SplittableRandom random = new SplittableRandom(seed);
            List<String> live = new ArrayList<>();
            try (Qcow2Node node = (Qcow2Node) Images.open(image, null, true)) {
                int size = (int) node.size();
                byte[] model = new byte[size];
                for (long i = 0; i < 1_000_000; i++) {
                    KillWriter.Op op = KillWriter.op(seed, i, size, node.clusterSize());
                    op.applyTo(node);
                    op.applyTo(model, node.clusterSize());
                    if (i % 5 != 4) {
                        continue;
                    }
                    if (live.size() < 4 && random.nextInt(10) < 7 || live.isEmpty()) {
                        String name = "n" + i;
                        Files.write(image.resolveSibling(name + ".raw"), model);
                        node.createSnapshot(name, i, 0, i);
                        live.add(name);
                        say("created " + name);
                    } else {
                        String name = live.remove(random.nextInt(live.size()));
                        say("deleting " + name);
                        node.deleteSnapshot(null, name);
                        say("deleted " + name);
                    }
                }
            }
        }

        private static void say(String line) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
