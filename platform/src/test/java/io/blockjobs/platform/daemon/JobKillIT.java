package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * SIGKILL of the daemon at a random point of a stream or commit: every image of the chain stays
 * readable and qemu-img check finds no corruption, and the chain's guest-visible content is
 * unchanged.
 */
class JobKillIT {

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}, seed {1}")
    @CsvSource({"stream, 1", "stream, 2", "commit, 3", "commit, 4", "active-commit, 5", "safe-commit, 6"})
    void killedMidJobLosesNothing(String job, long seed) throws Exception {
        SplittableRandom random = new SplittableRandom(seed);
        Path base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        Path top = dir.resolve("top.qcow2");
        Qemu.img("create", "-f", "qcow2", base.toString(), "64M");
        Qemu.io(base, "qcow2", "write -P 0x11 0 40M");
        Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid.toString());
        Qemu.io(mid, "qcow2", "write -P 0x22 8M 40M", "write -z 20M 4M");
        Qemu.img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top.toString());
        Qemu.io(top, "qcow2", "write -P 0x33 30M 8M");
        Path before = dir.resolve("before.raw");
        Qemu.img("convert", "-O", "raw", top.toString(), before.toString());

        DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=base,file.driver=file,file.filename=" + base,
                "--blockdev", "driver=qcow2,node-name=mid,backing=base,file.driver=file,file.filename=" + mid,
                "--blockdev", "driver=qcow2,node-name=top,backing=mid,file.driver=file,file.filename=" + top));
        try (QmpClient qmp = QmpClient.connect(d.qmpSocket)) {
            Map<String, Object> args = switch (job) {
                case "stream" -> map("job-id", "j", "device", "top", "speed", 32 << 20);
                case "commit" -> map("job-id", "j", "device", "top", "top-node", "mid", "speed", 32 << 20);
                case "safe-commit" -> map("job-id", "j", "device", "top", "top-node", "mid", "speed", 32 << 20,
                        "x-safe", true);
                default -> map("job-id", "j", "device", "top", "speed", 32 << 20);
            };
            qmp.ok(job.equals("stream") ? "block-stream" : "block-commit", args);
            long target = (long) ((0.1 + 0.8 * random.nextDouble()) * (64 << 20));
            while (true) { // until the job has made the chosen progress (or finished)
                JsonNodeHolder info = new JsonNodeHolder(qmp.ok("query-block-jobs"));
                if (info.done() || info.offset() >= target) {
                    break;
                }
            }
            d.killHard();
        }
        for (Path p : List.of(top, mid, base)) {
            Qemu.assertNoCorruption(p);
        }
        assertThat(Qemu.identical(top, "qcow2", before, "raw")).as("the chain reads as before").isTrue();
    }

    /** query-block-jobs' first job, or none. */
    private record JsonNodeHolder(tools.jackson.databind.JsonNode jobs) {
        boolean done() {
            return jobs.isEmpty() || jobs.get(0).get("ready").asBoolean();
        }

        long offset() {
            return jobs.get(0).get("offset").asLong();
        }
    }
}
