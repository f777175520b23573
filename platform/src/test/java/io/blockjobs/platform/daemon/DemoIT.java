package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blockjobs demo}, as the README's first command runs it: a full backup and two
 * incrementals of a disk a client writes through NBD, then a restore of each point in time. The
 * test checks the demo's claims itself: every restored image equals the disk the demo read at
 * that instant ({@code qemu-img compare}), and every image it left is {@code qemu-img check} clean.
 */
class DemoIT {
    @TempDir
    Path dir;

    @Test
    void theDemoBacksUpRestoresAndEveryPointInTimeMatches() throws Exception {
        Path launcher = DaemonProcess.blockjobd().resolveSibling("blockjobs");
        Qemu.Result r = Qemu.run(launcher.toString(), "demo", dir.toString());
        assertThat(r.exit()).as("%s%n%s", r.out(), r.err()).isZero();
        assertThat(r.err()).as("nothing goes wrong on the way").isEmpty();
        assertThat(r.out()).contains("disk0: full (no chain yet)").contains("compared with the disk at its instant by qemu-img compare");

        Matcher row = Pattern.compile("(?m)^(\\d{8}T\\d{6}Z)\\s+(full|inc)\\s+.*\\s(\\d+)\\s+restored-\\S+\\.qcow2\\s+(yes|NO)$")
                .matcher(r.out());
        int points = 0;
        while (row.find()) {
            points++;
            assertThat(row.group(2)).isEqualTo(points == 1 ? "full" : "inc");
            assertThat(Long.parseLong(row.group(3))).as("the client wrote during backup %d", points).isPositive();
            assertThat(row.group(4)).isEqualTo("yes");
            Path restored = dir.resolve("restored-" + row.group(1) + ".qcow2");
            Path truth = dir.resolve("disk-at-backup-" + points + ".raw");
            assertThat(Qemu.identical(truth, "raw", restored, "qcow2")).as("restored point %d", points).isTrue();
            Qemu.assertClean(restored);
        }
        assertThat(points).isEqualTo(3);
        assertThat(Qemu.identical(dir.resolve("disk-at-backup-1.raw"), "raw", dir.resolve("disk-at-backup-3.raw"), "raw"))
                .as("the client changed the disk between the backups").isFalse();
        try (Stream<Path> files = Files.walk(dir.resolve("backups"))) {
            List<Path> images = files.filter(p -> p.toString().endsWith(".qcow2")).toList();
            assertThat(images).hasSize(3);
            images.forEach(Qemu::assertClean);
        }
        Qemu.assertClean(dir.resolve("disk.qcow2"));
    }
}
