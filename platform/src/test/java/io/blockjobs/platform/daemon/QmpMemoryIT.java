package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.ProcessMemory;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * A monitor costs the daemon bounded memory whatever its client does: one that never reads its
 * socket while events flow is disconnected (with a warning naming it) instead of having its
 * output kept, and idle monitors cost little. Meanwhile another monitor is answered promptly.
 */
class QmpMemoryIT {

    /** Output the daemon lets wait for one monitor before it disconnects it (QmpServer's bound). */
    private static final long MAX_QUEUED = 8 << 20;
    /** Growth of the daemon's heap after GC that the tests allow, whatever the abuse. */
    private static final long HEAP_GROWTH_LIMIT = 48L << 20;
    /** Growth of its RSS allowed: mostly the JVM's heap sizing, since the flood makes garbage. */
    private static final long RSS_GROWTH_LIMIT = 256L << 20;
    /** A query to a monitor that behaves must be answered within this, however busy the daemon (shared machine). */
    private static final Duration VICTIM_BOUND = Duration.ofSeconds(5);

    @TempDir
    Path dir;

    /** A raw connection that negotiates capabilities and then never reads what it is sent. */
    private static SocketChannel neverReading(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(socket));
        write(ch, "{\"execute\":\"qmp_capabilities\"}\n");
        return ch;
    }

    private static void write(SocketChannel ch, String text) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(text.getBytes(StandardCharsets.US_ASCII));
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Reads what waits on {@code ch} up to its end; returns how many bytes came. */
    private static long drainToEnd(SocketChannel ch) throws Exception {
        return CompletableFuture.supplyAsync(() -> {
            long total = 0;
            ByteBuffer b = ByteBuffer.allocate(1 << 16);
            try {
                int n;
                while ((n = ch.read(b.clear())) >= 0) {
                    total += n;
                }
            } catch (IOException e) {
                // reset by the daemon: the end too
            }
            return total;
        }).get(120, TimeUnit.SECONDS);
    }

    /** Asks {@code c} the version again and again until {@code stop}; returns the slowest answer. */
    private static CompletableFuture<Duration> keepAsking(QmpClient c, AtomicBoolean stop, AtomicLong answers) {
        return CompletableFuture.supplyAsync(() -> {
            Duration slowest = Duration.ZERO;
            try {
                while (!stop.get()) {
                    long t0 = System.nanoTime();
                    c.ok("query-version");
                    Duration took = Duration.ofNanos(System.nanoTime() - t0);
                    slowest = took.compareTo(slowest) > 0 ? took : slowest;
                    answers.incrementAndGet();
                    Thread.sleep(20); // pacing, not synchronisation
                }
            } catch (Exception e) {
                throw new AssertionError(e);
            }
            return slowest;
        });
    }

    @Test
    void aMonitorThatNeverReadsIsDisconnectedNotBuffered() throws Exception {
        Path script = dir.resolve("chatty.js");
        // 10,000 lines of 2,000 bytes: 20 MB of WORKFLOW_LOG events for every monitor, per run,
        // at about 4 MB/s: a monitor that never reads passes the 8 MiB bound within seconds,
        // while one that reads, even on a loaded machine that pauses it, keeps up (unpaced, a run
        // makes 20 MB in a second, and a reader paused for a while would be 8 MiB behind).
        Files.writeString(script, """
                export default async function (bj, args) {
                  const line = 'x'.repeat(2000);
                  for (let i = 0; i < 10000; i++) {
                    bj.log(line);
                    if (i % 10 === 9) {
                      await bj.sleep(5);
                    }
                  }
                  return 'said it all';
                }
                """);
        try (DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of());
             QmpClient victim = QmpClient.connect(d.qmpSocket)) {
            ProcessMemory.Sample before = ProcessMemory.of(d.pid());
            SocketChannel deaf1 = neverReading(d.qmpSocket);
            SocketChannel deaf2 = neverReading(d.qmpSocket);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong answers = new AtomicLong();
            QmpClient asker = QmpClient.connect(d.qmpSocket);
            CompletableFuture<Duration> slowest = keepAsking(asker, stop, answers);

            List<String> runs = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                runs.add(victim.ok("workflow-run", Map.of("script", script.toString())).get("id").asString());
            }
            // The two runs end in either order.
            for (JsonNode done : victim.awaitEach("WORKFLOW_FINISHED", "id", runs, Duration.ofMinutes(5)).values()) {
                assertThat(done.at("/data/result").asString()).isEqualTo("said it all");
            }
            stop.set(true);
            assertThat(slowest.get(60, TimeUnit.SECONDS)).as("slowest answer to a monitor that reads").isLessThan(VICTIM_BOUND);
            assertThat(answers.get()).as("answers during the flood").isGreaterThan(5);
            ProcessMemory.Sample after = ProcessMemory.of(d.pid());
            System.out.printf("never-reading monitors: %s before, %s after; slowest victim answer %s over %d answers%n",
                    before, after, slowest.get(), answers.get());

            assertThat(d.log().stream().filter(l -> l.contains("WARN") && l.contains("QMP monitor mon0 (" + d.qmpSocket + ")")
                    && l.contains("disconnected: it does not read its socket"))).as("warnings naming the monitor").hasSize(2);
            assertThat(after.heapAfterGc() - before.heapAfterGc()).as("heap growth: before %s, after %s", before, after)
                    .isLessThan(HEAP_GROWTH_LIMIT);
            assertThat(after.rss() - before.rss()).as("RSS growth: before %s, after %s", before, after)
                    .isLessThan(RSS_GROWTH_LIMIT);
            // Each deaf monitor was cut off: what it can still read is bounded, then the end.
            for (SocketChannel deaf : List.of(deaf1, deaf2)) {
                long got = drainToEnd(deaf);
                assertThat(got).as("bytes a deaf monitor still got").isLessThan(MAX_QUEUED + (4 << 20));
                deaf.close();
            }
            // The monitor that reads got every line of both runs.
            long lines = victim.seenEvents().stream().filter(e -> e.get("event").asString().equals("WORKFLOW_LOG")).count();
            assertThat(lines).isEqualTo(20_000);
            asker.close();
        }
    }

    @Test
    void idleMonitorsCostBoundedMemory() throws Exception {
        try (DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of());
             QmpClient victim = QmpClient.connect(d.qmpSocket)) {
            ProcessMemory.Sample before = ProcessMemory.of(d.pid());
            List<SocketChannel> idle = new ArrayList<>();
            for (int i = 0; i < 400; i++) {
                idle.add(neverReading(d.qmpSocket));
            }
            // Twenty more stop in the middle of a 900 KiB message: each holds at most one message's bytes.
            String partial = "{\"execute\":\"query-version\",\"id\":\"" + "y".repeat(900 << 10);
            for (int i = 0; i < 20; i++) {
                SocketChannel ch = neverReading(d.qmpSocket);
                write(ch, partial);
                idle.add(ch);
            }
            long t0 = System.nanoTime();
            assertThat(victim.ok("query-version").has("qemu")).isTrue();
            assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(VICTIM_BOUND);
            ProcessMemory.Sample during = ProcessMemory.of(d.pid());
            long perIdle = 32 << 10;
            long perPartial = 2 << 20;
            assertThat(during.heapAfterGc() - before.heapAfterGc()).as("heap: before %s, with 420 idle monitors %s", before, during)
                    .isLessThan(400 * perIdle + 20 * perPartial);
            assertThat(during.rss() - before.rss()).as("RSS: before %s, with 420 idle monitors %s", before, during)
                    .isLessThan(400 * perIdle + 20 * perPartial + (64L << 20));
            for (SocketChannel ch : idle) {
                ch.close();
            }
            System.out.printf("idle monitors: %s before, %s with 420 idle monitors%n", before, during);
        }
    }
}
