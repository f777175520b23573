package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.BenchDaemon;
import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * blkdebug and null-co over NBD, blockjobd beside qemu-storage-daemon given the same nodes:
 * what qemu-io, qemu-img and nbdinfo see must be the same. QEMU's blkdebug sees the events
 * blockjobs' does when raw sits above it (what {@code qemu-io blkdebug:CONFIG:IMAGE} opens), so
 * the QSD side puts a raw node over its blkdebug node where the rules name read_aio.
 */
class DriversIT {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    /** A raw file of {@code size} bytes of {@code fill}. */
    private Path raw(String name, int size, int fill) throws IOException {
        byte[] data = new byte[size];
        Arrays.fill(data, (byte) fill);
        Path p = dir.resolve(name);
        Files.write(p, data);
        return p;
    }

    /** blockjobd with these options; quits through QMP, so that its files are closed when it returns. */
    private static final class Blockjobd implements AutoCloseable {
        final DaemonProcess daemon;

        Blockjobd(Path dir, List<String> args) throws IOException {
            Path home = dir.resolve("bj");
            try {
                Files.createDirectories(home);
            } catch (IOException e) {
                throw new AssertionError(e);
            }
            daemon = DaemonProcess.startWithMonitor(home, args);
        }

        String uri(String export) {
            return daemon.nbdUri(export);
        }

        @Override
        public void close() throws Exception {
            try (QmpClient qmp = QmpClient.connect(daemon.qmpSocket)) {
                qmp.ok("quit");
            }
            assertThat(daemon.awaitExit()).isZero();
        }
    }

    /** qemu-storage-daemon with these options and an NBD server; SIGTERM makes it close its files. */
    private static final class Qsd implements AutoCloseable {
        final BenchDaemon daemon;
        final Path socket;

        Qsd(Path dir, List<String> args) throws Exception {
            Path home = dir.resolve("qsd");
            Files.createDirectories(home);
            socket = home.resolve("nbd.sock");
            List<String> all = new ArrayList<>(List.of("--nbd-server", "addr.type=unix,addr.path=" + socket));
            all.addAll(args);
            daemon = BenchDaemon.start("qemu-storage-daemon", all, home);
        }

        String uri(String export) {
            return "nbd+unix:///" + export + "?socket=" + socket;
        }

        @Override
        public void close() {
            daemon.close();
        }
    }

    private static List<String> export(String node) {
        return List.of("--export", "type=nbd,id=e-" + node + ",node-name=" + node + ",name=" + node + ",writable=on");
    }

    private static List<String> args(List<String> blockdevs, String... exports) {
        List<String> out = new ArrayList<>();
        for (String b : blockdevs) {
            out.add("--blockdev");
            out.add(b);
        }
        for (String e : exports) {
            out.addAll(export(e));
        }
        return out;
    }

