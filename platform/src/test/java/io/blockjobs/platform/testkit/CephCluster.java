package io.blockjobs.platform.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A single-node Ceph cluster for the tests that need RBD images: one monitor, one manager and
 * one OSD on {@code memstore}, on loopback addresses, in a temporary directory of its own, with
 * cephx keys and a {@code ceph.conf} written here (no systemd, nothing in {@code /etc/ceph}).
 * Pool {@link #POOL} has one replica. It starts the first time a test asks for it, once per
 * JVM, and is torn down when the JVM exits.
 *
 * <p>Nothing is skipped: if Ceph is missing or the cluster does not come up, {@link #get()}
 * throws with the reason and the tail of the failing daemon's log, and every test that needs
 * the cluster fails.
 */
public final class CephCluster {
    /** The pool tests create their images in. */
    public static final String POOL = "rbd";
    private static final String[] DAEMONS = {"ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "ceph-authtool", "monmaptool",
            "rbd"};
    private static CephCluster shared;
    private static AssertionError failure;

    /** The cluster's folder. */
    public final Path dir;
    /** Its configuration file: what {@code conf=} names for librados, QEMU and blockjobs. */
    public final Path conf;
    /** The monitor's messenger-v1 port on 127.0.0.1 (the one a {@code server} list names). */
    public final int monPort;
    /** How long the cluster took from nothing to a pool that takes images. */
    public volatile long startMillis;
    private final List<Process> daemons = new ArrayList<>();

    private CephCluster(Path dir, int monPort) {
        this.dir = dir;
        this.conf = dir.resolve("ceph.conf");
        this.monPort = monPort;
    }

    /** The JVM's cluster, started on first use. */
    public static synchronized CephCluster get() {
        if (failure != null) {
            throw failure; // one try per JVM: the first test's message says why
        }
        if (shared == null) {
            try {
                shared = start();
            } catch (IOException | RuntimeException e) {
                failure = new AssertionError("the single-node Ceph cluster did not start: " + e.getMessage(), e);
                throw failure;
            }
        }
        return shared;
    }

    /** QEMU's name for image {@code image} of {@link #POOL}: {@code rbd:rbd/IMAGE:conf=CONF}. */
    public String rbdName(String image) {
        return "rbd:" + POOL + "/" + image + ":conf=" + conf;
    }

    /** The admin's cephx key (base64), for a {@code secret} object. */
    public String adminKey() {
        try {
            for (String line : Files.readAllLines(dir.resolve("keyring"))) {
                if (line.strip().startsWith("key = ")) {
                    return line.strip().substring("key = ".length());
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        throw new AssertionError("no key in " + dir.resolve("keyring"));
    }

    /** Runs the {@code rbd} tool on the cluster ({@code rbd -c CONF ARGS...}). */
    public Qemu.Result rbd(String... args) {
        List<String> cmd = new ArrayList<>(List.of("rbd", "-c", conf.toString()));
        cmd.addAll(List.of(args));
        return Qemu.run(cmd.toArray(String[]::new));
    }

    private static CephCluster start() throws IOException {
        for (String tool : DAEMONS) {
            if (!onPath(tool)) {
                throw new IllegalStateException(tool + " is not installed (apt-get install ceph-mon ceph-osd ceph-mgr "
                        + "ceph-common; ./build test installs them)");
            }
        }
        long t0 = System.nanoTime();
        Path dir = Files.createTempDirectory("blockjobs-ceph");
        int v2 = freePort();
        int v1 = freePort();
        String fsid = UUID.randomUUID().toString();
        CephCluster c = new CephCluster(dir, v1);
        Runtime.getRuntime().addShutdownHook(new Thread(c::stop, "ceph-cluster-stop"));
        try {
            c.create(fsid, v1, v2);
        } catch (IOException | RuntimeException e) {
            c.stop(); // the message carries the logs' tails
            throw e;
        }
        c.startMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        return c;
    }

    private void create(String fsid, int v1, int v2) throws IOException {
        CephCluster c = this;
        String monAddr = "[v2:127.0.0.1:" + v2 + ",v1:127.0.0.1:" + v1 + "]";
        for (String sub : List.of("run", "log", "mon/mon.a", "mgr/mgr.x", "osd/osd.0")) {
            Files.createDirectories(dir.resolve(sub));
        }
        Files.writeString(c.conf, String.join("\n",
                "[global]",
                "fsid = " + fsid,
                "mon host = " + monAddr,
                "public addr = 127.0.0.1",
                "cluster addr = 127.0.0.1",
                "auth cluster required = cephx",
                "auth service required = cephx",
                "auth client required = cephx",
                "auth allow insecure global id reclaim = false",
                "run dir = " + dir.resolve("run"),
                "admin socket = " + dir.resolve("run") + "/$name.asok",
                "log file = " + dir.resolve("log") + "/$name.log",
                "mon data = " + dir.resolve("mon") + "/$name",
                "mgr data = " + dir.resolve("mgr") + "/$name",
                "osd data = " + dir.resolve("osd") + "/$name",
                "osd objectstore = memstore",
                "memstore device bytes = " + Long.getLong("blockjobs.ceph.memstore", 2L << 30), // RbdBench asks for more
                "osd pool default size = 1",
                "osd pool default min size = 1",
                "osd pool default pg autoscale mode = off",
                "osd crush chooseleaf type = 0",
                "mon allow pool size one = true",
                "mon warn on pool no redundancy = false",
                "mon allow pool delete = true",
                "mon data avail warn = 1",
                "mon data avail crit = 0",
                "[client]",
                "keyring = " + dir.resolve("keyring"),
                ""));
        // Every key is made here and known to the monitor from its first start.
        Path monKeyring = dir.resolve("mon.keyring");
        run(dir, "ceph-authtool", "--create-keyring", monKeyring.toString(), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *");
        run(dir, "ceph-authtool", "--create-keyring", dir.resolve("keyring").toString(), "--gen-key", "-n", "client.admin",
                "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *");
        run(dir, "ceph-authtool", "--create-keyring", dir.resolve("mgr/mgr.x/keyring").toString(), "--gen-key", "-n", "mgr.x",
                "--cap", "mon", "allow profile mgr", "--cap", "osd", "allow *", "--cap", "mds", "allow *");
        run(dir, "ceph-authtool", "--create-keyring", dir.resolve("osd/osd.0/keyring").toString(), "--gen-key", "-n", "osd.0",
                "--cap", "mon", "allow profile osd", "--cap", "mgr", "allow profile osd", "--cap", "osd", "allow *");
        for (String k : List.of("keyring", "mgr/mgr.x/keyring", "osd/osd.0/keyring")) {
            run(dir, "ceph-authtool", monKeyring.toString(), "--import-keyring", dir.resolve(k).toString());
        }
        run(dir, "monmaptool", "--create", "--fsid", fsid, "--addv", "a", monAddr, dir.resolve("monmap").toString());
        String confArg = c.conf.toString();
        run(dir, "ceph-mon", "-c", confArg, "--mkfs", "-i", "a", "--monmap", dir.resolve("monmap").toString(),
                "--keyring", monKeyring.toString());
        c.daemon("mon.a", "ceph-mon", "-c", confArg, "-i", "a", "-f");
        c.daemon("mgr.x", "ceph-mgr", "-c", confArg, "-i", "x", "-f");
        String osdUuid = UUID.randomUUID().toString();
        String id = run(dir, "ceph", "-c", confArg, "osd", "new", osdUuid).strip();
        if (!id.equals("0")) {
            throw new IllegalStateException("the monitor gave the OSD id '" + id + "', not 0");
        }
        run(dir, "ceph-osd", "-c", confArg, "-i", "0", "--mkfs", "--osd-uuid", osdUuid, "--no-mon-config");
        c.daemon("osd.0", "ceph-osd", "-c", confArg, "-i", "0", "-f");
        run(dir, "ceph", "-c", confArg, "osd", "pool", "create", POOL, "1", "1");
        run(dir, "rbd", "-c", confArg, "pool", "init", POOL); // returns once the OSD serves the pool
    }

    /** Starts a daemon in the foreground of its own process; its output goes to its log folder. */
    private void daemon(String name, String... cmd) throws IOException {
        Path out = dir.resolve("log").resolve(name + ".out");
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectErrorStream(true).redirectOutput(out.toFile()).start();
        daemons.add(p);
    }

    /**
     * Runs a set-up step to its end (at most 60 s) and returns its output; a failure says what
     * the step and the daemons that died said.
     */
    private static String run(Path dir, String... cmd) throws IOException {
        Path out = Files.createTempFile(dir, "step", ".out");
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectErrorStream(true).redirectOutput(out.toFile()).start();
        try {
            if (!p.waitFor(60, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IllegalStateException(String.join(" ", cmd) + " did not finish in 60 s" + logs(dir));
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted: " + String.join(" ", cmd));
        }
        String text = Files.readString(out, StandardCharsets.UTF_8);
        Files.delete(out);
        if (p.exitValue() != 0) {
            throw new IllegalStateException(String.join(" ", cmd) + " exited " + p.exitValue() + ": " + text.strip() + logs(dir));
        }
        return text;
    }

    /** The last lines of each daemon's log, for a failure message. */
    private static String logs(Path dir) {
        StringBuilder b = new StringBuilder();
        try (Stream<Path> files = Files.list(dir.resolve("log"))) {
            for (Path f : files.sorted().toList()) {
                List<String> lines = Files.readAllLines(f, StandardCharsets.ISO_8859_1);
                b.append("\n--- ").append(f).append('\n')
                        .append(String.join("\n", lines.subList(Math.max(0, lines.size() - 8), lines.size())));
            }
        } catch (IOException e) {
            b.append("\n(no logs: ").append(e.getMessage()).append(')');
        }
        return b.toString();
    }

    /** Stops the daemons (OSD and manager first, the monitor last) and removes the folder. */
    private void stop() {
        for (Process p : daemons.reversed()) {
            p.destroy();
        }
        for (Process p : daemons.reversed()) {
            try {
                if (!p.waitFor(10, TimeUnit.SECONDS)) {
                    p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        daemons.clear();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            // a daemon still writing: the folder stays in /tmp
        }
    }

    private static boolean onPath(String tool) {
        for (String d : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            if (Files.isExecutable(Path.of(d, tool))) {
                return true;
            }
        }
        return false;
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
