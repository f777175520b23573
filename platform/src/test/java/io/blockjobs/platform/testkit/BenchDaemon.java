package io.blockjobs.platform.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * blockjobd or qemu-storage-daemon started for a benchmark, returned once it is ready: blockjobd
 * says so in its log; qemu-storage-daemon with {@code --daemonize} returns once it is set up.
 */
public final class BenchDaemon implements AutoCloseable {
    private final ProcessHandle process;

    private BenchDaemon(ProcessHandle process) {
        this.process = process;
    }

    /** Starts {@code executable} (a blockjobd launcher or qemu-storage-daemon) with {@code args}. */
    public static BenchDaemon start(String executable, List<String> args, Path scratch) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(executable));
        cmd.addAll(args);
        if (executable.endsWith("qemu-storage-daemon")) {
            Path pidfile = scratch.resolve("qsd.pid");
            Files.deleteIfExists(pidfile);
            cmd.addAll(List.of("--daemonize", "--pidfile", pidfile.toString()));
            Process parent = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            String out = new String(parent.getInputStream().readAllBytes());
            if (parent.waitFor() != 0) {
                throw new IOException("qemu-storage-daemon failed: " + out);
            }
            long pid = Long.parseLong(Files.readString(pidfile).trim());
            return new BenchDaemon(ProcessHandle.of(pid).orElseThrow(() -> new IOException("qsd is gone")));
        }
        Process p = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        BufferedReader log = new BufferedReader(new InputStreamReader(p.getErrorStream()));
        String line;
        while ((line = log.readLine()) != null && !line.contains(" ready")) {
            // blockjobd logs that it is ready once everything listens
        }
        if (line == null) {
            throw new IOException("blockjobd exited before it was ready");
        }
        Thread.ofVirtual().start(() -> log.lines().forEach(l -> { }));
        return new BenchDaemon(p.toHandle());
    }

    @Override
    public void close() {
        process.destroy();
        process.onExit().join();
    }
}
