package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.daemon.RawNbdClient.*;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QemuStorageDaemon;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.platform.testkit.StorageDaemon;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * blockjobd's NBD server against hostile and sloppy clients, beside qemu-storage-daemon 7.2
 * where QEMU has the behaviour: memory bounded per client, max-connections, the handshake time
 * limit, QEMU's refusals of bad flags and ranges, and QEMU's inet address options.
 */
class NbdHardeningIT {
    static final int MIB = 1 << 20;
    static final long SIZE = 64L * MIB;

    @TempDir
    Path dir;

    private List<String> exportOptions(Path sub) throws IOException {
        Files.createDirectories(sub);
        Path image = sub.resolve("d.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), Long.toString(SIZE));
        Qemu.io(image, "qcow2", "write -P 0x11 0 8M");
        return List.of("--blockdev", "driver=qcow2,node-name=d,file.driver=file,file.filename=" + image,
                "--export", "type=nbd,id=e,node-name=d,name=d,writable=on");
    }

    private StorageDaemon start(StorageDaemon.Kind kind) throws IOException {
        Path sub = dir.resolve(kind.name().toLowerCase());
        return StorageDaemon.start(kind, sub, exportOptions(sub));
    }

    private SocketAddress nbdSocket(StorageDaemon d) {
        return UnixDomainSocketAddress.of(dir.resolve(d.kind.name().toLowerCase()).resolve("nbd.sock"));
    }

    static long rssKib(long pid) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("\\D", ""));
            }
        }
        throw new IOException("no VmRSS for " + pid);
    }

    /**
     * 96 reads of 32 MiB (3 GiB of replies) from a client that never reads them: blockjobd's RSS
     * grows by less than 512 MiB (QEMU's own bound, 16 requests of 32 MiB), while another client's
     * writes and reads each finish within 60 s; then the hostile client reads, and every reply
     * is there.
     */
    @Test
    void aClientThatNeverReadsItsRepliesCostsBoundedMemoryAndOthersKeepWorking() throws Exception {
        try (StorageDaemon d = start(StorageDaemon.Kind.BLOCKJOBD)) {
            String uri = d.nbdUri("d");
            Qemu.ioNbd(uri, "write -P 0x5a 16M 1M", "read -P 0x5a 16M 1M"); // warm: code loaded, pools made
            long before = rssKib(d.pid());
            AtomicLong peak = new AtomicLong(before);
            AtomicBoolean sampling = new AtomicBoolean(true);
            Thread sampler = Thread.ofVirtual().start(() -> {
                while (sampling.get()) {
                    try {
                        peak.accumulateAndGet(rssKib(d.pid()), Math::max);
                        Thread.sleep(20); // a sampling period, not synchronisation
                    } catch (IOException | InterruptedException e) {
                        return;
                    }
                }
            });
            int reads = 96;
            try (RawNbdClient hostile = RawNbdClient.open(nbdSocket(d), "d", true)) {
                for (int i = 0; i < reads; i++) {
                    hostile.request(0, CMD_READ, i, (i % 2) * 32L * MIB, 32 * MIB);
                }
                for (int round = 0; round < 10; round++) { // the victim, meanwhile
                    long t0 = System.nanoTime();
                    int p = 0x60 + round;
                    Qemu.ioNbd(uri, "write -P " + p + " 40M 4M", "read -P " + p + " 40M 4M", "flush");
                    assertThat(Duration.ofNanos(System.nanoTime() - t0)).as("victim round %d", round)
                            .isLessThan(Duration.ofSeconds(60));
                }
                sampling.set(false);
                sampler.join();
                long grownMib = (peak.get() - before) / 1024;
                System.out.printf("hostile reader: RSS %d MiB before, peak %d MiB (+%d MiB) with %d x 32 MiB unread%n",
                        before / 1024, peak.get() / 1024, grownMib, reads);
                assertThat(grownMib).as("RSS growth in MiB while 3 GiB of replies are unread").isLessThan(512);
                // The hostile client was only slowed: every read is answered, with its data.
                boolean[] answered = new boolean[reads];
                for (int i = 0; i < reads; i++) {
                    RawNbdClient.Reply r = hostile.reply(32 * MIB, Duration.ofSeconds(120));
                    assertThat(r.errno()).isZero();
                    assertThat(r.payload()).isEqualTo(8 + 32 * MIB);
                    answered[(int) r.cookie()] = true;
                }
                for (int i = 0; i < reads; i++) {
                    assertThat(answered[i]).as("read %d answered", i).isTrue();
                }
            }
            Qemu.ioNbd(uri, "read -P 0x69 40M 4M", "read -P 0x11 0 8M");
        }
    }

    /**
     * 500 clients that negotiate and then sit idle cost the daemon less than 100 MiB of RSS
     * (200 KiB each), and a new client is served meanwhile.
     */
    @Test
    void idleClientsCostBoundedMemory() throws Exception {
        try (StorageDaemon d = start(StorageDaemon.Kind.BLOCKJOBD)) {
            Qemu.ioNbd(d.nbdUri("d"), "read -P 0x11 0 1M"); // warm
            long before = rssKib(d.pid());
            List<RawNbdClient> idle = new ArrayList<>();
            try {
                for (int i = 0; i < 500; i++) {
                    idle.add(RawNbdClient.open(nbdSocket(d), "d", true));
                }
                long t0 = System.nanoTime();
                Qemu.ioNbd(d.nbdUri("d"), "write -P 0x44 1M 1M", "read -P 0x44 1M 1M");
                assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(60));
                long grownMib = (rssKib(d.pid()) - before) / 1024;
                System.out.printf("500 idle NBD clients: RSS +%d MiB%n", grownMib);
                assertThat(grownMib).as("RSS growth in MiB for 500 idle clients").isLessThan(100);
                RawNbdClient last = idle.get(idle.size() - 1);
                last.request(0, CMD_READ, 7, 1 << 20, 4096);
                assertThat(last.reply(4096, Duration.ofSeconds(30)).errno()).isZero();
            } finally {
                for (RawNbdClient c : idle) {
                    c.close();
                }
            }
        }
    }

    /**
     * {@code max-connections}: at the limit a new client is not accepted (it has no greeting)
     * until one goes; at 1 the export does not offer multi-conn. Both as qemu-storage-daemon.
     */
    @Test
    void maxConnectionsHoldsNewClientsBackAsQemuDoes() throws Exception {
        for (StorageDaemon.Kind kind : StorageDaemon.Kind.values()) {
            try (StorageDaemon d = start(kind)) {
                Path sock = dir.resolve(kind.name().toLowerCase()).resolve("max.sock");
                restart(d.qmp, sock, 2);
                RawNbdClient a = RawNbdClient.connect(UnixDomainSocketAddress.of(sock));
                a.greeting(Duration.ofSeconds(30));
                try (RawNbdClient b = RawNbdClient.connect(UnixDomainSocketAddress.of(sock));
                     RawNbdClient c = RawNbdClient.connect(UnixDomainSocketAddress.of(sock))) {
                    b.greeting(Duration.ofSeconds(30));
                    CompletableFuture<Void> third = c.greetingLater();
                    assertThatThrownBy(() -> third.get(2, TimeUnit.SECONDS)).as("%s: a third client at max-connections=2", kind)
                            .isInstanceOf(TimeoutException.class);
                    a.close();
                    third.get(30, TimeUnit.SECONDS); // accepted once a slot is free
                }
                String uri = "nbd+unix:///d?socket=" + sock;
                assertThat(Qemu.JSON.readTree(Qemu.run("nbdinfo", "--json", uri).ok().out())
                        .get("exports").get(0).get("can_multi_conn").asBoolean()).as("%s multi-conn at 2", kind).isTrue();
                restart(d.qmp, sock, 1);
                assertThat(Qemu.JSON.readTree(Qemu.run("nbdinfo", "--json", uri).ok().out())
                        .get("exports").get(0).get("can_multi_conn").asBoolean()).as("%s multi-conn at 1", kind).isFalse();
                Qemu.ioNbd(uri, "write -P 0x33 0 64k", "read -P 0x33 0 64k");
            }
        }
    }

    private static void restart(QmpClient qmp, Path sock, int max) throws IOException {
        qmp.ok("nbd-server-stop");
        qmp.ok("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data", Map.of("path", sock.toString())),
                "max-connections", max));
        qmp.ok("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "d", "name", "d", "writable", true));
    }

    /**
     * A client that connects and sends nothing, or only its flags, is dropped after QEMU's
     * default handshake limit of 10 s (qemu-storage-daemon 7.2 has none; later QEMU has
     * {@code handshake-max-seconds}, default 10); clients that finish their handshake stay.
     */
    @Test
    void aHandshakeNotDoneIn10SecondsIsDropped() throws Exception {
        try (StorageDaemon d = start(StorageDaemon.Kind.BLOCKJOBD);
             RawNbdClient silent = RawNbdClient.connect(nbdSocket(d));
             RawNbdClient flagsOnly = RawNbdClient.connect(nbdSocket(d));
             RawNbdClient done = RawNbdClient.open(nbdSocket(d), "d", true)) {
            long t0 = System.nanoTime();
            silent.greeting(Duration.ofSeconds(30));
            flagsOnly.greeting(Duration.ofSeconds(30));
            flagsOnly.clientFlags(FIXED_NEWSTYLE | NO_ZEROES);
            assertThat(silent.closedWithin(Duration.ofSeconds(40))).isTrue();
            assertThat(flagsOnly.closedWithin(Duration.ofSeconds(40))).isTrue();
            Duration took = Duration.ofNanos(System.nanoTime() - t0);
            assertThat(took).isGreaterThanOrEqualTo(Duration.ofSeconds(9)).isLessThan(Duration.ofSeconds(40));
            done.request(0, CMD_READ, 1, 0, 4096);
            assertThat(done.reply(4096, Duration.ofSeconds(30)).errno()).as("the negotiated client goes on").isZero();
        }
    }

    /** One probe: flags, type, offset, length (no data: writes carry 4 bytes). */
    record Probe(int flags, int type, long offset, long length) {
    }

    /**
     * Unknown command flags, out-of-range and oversized CACHE requests, and other refusals of
     * QEMU 7.2's {@code nbd_co_receive_request}, answered word for word as qemu-storage-daemon
     * answers them (structured error chunks; errno alone with simple replies); unknown client
     * flags drop the connection in both.
     */
    @Test
    void badFlagsAndRangesAreRefusedAsQemuRefusesThem() throws Exception {
        List<Probe> probes = new ArrayList<>();
        for (int type : new int[] {CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS, 99}) {
            for (int flags : new int[] {0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x8000}) {
                if (type == CMD_WRITE_ZEROES && flags == 0x10) {
                    continue; // a valid fast zero: whether the image can is not what this compares
                }
                probes.add(new Probe(flags, type, 0, type == CMD_WRITE ? 4 : type == CMD_FLUSH ? 0 : 4096));
            }
        }
        probes.addAll(List.of(new Probe(0, CMD_CACHE, 0, 4096), new Probe(0, CMD_CACHE, SIZE - 4096, 8192),
                new Probe(0, CMD_CACHE, SIZE, 0), new Probe(0, CMD_CACHE, SIZE + 1, 0), new Probe(0, CMD_CACHE, -1L, 1),
                new Probe(0, CMD_CACHE, 0, 32L * MIB + 1), new Probe(0x2, CMD_CACHE, SIZE + 1, 32L * MIB + 1),
                new Probe(0, CMD_READ, SIZE, 1), new Probe(0, CMD_READ, 0, 32L * MIB + 1), new Probe(0x4, CMD_READ, 0, 4096),
                new Probe(0, CMD_FLUSH, SIZE + 1, 0), new Probe(0x2, CMD_FLUSH, SIZE + 1, 0),
                new Probe(0, CMD_TRIM, SIZE, 1), new Probe(0, CMD_BLOCK_STATUS, SIZE, 1),
                new Probe(0, 99, 0, 0), new Probe(0, 99, SIZE + 1, 0)));
        Map<StorageDaemon.Kind, List<String>> answers = new LinkedHashMap<>();
        for (StorageDaemon.Kind kind : StorageDaemon.Kind.values()) {
            try (StorageDaemon d = start(kind)) {
                List<String> got = new ArrayList<>();
                for (boolean structured : new boolean[] {true, false}) {
                    try (RawNbdClient c = RawNbdClient.open(nbdSocket(d), "d", structured)) {
                        long cookie = 1;
                        for (Probe p : probes) {
                            byte[] data = p.type() == CMD_WRITE ? new byte[(int) p.length()] : new byte[0];
                            c.request(p.flags(), p.type(), cookie, p.offset(), p.length(), data);
                            RawNbdClient.Reply r = c.reply(p.type() == CMD_READ ? p.length() : 0, Duration.ofSeconds(30));
                            assertThat(r.cookie()).isEqualTo(cookie++);
                            got.add(p + (structured ? " structured" : " simple") + " -> errno " + r.errno()
                                    + (r.message() == null ? "" : ": " + r.message()));
                        }
                    }
                }
                for (int flags : new int[] {FIXED_NEWSTYLE | NO_ZEROES | 0x4, FIXED_NEWSTYLE | 0x80000000}) {
                    try (RawNbdClient c = RawNbdClient.connect(nbdSocket(d))) {
                        c.greeting(Duration.ofSeconds(30));
                        c.clientFlags(flags);
                        try {
                            c.option(3, new byte[0]); // NBD_OPT_LIST: never answered
                        } catch (IOException e) {
                            // already gone
                        }
                        got.add(String.format("client flags 0x%x -> closed %s", flags, c.closedWithin(Duration.ofSeconds(30))));
                    }
                }
                Qemu.ioNbd(d.nbdUri("d"), "read -P 0x11 1M 1M"); // and the daemon goes on
                answers.put(kind, got);
            }
        }
        assertThat(answers.get(StorageDaemon.Kind.BLOCKJOBD)).containsExactlyElementsOf(answers.get(StorageDaemon.Kind.QEMU));
        assertThat(answers.get(StorageDaemon.Kind.BLOCKJOBD)).contains(
                "Probe[flags=2, type=5, offset=0, length=4096] structured -> errno 22: unsupported flags for command cache (got 0x2)",
                "Probe[flags=0, type=5, offset=67104768, length=8192] structured -> errno 22: "
                        + "operation past EOF; From: 67104768, Len: 8192, Size: 67108864",
                "client flags 0x7 -> closed true");
    }

    /** Polls the daemon's log (read by another thread) for a line, with a generous bound. */
    private static void awaitLog(DaemonProcess d, String text) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (d.log().stream().noneMatch(l -> l.contains(text))) {
            assertThat(System.nanoTime()).as("log line '%s' within 30 s", text).isLessThan(deadline);
            Thread.sleep(20); // polling the log, as Awaitility would
        }
    }

    private static int freePort() throws IOException {
        for (int tries = 0; ; tries++) {
            int p;
            try (ServerSocket s = new ServerSocket(0)) {
                p = s.getLocalPort();
            }
            if (p < 65530 && free(p + 1) && free(p + 2)) {
                return p;
            }
            if (tries > 50) {
                throw new IOException("no three free ports in a row");
            }
        }
    }

    private static boolean free(int port) {
        try (ServerSocket s = new ServerSocket()) {
            s.bind(new InetSocketAddress("0.0.0.0", port));
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Whether a client at host:port gets a greeting. */
    private static boolean greets(String host, int port) {
        try (RawNbdClient c = RawNbdClient.connect(new InetSocketAddress(host, port))) {
            c.greeting(Duration.ofSeconds(5));
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** {@code --nbd-server} takes the same address options and max-connections as the QMP command. */
    @Test
    void theCommandLineServerTakesTheSameOptions() throws Exception {
        int port = freePort();
        Path sub = dir.resolve("cli");
        List<String> options = new ArrayList<>(exportOptions(sub));
        options.addAll(0, List.of("--chardev", "socket,id=mon0,path=" + sub.resolve("qmp.sock") + ",server=on,wait=off",
                "--monitor", "chardev=mon0", "--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port=" + port
                        + ",addr.to=" + (port + 2) + ",addr.ipv4=on,addr.numeric=on,max-connections=1"));
        try (ServerSocket blocker = new ServerSocket(port, 1, java.net.InetAddress.getByName("127.0.0.1"));
             DaemonProcess d = DaemonProcess.start(sub.resolve("qmp.sock"), null, options)) {
            d.awaitReady();
            String uri = "nbd://127.0.0.1:" + (port + 1) + "/d";
            assertThat(Qemu.JSON.readTree(Qemu.run("nbdinfo", "--json", uri).ok().out())
                    .get("exports").get(0).get("can_multi_conn").asBoolean()).as("multi-conn at max-connections=1").isFalse();
            Qemu.ioNbd(uri, "write -P 0x21 0 64k", "read -P 0x21 0 64k");
            assertThat(d.log()).noneMatch(l -> l.contains("not a loopback address"));
        }
    }

    /**
     * {@code nbd-server-start} with an inet address's {@code ipv4}, {@code ipv6}, {@code numeric}
     * and {@code to}: the same errors as qemu-storage-daemon's, and the same addresses answered
     * on 127.0.0.1 and ::1. A non-loopback bind is logged as the QMP monitor's is.
     */
    @Test
    void inetAddressOptionsAsQemu() throws Exception {
        int port = freePort();
        String p = Integer.toString(port);
        List<Map<String, Object>> cases = List.of(
                Map.of("host", "localhost", "port", p),
                Map.of("host", "localhost", "port", p, "ipv4", false),
                Map.of("host", "localhost", "port", p, "ipv6", false),
                Map.of("host", "localhost", "port", p, "ipv4", false, "ipv6", false),
                Map.of("host", "localhost", "port", p, "numeric", true),
                Map.of("host", "127.0.0.1", "port", p, "numeric", true),
                Map.of("host", "127.0.0.1", "port", p, "ipv6", true),
                Map.of("host", "::1", "port", p, "ipv4", true),
                Map.of("host", "::", "port", p),
                Map.of("host", "::", "port", p, "ipv4", false, "ipv6", true),
                Map.of("host", "127.0.0.1", "port", "nosuchservice"),
                Map.of("host", "127.0.0.1", "port", p, "to", port + 2),
                Map.of("host", "127.0.0.1", "port", p, "to", port));
        Map<String, List<String>> seen = new LinkedHashMap<>();
        Path qsdDir = dir.resolve("qsd");
        Path bjDir = dir.resolve("bj");
        Files.createDirectories(qsdDir);
        Files.createDirectories(bjDir);
        try (QemuStorageDaemon qsd = QemuStorageDaemon.startWithMonitor(qsdDir, List.of());
             QmpClient qsdQmp = QmpClient.connect(qsd.qmpSocket);
             DaemonProcess bj = DaemonProcess.startWithMonitor(bjDir, List.of());
             QmpClient bjQmp = QmpClient.connect(bj.qmpSocket)) {
            qsdQmp.ok("nbd-server-stop");
            bjQmp.ok("nbd-server-stop");
            for (Map<String, Object> c : cases) {
                for (QmpClient qmp : List.of(qsdQmp, bjQmp)) {
                    // The last two cases find the first port taken.
                    try (ServerSocket blocker = c.containsKey("to") ? new ServerSocket(port, 1,
                            java.net.InetAddress.getByName("127.0.0.1")) : null) {
                        JsonNode r = qmp.execute("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data", c)));
                        String outcome;
                        if (r.has("error")) {
                            outcome = "error: " + r.get("error").get("desc").asString();
                        } else {
                            List<String> answered = new ArrayList<>();
                            for (int q = port; q <= port + 2; q++) {
                                for (String host : List.of("127.0.0.1", "::1")) {
                                    if ((blocker == null || q != port) && greets(host, q)) {
                                        answered.add(host + " " + (q - port));
                                    }
                                }
                            }
                            outcome = "listens: " + answered;
                            qmp.ok("nbd-server-stop");
                        }
                        seen.computeIfAbsent(new java.util.TreeMap<>(c).toString(), k -> new ArrayList<>()).add(outcome);
                    }
                }
            }
            bjQmp.ok("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data", Map.of("host", "::", "port", p))));
            awaitLog(bj, "NBD listens on ::, which is not a loopback address");
            bjQmp.ok("nbd-server-stop");
            long warned = bj.log().stream().filter(l -> l.contains("not a loopback address")).count();
            bjQmp.ok("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data", Map.of("host", "127.0.0.1", "port", p))));
            bjQmp.ok("nbd-server-stop");
            bjQmp.ok("query-version"); // the log of the start above is out by now
            assertThat(bj.log().stream().filter(l -> l.contains("not a loopback address")).count())
                    .as("no warning for a loopback bind").isEqualTo(warned);
        }
        seen.forEach((c, outcomes) -> System.out.println(c + ": qemu-storage-daemon " + outcomes.get(0) + ", blockjobd " + outcomes.get(1)));
        seen.forEach((c, outcomes) -> assertThat(outcomes.get(1)).as("blockjobd for %s", c).isEqualTo(outcomes.get(0)));
    }
}
