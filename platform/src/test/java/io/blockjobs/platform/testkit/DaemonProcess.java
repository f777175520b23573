package io.blockjobs.platform.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

/**
 * The real {@code bin/blockjobd} from the distribution, started as a process with a command
 * line like qemu-storage-daemon's. It is ready when it logs that it is.
 */
public final class DaemonProcess implements AutoCloseable {
    private final Process process;
    private final List<String> log = new CopyOnWriteArrayList<>();
    private final CompletableFuture<Boolean> ready = new CompletableFuture<>();
    private final StringBuilder stdout = new StringBuilder();
    public final Path qmpSocket;
    public final Path nbdSocket;

    private DaemonProcess(Process process, Path qmpSocket, Path nbdSocket) {
        this.process = process;
        this.qmpSocket = qmpSocket;
        this.nbdSocket = nbdSocket;
        Thread.ofVirtual().start(() -> {
            try (BufferedReader err = new BufferedReader(new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = err.readLine()) != null) {
                    log.add(line);
                    if (line.contains("blockjobd") && line.contains(" ready")) {
                        ready.complete(true);
                    }
                }
            } catch (IOException e) {
                // process gone
            }
            ready.complete(false);
        });
        Thread.ofVirtual().start(() -> {
            try {
                String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
                synchronized (stdout) {
                    stdout.append(out);
                }
            } catch (IOException e) {
                // process gone
            }
        });
    }

    /** The distribution's launcher. */
    public static Path blockjobd() {
        String dist = System.getProperty("blockjobs.dist");
        if (dist == null) {
            throw new AssertionError("system property blockjobs.dist is not set: run the *IT tests through Maven's verify");
        }
        return Path.of(dist, "bin", "blockjobd");
    }

    /** Starts the daemon with {@code args} as they are; returns once it has exited or said it is ready. */
    public static DaemonProcess start(Path qmpSocket, Path nbdSocket, List<String> args) throws IOException {
        return start(qmpSocket, nbdSocket, args, java.util.Map.of());
    }

    /** Starts the daemon with {@code args} and extra environment variables (BLOCKJOBS_JAVA_OPTS, say). */
    public static DaemonProcess start(Path qmpSocket, Path nbdSocket, List<String> args, java.util.Map<String, String> env)
            throws IOException {
        return start(List.of(), qmpSocket, nbdSocket, args, env);
    }

    /**
     * As {@link #start(Path, Path, List, java.util.Map)}, run through {@code launcher}, a command
     * that ends by executing its arguments in its own process ({@code setpriv --reuid=65534 ...}),
     * so that {@link #pid()} is the daemon's.
     */
    public static DaemonProcess start(List<String> launcher, Path qmpSocket, Path nbdSocket, List<String> args,
                                      java.util.Map<String, String> env) throws IOException {
        List<String> cmd = new ArrayList<>(launcher);
        cmd.add(blockjobd().toString());
        cmd.addAll(args);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().put("BLOCKJOBS_LOG_LEVEL", "INFO"); // its "ready" line tells the tests it is ready
        pb.environment().putAll(env);
        Process p = pb.start();
        return new DaemonProcess(p, qmpSocket, nbdSocket);
    }

    /**
     * Starts a daemon with a QMP monitor at {@code dir/qmp.sock}, an NBD server at
     * {@code dir/nbd.sock}, and then {@code extra} options.
     */
    public static DaemonProcess startWithMonitor(Path dir, List<String> extra) throws IOException {
        return startWithMonitor(dir, extra, java.util.Map.of());
    }

    /** As {@link #startWithMonitor(Path, List)}, with extra environment variables. */
    public static DaemonProcess startWithMonitor(Path dir, List<String> extra, java.util.Map<String, String> env)
            throws IOException {
        return startWithMonitor(List.of(), dir, extra, env);
    }

    /** As {@link #startWithMonitor(Path, List)}, run through {@code launcher} (see {@link #start(List, Path, Path, List, java.util.Map)}). */
    public static DaemonProcess startWithMonitor(List<String> launcher, Path dir, List<String> extra,
                                                 java.util.Map<String, String> env) throws IOException {
        Path qmp = dir.resolve("qmp.sock");
        Path nbd = dir.resolve("nbd.sock");
        List<String> args = new ArrayList<>(List.of("--chardev", "socket,id=mon0,path=" + qmp + ",server=on,wait=off",
                "--monitor", "chardev=mon0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd));
        args.addAll(extra); // options apply in order, as in QEMU: exports after the NBD server
        DaemonProcess d = start(launcher, qmp, nbd, args, env);
        d.awaitReady();
        return d;
    }

    public void awaitReady() {
        boolean ok = ready.orTimeout(60, TimeUnit.SECONDS).join();
        if (!ok) {
            throw new AssertionError("blockjobd did not start: " + String.join("\n", log));
        }
    }

    /** Waits for the process to end; returns its exit status. */
    public int awaitExit() throws InterruptedException {
        if (!process.waitFor(60, TimeUnit.SECONDS)) {
            throw new AssertionError("blockjobd did not exit");
        }
        return process.exitValue();
    }

    public List<String> log() {
        return log;
    }

    public String stdout() {
        synchronized (stdout) {
            return stdout.toString();
        }
    }

    /** SIGKILL: the daemon gets no chance to close anything. */
    public void killHard() throws InterruptedException {
        process.toHandle().destroyForcibly();
        process.waitFor();
    }

    public long pid() {
        return process.pid();
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    /** NBD URI of an export. */
    public String nbdUri(String export) {
        return "nbd+unix:///" + export + "?socket=" + nbdSocket;
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            process.destroy(); // SIGTERM: the daemon closes its images cleanly
            if (!process.waitFor(30, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        }
        for (Path p : new Path[] {qmpSocket, nbdSocket}) {
            try {
                if (p != null) {
                    Files.deleteIfExists(p);
                }
            } catch (IOException e) {
                // best effort
            }
        }
    }
}
