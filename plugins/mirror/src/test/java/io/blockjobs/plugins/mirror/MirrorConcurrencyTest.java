package io.blockjobs.plugins.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.JobStatus;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.MemoryNode;
import io.blockjobs.sdk.testkit.RootEdge;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Clients writing at random (unaligned, overlapping granules, write-zeroes too) from several
 * threads while a mirror copies with a small granularity and buffer, in background mode,
 * write-blocking mode, and switched from one to the other half way: after {@code job-complete}
 * the target must read exactly as the source. In write-blocking mode each thread writes its own
 * stripe and checks, once the job is actively synced, that every write it saw complete is on
 * the target already. Seeded; the seed is in the test's name.
 */
class MirrorConcurrencyTest {
    private static final int KIB = 1024;
    private static final int SIZE = 2 * 1024 * KIB;
    private static final int THREADS = 4;

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4, 5, 6, 7, 8, 9})
    void targetEqualsSourceWhateverClientsWrite(long seed) throws Exception {
        String mode = switch ((int) (seed % 3)) {
            case 0 -> "background";
            case 1 -> "write-blocking";
            default -> "switch";
        };
        try (JobHarness harness = new JobHarness()) {
            MemoryChain chain = MemoryChain.of(SIZE, "base", "src");
            chain.node("base").random(0, SIZE / 2, seed);
            chain.node("src").random(SIZE / 4, SIZE / 4, seed + 100).zero(SIZE - 64 * KIB, 64 * KIB);
            MemoryNode target = new MemoryNode("tgt", SIZE);
            harness.add(chain).add(target);
            RootEdge client = harness.client("src");
            HarnessJob job = harness.start(MirrorJobTest.blockdevMirror(),
                    "{\"job-id\": \"m\", \"device\": \"src\", \"target\": \"tgt\", \"sync\": \"full\", \"granularity\": 4096,"
                            + " \"buf-size\": 65536, \"copy-mode\": \"" + (mode.equals("write-blocking") ? mode : "background")
                            + "\"}");
            AtomicReference<Throwable> failure = new AtomicReference<>();
            CountDownLatch half = new CountDownLatch(THREADS);
            List<Thread> writers = new ArrayList<>();
            for (int t = 0; t < THREADS; t++) {
                int stripe = t;
                SplittableRandom random = new SplittableRandom(seed * 31 + t);
                writers.add(Thread.ofVirtual().start(() -> {
                    try {
                        for (int i = 0; i < 150; i++) {
                            if (i == 75) {
                                half.countDown();
                            }
                            int length = 1 + random.nextInt(12 * KIB);
                            // each thread its own quarter, so what it wrote last is what must be there
                            int base = stripe * (SIZE / THREADS);
                            int offset = base + random.nextInt(SIZE / THREADS - length);
                            byte[] data = new byte[length];
                            if (random.nextInt(8) == 0) {
                                client.writeZeroes(offset, length, false);
                            } else {
                                random.nextBytes(data);
                                client.write(offset, ByteBuffer.wrap(data));
                            }
                            boolean synced = job.body().convergence().orElseThrow().activelySynced();
                            if (synced) {
                                assertThat(target.view(offset, length)).as("write %d of thread %d", i, stripe)
                                        .isEqualTo(data);
                            }
                        }
                    } catch (Throwable e) {
                        failure.compareAndSet(null, e);
                        half.countDown();
                    }
                }));
            }
            if (mode.equals("switch")) {
                half.await();
                job.body().change(Map.of("copy-mode", "write-blocking"));
            }
            for (Thread w : writers) {
                w.join();
            }
            if (failure.get() != null) {
                throw new AssertionError("seed " + seed + " (" + mode + ")", failure.get());
            }
            job.awaitStatus(JobStatus.READY);
            job.complete();
            HarnessJob.Outcome end = job.awaitEnd();
            assertThat(end.completed()).as(end.toString()).isTrue();
            byte[] want = chain.top().view(0, SIZE);
            byte[] got = target.view(0, SIZE);
            int first = java.util.Arrays.mismatch(want, got);
            int last = first;
            while (last + 1 < SIZE && want[last + 1] != got[last + 1]) {
                last++;
            }
            assertThat(first).as("seed %d (%s): first difference at %d..%d", seed, mode, first, last).isEqualTo(-1);
        }
    }
}
