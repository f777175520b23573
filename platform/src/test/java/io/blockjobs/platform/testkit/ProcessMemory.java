package io.blockjobs.platform.testkit;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A daemon's memory, as a test measures it before and after abuse: the Java heap in use after
 * a full GC (through {@code jcmd}, so garbage does not count) and the resident set size.
 */
public final class ProcessMemory {
    private static final Pattern USED = Pattern.compile("used (\\d+)K");

    private ProcessMemory() {
    }

    /** One measurement, in bytes. */
    public record Sample(long heapAfterGc, long rss) {
        @Override
        public String toString() {
            return "heap after GC " + (heapAfterGc >> 20) + " MiB, RSS " + (rss >> 20) + " MiB";
        }
    }

    /** Runs a full GC in the JVM {@code pid}, then measures it. */
    public static Sample of(long pid) throws IOException, InterruptedException {
        jcmd(pid, "GC.run");
        String info = jcmd(pid, "GC.heap_info");
        Matcher m = USED.matcher(info);
        if (!m.find()) {
            throw new AssertionError("no heap use in jcmd GC.heap_info: " + info);
        }
        long heap = Long.parseLong(m.group(1)) << 10;
        return new Sample(heap, rss(pid));
    }

    /** The resident set size of any process, from /proc. */
    public static long rss(long pid) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc", String.valueOf(pid), "status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("\\D", "")) << 10;
            }
        }
        throw new AssertionError("no VmRSS for " + pid);
    }

    private static String jcmd(long pid, String command) throws IOException, InterruptedException {
        Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
        Process p = new ProcessBuilder(jcmd.toString(), String.valueOf(pid), command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError("jcmd " + pid + " " + command + " failed: " + out);
        }
        return out;
    }
}
