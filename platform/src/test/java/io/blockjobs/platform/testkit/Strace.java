package io.blockjobs.platform.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code strace} attached to a running process and all its threads, recording some system
 * calls until it is stopped or the process ends: the host's own account of what a daemon asked
 * the kernel to do (an {@code fdatasync}, say).
 */
public final class Strace implements AutoCloseable {
    private final Process process;
    private final Path out;

    private Strace(Process process, Path out) {
        this.process = process;
        this.out = out;
    }

    /**
     * Attaches to {@code pid} and returns once strace says it is attached to every thread.
     *
     * @param syscalls strace's {@code -e trace=} list, such as {@code fsync,fdatasync}
     */
    public static Strace attach(long pid, String syscalls, Path out) throws IOException {
        List<String> cmd = List.of("strace", "-f", "-p", String.valueOf(pid), "-e", "trace=" + syscalls,
                "-o", out.toString());
        Process p;
        try {
            p = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        } catch (IOException e) {
            throw new AssertionError("cannot run strace (apt-get install strace): " + e.getMessage(), e);
        }
        BufferedReader err = new BufferedReader(new InputStreamReader(p.getErrorStream(), StandardCharsets.UTF_8));
        StringBuilder said = new StringBuilder();
        String line;
        while ((line = err.readLine()) != null) { // "strace: Process 123 attached with 25 threads"
            said.append(line).append('\n');
            if (line.contains("Process " + pid + " attached")) {
                break;
            }
        }
        if (line == null) {
            throw new AssertionError("strace could not attach to " + pid + ": " + said);
        }
        Thread.ofVirtual().start(() -> {
            try {
                err.transferTo(java.io.Writer.nullWriter());
            } catch (IOException e) {
                // strace gone
            }
        });
        return new Strace(p, out);
    }

    /** Detaches (strace leaves the process running) and waits for strace to end. */
    public void stop() throws InterruptedException {
        process.destroy(); // SIGTERM: strace detaches from every thread and exits
        if (!process.waitFor(60, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            throw new AssertionError("strace did not stop");
        }
    }

    /** Waits for strace to end by itself, which it does when the traced process has exited. */
    public void awaitEnd() throws InterruptedException {
        if (!process.waitFor(60, TimeUnit.SECONDS)) {
            throw new AssertionError("strace did not end after its process");
        }
    }

    /** The recorded calls of {@code syscall} whose first argument is one of {@code fds}. */
    public List<String> callsOn(String syscall, List<Integer> fds) throws IOException {
        Pattern p = Pattern.compile("\\b" + Pattern.quote(syscall) + "\\((\\d+)[,)]");
        List<String> calls = new ArrayList<>();
        for (String line : Files.readAllLines(out)) {
            Matcher m = p.matcher(line);
            if (m.find() && fds.contains(Integer.parseInt(m.group(1)))) {
                calls.add(line);
            }
        }
        return calls;
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            stop();
        }
    }
}
