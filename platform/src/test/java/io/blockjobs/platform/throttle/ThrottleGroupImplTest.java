package io.blockjobs.platform.throttle;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.blockjobs.platform.throttle.ThrottleConfig.Bucket;
import io.blockjobs.sdk.driver.ThrottleGroup;
import java.io.InterruptedIOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;

/**
 * The group's scheduling (QEMU's block/throttle-groups.c) on real threads and a fake clock:
 * callers block on their own threads, timers fire when the test moves the clock, and the times
 * are QEMU's formulas.
 */
class ThrottleGroupImplTest {
    private static final long KIB = 1024;
    private static final long MIB = 1024 * KIB;

    private final FakeTimebase time = new FakeTimebase();

    private ThrottleGroupImpl group(ThrottleConfig config) {
        return new ThrottleGroupImpl("tg0", config, time);
    }

    private interface IoTask {
        void run() throws Exception;
    }

    /** Runs {@code task} on a virtual thread, as an NBD request or a job would. */
    private CompletableFuture<Void> start(IoTask task) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try {
                task.run();
                done.complete(null);
            } catch (Throwable t) {
                done.completeExceptionally(t);
            } finally {
                time.wakeUp();
            }
        });
        return done;
    }

    /** Fires timers until every task is done; returns the fake time then, in seconds. */
    private double runToEnd(List<CompletableFuture<Void>> tasks) throws Exception {
        BooleanSupplier allDone = () -> tasks.stream().allMatch(CompletableFuture::isDone);
        while (time.fireNext(allDone)) {
            // each timer lets one waiting request go
        }
        for (CompletableFuture<Void> t : tasks) {
            t.get(10, TimeUnit.SECONDS);
        }
        return time.nanoTime() / 1e9;
    }

    /**
     * Fires timers one at a time, each once the request the last one let go has recorded
     * itself, so that {@code admitted} is the order requests were admitted in.
     */
    private double runStepwise(List<?> admitted, int count) throws Exception {
        for (int k = 1; k <= count; k++) {
            assertThat(time.fireNext(() -> false)).isTrue();
            int n = k;
            awaitTrue(() -> admitted.size() >= n);
        }
        assertThat(admitted).hasSize(count);
        return time.nanoTime() / 1e9;
    }

    /** Waits for a state that another thread reaches without telling us (a request queued). */
    private static void awaitTrue(BooleanSupplier condition) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("condition not reached in 10 s");
            }
            Thread.onSpinWait();
            Thread.yield();
        }
    }

    @Test
    void oneWriterAtTheAverageRate() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.BPS_WRITE, MIB));
        ThrottleGroup.Member m = g.join("th0");
        CompletableFuture<Void> writer = start(() -> {
            for (int i = 0; i < 128; i++) {
                m.acquire(true, 64 * KIB);
            }
        });
        // QEMU: (8 MiB - 64 KiB - avg/10) / avg; measured 7.865 s through qemu-io
        assertThat(runToEnd(List.of(writer))).isCloseTo(8 - 0.0625 - 0.1, within(1e-6));
        assertThat(g.waiting(true)).isZero();
    }

    @Test
    void concurrentWritersShareTheRate() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.BPS_WRITE, MIB));
        ThrottleGroup.Member a = g.join("a");
        ThrottleGroup.Member b = g.join("b");
        List<CompletableFuture<Void>> tasks = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            ThrottleGroup.Member m = t % 2 == 0 ? a : b;
            tasks.add(start(() -> {
                for (int i = 0; i < 32; i++) {
                    m.acquire(true, 64 * KIB);
                }
            }));
        }
        // 128 requests of 64 KiB from four threads and two members, one timer: as one writer
        assertThat(runToEnd(tasks)).isCloseTo(8 - 0.0625 - 0.1, within(1e-6));
    }

    @Test
    void readsAndWritesShareTotalLimits() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.BPS_TOTAL, MIB));
        ThrottleGroup.Member a = g.join("a");
        ThrottleGroup.Member b = g.join("b");
        List<CompletableFuture<Void>> tasks = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            ThrottleGroup.Member m = t % 2 == 0 ? a : b;
            boolean write = t < 2;
            tasks.add(start(() -> {
                for (int i = 0; i < 32; i++) {
                    m.acquire(write, 64 * KIB);
                }
            }));
        }
        // Reads and writes have a timer each, as in QEMU: when both fire at once both go, so the
        // end may come one request early; over the run the rate is the total's.
        assertThat(runToEnd(tasks)).isCloseTo(8 - 0.0625 - 0.1, within(0.0625 + 1e-6));
    }

    @Test
    void requestsOfOneMemberAreAdmittedInArrivalOrder() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.OPS_WRITE, 1));
        ThrottleGroup.Member m = g.join("th0");
        m.acquire(true, 4096); // level 1 > 0.1: the next waits
        List<Integer> order = Collections.synchronizedList(new ArrayList<>());
        List<CompletableFuture<Void>> tasks = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            int id = i;
            tasks.add(start(() -> {
                m.acquire(true, 4096);
                order.add(id);
            }));
            awaitTrue(() -> g.waiting(true) == id + 1);
        }
        // one every second after the first 0.9 s
        assertThat(runStepwise(order, 5)).isCloseTo(0.9 + 4, within(1e-6));
        runToEnd(tasks);
        assertThat(order).containsExactly(0, 1, 2, 3, 4);
    }

    @Test
    void readsAndWritesQueueApart() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.BPS_WRITE, MIB));
        ThrottleGroup.Member m = g.join("th0");
        m.acquire(true, 8 * MIB);
        CompletableFuture<Void> write = start(() -> m.acquire(true, 4096));
        awaitTrue(() -> g.waiting(true) == 1);
        // a read is not held behind the waiting write
        m.acquire(false, 8 * MIB);
        m.acquire(false, 8 * MIB);
        assertThat(time.nanoTime()).isZero();
        assertThat(write).isNotDone();
        assertThat(runToEnd(List.of(write))).isCloseTo(7.9, within(1e-6));
    }

    @Test
    void membersTakeTurns() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.OPS_WRITE, 10));
        ThrottleGroup.Member a = g.join("a");
        ThrottleGroup.Member b = g.join("b");
        a.acquire(true, 1);
        a.acquire(true, 1); // level 2 > 1: everything from now on waits
        List<String> order = new CopyOnWriteArrayList<>();
        List<CompletableFuture<Void>> tasks = new ArrayList<>();
        // three requests of a queue first, then three of b
        for (int i = 0; i < 3; i++) {
            int n = i;
            tasks.add(start(() -> {
                a.acquire(true, 1);
                order.add("a" + n);
            }));
            awaitTrue(() -> g.waiting(true) == n + 1);
        }
        for (int i = 0; i < 3; i++) {
            int n = i;
            tasks.add(start(() -> {
                b.acquire(true, 1);
                order.add("b" + n);
            }));
            awaitTrue(() -> g.waiting(true) == n + 4);
        }
        assertThat(runStepwise(order, 6)).isCloseTo(0.1 * 6, within(1e-6));
        runToEnd(tasks);
        // round robin: b does not wait for all of a's queue
        assertThat(order).containsExactly("a0", "b0", "a1", "b1", "a2", "b2");
    }

    @Test
    void anInterruptedWaiterLeavesTheQueueAndTheOthersGoOn() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.OPS_READ, 1));
        ThrottleGroup.Member m = g.join("th0");
        m.acquire(false, 1);
        Thread[] first = new Thread[1];
        CompletableFuture<Void> interrupted = new CompletableFuture<>();
        first[0] = Thread.ofVirtual().start(() -> {
            try {
                m.acquire(false, 1);
                interrupted.complete(null);
            } catch (Throwable t) {
                interrupted.completeExceptionally(t);
            }
        });
        awaitTrue(() -> g.waiting(false) == 1);
        CompletableFuture<Void> second = start(() -> m.acquire(false, 1));
        awaitTrue(() -> g.waiting(false) == 2);
        first[0].interrupt();
        assertThatThrownBy(() -> interrupted.get(10, TimeUnit.SECONDS)).hasCauseInstanceOf(InterruptedIOException.class);
        assertThat(g.waiting(false)).isEqualTo(1);
        assertThat(runToEnd(List.of(second))).isCloseTo(0.9, within(1e-6));
    }

    @Test
    void membersLeaveAndTheGroupKnowsWhoUsesIt() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.OPS_WRITE, 1));
        ThrottleGroup.Member a = g.join("a");
        ThrottleGroup.Member b = g.join("b");
        assertThat(g.members()).containsExactly("b", "a");
        a.acquire(true, 1);
        // b's request waits on a timer armed for b; b leaves, and a's next request is not stuck
        CompletableFuture<Void> waiting = start(() -> b.acquire(true, 1));
        awaitTrue(() -> g.waiting(true) == 1);
        b.close();
        waiting.get(10, TimeUnit.SECONDS); // let go, unaccounted
        assertThat(g.members()).containsExactly("a");
        CompletableFuture<Void> next = start(() -> a.acquire(true, 1));
        assertThat(runToEnd(List.of(next))).isCloseTo(0.9, within(1e-6));
        a.close();
        a.close();
        assertThat(g.members()).isEmpty();
        assertThat(time.timers()).isZero();
        assertThatThrownBy(() -> a.acquire(true, 1)).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void reconfiguringEmptiesTheBuckets() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig().avg(Bucket.BPS_WRITE, MIB));
        ThrottleGroup.Member m = g.join("th0");
        m.acquire(true, 64 * MIB);
        g.reconfigure(new ThrottleConfig().avg(Bucket.BPS_WRITE, 2 * MIB));
        m.acquire(true, MIB); // no wait: the level went back to 0
        assertThat(g.config().avg(Bucket.BPS_WRITE)).isEqualTo(2 * MIB);
        assertThatThrownBy(() -> g.reconfigure(new ThrottleConfig().avg(Bucket.BPS_WRITE, 5).max(Bucket.BPS_WRITE, 1)))
                .hasMessage("bps_max/iops_max cannot be lower than bps/iops");
        assertThat(g.config().avg(Bucket.BPS_WRITE)).isEqualTo(2 * MIB);
    }

    @Test
    void withoutLimitsNothingWaits() throws Exception {
        ThrottleGroupImpl g = group(new ThrottleConfig());
        ThrottleGroup.Member m = g.join("th0");
        for (int i = 0; i < 1000; i++) {
            m.acquire(i % 2 == 0, 1 << 30);
        }
        assertThat(time.timers()).isZero();
    }
}
