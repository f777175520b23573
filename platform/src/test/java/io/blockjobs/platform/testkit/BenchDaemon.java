package io.blockjobs.platform.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * blockjobd or qemu-storage-daemon started for a benchmark, returned once it is ready: blockjobd
 * says so in its log; qemu-storage-daemon with {@code --daemonize} returns once it is set up.
 * It reports the process's CPU time and open descriptors, read from {@code /proc}.
 */
public final class BenchDaemon implements AutoCloseable {
    /** Clock ticks per second of {@code /proc/<pid>/stat}'s times (USER_HZ, 100 on Linux). */
    private static final double TICKS = ticksPerSecond();

    /** {@code O_DIRECT} in {@code /proc/<pid>/fdinfo}'s octal {@code flags} (x86, arm64 differs). */
    public static final int O_DIRECT = 040000;

    private final ProcessHandle process;

    private BenchDaemon(ProcessHandle process) {
        this.process = process;
    }

    /** Starts {@code executable} (a blockjobd launcher or qemu-storage-daemon) with {@code args}. */
    public static BenchDaemon start(String executable, List<String> args, Path scratch) throws IOException, InterruptedException {
        return start(executable, args, scratch, Map.of());
    }

    /** As {@link #start(String, List, Path)}, with {@code env} added to the daemon's environment. */
    public static BenchDaemon start(String executable, List<String> args, Path scratch, Map<String, String> env)
            throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(executable));
        cmd.addAll(args);
        if (executable.endsWith("qemu-storage-daemon")) {
            Path pidfile = scratch.resolve("qsd.pid");
            Files.deleteIfExists(pidfile);
            cmd.addAll(List.of("--daemonize", "--pidfile", pidfile.toString()));
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
            pb.environment().putAll(env);
            Process parent = pb.start();
            String out = new String(parent.getInputStream().readAllBytes());
            if (parent.waitFor() != 0) {
                throw new IOException("qemu-storage-daemon failed: " + out);
            }
            long pid = Long.parseLong(Files.readString(pidfile).trim());
            return new BenchDaemon(ProcessHandle.of(pid).orElseThrow(() -> new IOException("qsd is gone")));
        }
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD);
        pb.environment().put("BLOCKJOBS_LOG_LEVEL", "INFO"); // its "ready" line says when it is ready
        pb.environment().putAll(env);
        Process p = pb.start();
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

    public long pid() {
        return process.pid();
    }

    /**
     * CPU time the daemon has used so far, user plus system, over all its threads
     * ({@code utime + stime} of {@code /proc/<pid>/stat}), in seconds.
     */
    public double cpuSeconds() throws IOException {
        String stat = Files.readString(Path.of("/proc", String.valueOf(pid()), "stat"));
        // Fields after the command name, which is in parentheses and may hold spaces.
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        long utime = Long.parseLong(f[11]); // field 14 of proc(5); f[0] is field 3
        long stime = Long.parseLong(f[12]);
        return (utime + stime) / TICKS;
    }

    /**
     * CPU seconds so far of each of the daemon's threads, summed by thread name with its digits
     * dropped (so a pool's threads make one entry), from {@code /proc/<pid>/task/<tid>/stat}.
     */
    public Map<String, Double> threadCpuSeconds() throws IOException {
        Map<String, Double> out = new java.util.TreeMap<>();
        try (var tasks = Files.list(Path.of("/proc", String.valueOf(pid()), "task"))) {
            for (Path task : tasks.toList()) {
                String stat;
                try {
                    stat = Files.readString(task.resolve("stat"));
                } catch (IOException e) {
                    continue; // the thread ended meanwhile
                }
                String name = stat.substring(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replaceAll("[0-9]+", "#");
                String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
                out.merge(name + " usr", Long.parseLong(f[11]) / TICKS, Double::sum);
                out.merge(name + " sys", Long.parseLong(f[12]) / TICKS, Double::sum);
            }
        }
        return out;
    }

    /** Bytes the daemon has read and written so far by system calls ({@code rchar}, {@code wchar} of {@code /proc/<pid>/io}). */
    public long[] ioBytes() throws IOException {
        long[] out = new long[2];
        for (String l : Files.readAllLines(Path.of("/proc", String.valueOf(pid()), "io"))) {
            if (l.startsWith("rchar:")) {
                out[0] = Long.parseLong(l.substring(6).trim());
            } else if (l.startsWith("wchar:")) {
                out[1] = Long.parseLong(l.substring(6).trim());
            }
        }
        return out;
    }

    /** An open descriptor of the daemon: what it points to and its open flags. */
    public record Descriptor(int fd, Path target, int flags) {
        public boolean direct() {
            return (flags & O_DIRECT) != 0;
        }
    }

    /** The daemon's open descriptors that point to {@code file}. */
    public List<Descriptor> descriptorsOf(Path file) throws IOException {
        Path real = file.toRealPath();
        List<Descriptor> out = new ArrayList<>();
        Path fds = Path.of("/proc", String.valueOf(pid()), "fd");
        try (var list = Files.list(fds)) {
            for (Path fd : list.toList()) {
                Path target;
                try {
                    target = Files.readSymbolicLink(fd);
                } catch (IOException e) {
                    continue; // closed meanwhile
                }
                if (!target.equals(real)) {
                    continue;
                }
                int n = Integer.parseInt(fd.getFileName().toString());
                for (String l : Files.readAllLines(Path.of("/proc", String.valueOf(pid()), "fdinfo", String.valueOf(n)))) {
                    if (l.startsWith("flags:")) {
                        out.add(new Descriptor(n, target, Integer.parseInt(l.substring(6).trim(), 8)));
                    }
                }
            }
        }
        return out;
    }

    private static double ticksPerSecond() {
        try {
            Process p = new ProcessBuilder("getconf", "CLK_TCK").start();
            String out = new String(p.getInputStream().readAllBytes()).trim();
            return p.waitFor() == 0 ? Double.parseDouble(out) : 100;
        } catch (IOException | RuntimeException e) {
            return 100;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return 100;
        }
    }

    @Override
    public void close() {
        process.destroy();
        process.onExit().join();
    }
}