    /** qemu-io's report of each command, without its timing lines. */
    private static List<String> qemuIo(String uri, String... commands) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : commands) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(uri);
        Qemu.Result r = Qemu.run(cmd.toArray(String[]::new));
        List<String> lines = new ArrayList<>();
        for (String l : (r.out() + r.err()).split("\n")) {
            if (!l.isBlank() && !l.contains(" ops; ") && !l.contains("reconnect")) {
                lines.add(l);
            }
        }
        return lines;
    }

    @Test
    void aConfigFileWhoseSetStateMakesTheThirdReadFail() throws Exception {
        Path conf = dir.resolve("third.conf");
        Files.writeString(conf, """
                [set-state]
                event = "read_aio"
                state = "1"
                new_state = "2"

                [set-state]
                event = "read_aio"
                state = "2"
                new_state = "3"

                [inject-error]
                event = "read_aio"
                state = "3"
                """);
        String[] reads = {"read -P 0x11 0 512", "read -P 0x11 4096 512", "read -P 0x11 0 512"};
        List<String> expected = List.of("read 512/512 bytes at offset 0", "read 512/512 bytes at offset 4096",
                "read failed: Input/output error");
        Path a = raw("bj.raw", MIB, 0x11);
        List<String> ours;
        // blockjobd: the blkdebug: filename, in the command line's key=value form
        try (Blockjobd bj = new Blockjobd(dir, args(List.of(
                "driver=blkdebug,node-name=bd,filename=blkdebug:" + conf + ":" + a), "bd"))) {
            ours = qemuIo(bj.uri("bd"), reads);
        }
        Path b = raw("qsd.raw", MIB, 0x11);
        List<String> theirs;
        try (Qsd qsd = new Qsd(dir, args(List.of("driver=file,node-name=f,filename=" + b,
                "driver=blkdebug,node-name=dbg,config=" + conf + ",image=f", "driver=raw,node-name=bd,file=dbg"), "bd"))) {
            theirs = qemuIo(qsd.uri("bd"), reads);
        }
        assertThat(ours).isEqualTo(expected).isEqualTo(theirs);
    }

    @Test
    void alignMakesAnUnalignedWriteAReadModifyWriteOfTheBlock() throws Exception {
        String[] io = {"write -P 0x42 4097 2", "read -P 0x42 4097 2", "read -P 0x11 4096 1", "read -P 0x11 4099 4093"};
        Path a = raw("bj.raw", MIB, 0x11);
        List<String> ours;
        try (Blockjobd bj = new Blockjobd(dir, args(List.of("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"align\":4096,"
                + "\"image\":{\"driver\":\"file\",\"filename\":\"" + a + "\"}}"), "bd"))) {
            ours = qemuIo(bj.uri("bd"), io);
        }
        Path b = raw("qsd.raw", MIB, 0x11);
        List<String> theirs;
        try (Qsd qsd = new Qsd(dir, args(List.of("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"align\":4096,"
                + "\"image\":{\"driver\":\"file\",\"filename\":\"" + b + "\"}}"), "bd"))) {
            theirs = qemuIo(qsd.uri("bd"), io);
        }
        assertThat(ours).isEqualTo(theirs).doesNotContain("failed").contains("wrote 2/2 bytes at offset 4097");
        byte[] expected = new byte[MIB];
        Arrays.fill(expected, (byte) 0x11);
        expected[4097] = 0x42;
        expected[4098] = 0x42;
        assertThat(Files.readAllBytes(a)).isEqualTo(expected).isEqualTo(Files.readAllBytes(b));
    }

    @Test
    void theReadModifyWriteFiresQemusEventsAndItsReadCanFail() throws Exception {
        // (QSD's NBD export advertises the 4096-byte minimum, so its clients pad themselves and QSD
        // never does this read-modify-write; QEMU 7.2 would ignore the read's failure anyway.)
        Path a = raw("bj.raw", MIB, 0x11);
        try (Blockjobd bj = new Blockjobd(dir, args(List.of("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"align\":4096,"
                + "\"image\":{\"driver\":\"file\",\"filename\":\"" + a + "\"},\"inject-error\":[{\"event\":"
                + "\"pwritev_rmw_after_head\",\"iotype\":\"write\",\"errno\":28}]}"), "bd"))) {
            assertThat(qemuIo(bj.uri("bd"), "write -P 0x42 0 4096", "write -P 0x42 4097 2")).containsExactly(
                    "wrote 4096/4096 bytes at offset 0", "write failed: No space left on device");
        }
        byte[] file = Files.readAllBytes(a);
        assertThat(file[4095]).isEqualTo((byte) 0x42);
        assertThat(file[4097]).isEqualTo((byte) 0x11);
    }

    @Test
    void maxTransferSplitsWritesIntoPiecesThatTheRulesCheckOneByOne() throws Exception {
        // Sector 0 masks (errno 0) the request that holds it; the other rule fails writes with ENOSPC.
        String rules = ",\"inject-error\":[{\"event\":\"none\",\"sector\":0,\"errno\":0},"
                + "{\"event\":\"none\",\"iotype\":\"write\",\"errno\":28}]";
        // the first piece of the split write is written before the second fails, as QEMU's loop does
        String[] io = {"write -P 0x42 0 4096", "write -P 0x43 0 8192", "read -P 0x43 0 4096", "read -P 0x11 4096 4096"};
        List<String> expected = List.of("wrote 4096/4096 bytes at offset 0", "write failed: No space left on device",
                "read 4096/4096 bytes at offset 0", "read 4096/4096 bytes at offset 4096");
        Path a = raw("bj.raw", MIB, 0x11);
        List<String> ours;
        List<String> whole;
        try (Blockjobd bj = new Blockjobd(dir, args(List.of(
                "{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"max-transfer\":4096,\"image\":{\"driver\":\"file\","
                        + "\"filename\":\"" + a + "\"}" + rules + "}",
                "{\"driver\":\"blkdebug\",\"node-name\":\"nomax\",\"image\":{\"driver\":\"null-co\"}" + rules + "}"),
                "bd", "nomax"))) {
            ours = qemuIo(bj.uri("bd"), io);
            whole = qemuIo(bj.uri("nomax"), "write -P 0x43 0 8192");
        }
        Path b = raw("qsd.raw", MIB, 0x11);
        List<String> theirs;
        try (Qsd qsd = new Qsd(dir, args(List.of("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"max-transfer\":4096,"
                + "\"image\":{\"driver\":\"file\",\"filename\":\"" + b + "\"}" + rules + "}"), "bd"))) {
            theirs = qemuIo(qsd.uri("bd"), io);
        }
        assertThat(ours).isEqualTo(expected).isEqualTo(theirs);
        assertThat(whole).as("without max-transfer the write holds sector 0").containsExactly("wrote 8192/8192 bytes at offset 0");
        assertThat(Files.readAllBytes(a)).isEqualTo(Files.readAllBytes(b));
    }

    @Test
    void nullCoMapsAsQemusDoesAndReadsZeroes() throws Exception {
        List<String> nodes = List.of("driver=null-co,node-name=n0,size=1048576",
                "driver=null-co,node-name=n1,size=1048576,read-zeroes=on");
        List<String> ours = new ArrayList<>();
        try (Blockjobd bj = new Blockjobd(dir, args(nodes, "n0", "n1"))) {
            for (String n : List.of("n0", "n1")) {
                ours.add(Qemu.run("nbdinfo", "--map", bj.uri(n)).ok().out());
                ours.add(Qemu.run("qemu-img", "map", "--output=json", "-f", "raw", bj.uri(n)).ok().out());
            }
            // QEMU leaves the buffer as it was without read-zeroes; blockjobs zeroes it.
            assertThat(qemuIo(bj.uri("n0"), "write -P 0x42 0 64k", "read -P 0 0 1M"))
                    .containsExactly("wrote 65536/65536 bytes at offset 0", "read 1048576/1048576 bytes at offset 0");
        }
        List<String> theirs = new ArrayList<>();
        try (Qsd qsd = new Qsd(dir, args(nodes, "n0", "n1"))) {
            for (String n : List.of("n0", "n1")) {
                theirs.add(Qemu.run("nbdinfo", "--map", qsd.uri(n)).ok().out());
                theirs.add(Qemu.run("qemu-img", "map", "--output=json", "-f", "raw", qsd.uri(n)).ok().out());
            }
        }
        assertThat(ours.get(0)).containsPattern("(?m)^\\s*0\\s+1048576\\s+1\\s+hole\\s*$");
        assertThat(ours.get(2)).containsPattern("(?m)^\\s*0\\s+1048576\\s+3\\s+hole,zero\\s*$");
        assertThat(ours).isEqualTo(theirs);
    }
}
