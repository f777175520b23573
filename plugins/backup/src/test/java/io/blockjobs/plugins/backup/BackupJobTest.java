package io.blockjobs.plugins.backup;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.testkit.HarnessBitmap;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobConformanceTest;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.JobStatus;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.MemoryNode;
import io.blockjobs.sdk.testkit.RootEdge;
import io.blockjobs.sdk.testkit.Stall;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.SplittableRandom;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * {@code blockdev-backup} with the SDK's test kit: the conformance test with {@code sync: full}
 * onto a target node of the device's size (the target is the device as it was when the job
 * started, whatever the client wrote meanwhile), and what is backup's own: {@code sync: top} and
 * {@code bitmap}, {@code bitmap-mode}, copy-before-write racing the background copy, zero clusters
 * written as zeroes.
 */
class BackupJobTest extends JobConformanceTest<BackupJob.Args> {
    static final int KIB = 1 << 10;
    static final int MIB = 1 << 20;
    static final int C = 64 * KIB;
    static final long SIZE = 4L * MIB;

    @SuppressWarnings("unchecked")
    static JobCommand<BackupJob.Args> blockdevBackup() {
        return (JobCommand<BackupJob.Args>) new BackupPlugin().jobCommands().get(0);
    }

    /**
     * base: data in [0, 2 MiB); top: data in [1 MiB, 1.5 MiB) and a zero cluster at 1.75 MiB, over
     * the base's data there.
     */
    static MemoryChain twoLayers() {
        MemoryChain chain = MemoryChain.of(SIZE, "base", "top");
        chain.node("base").random(0, 2 * MIB, 1);
        chain.node("top").random(MIB, 512 * KIB, 2).zero(1792 * KIB, C);
        return chain;
    }

    /** A harness with the backup plugin, a chain and an empty target. */
    static JobHarness harness(MemoryChain chain) {
        return new JobHarness().install(new BackupPlugin()).add(chain).add(new MemoryNode("target", SIZE));
    }

    @Override
    protected JobCommand<BackupJob.Args> command() {
        return blockdevBackup();
    }

    @Override
    protected void setUpHarness(JobHarness harness) {
        harness.install(new BackupPlugin()).add(new MemoryNode("target", SIZE));
    }

    @Override
    protected MemoryChain chain() {
        return twoLayers();
    }

    @Override
    protected String arguments() {
        return "{\"job-id\": \"j\", \"device\": \"top\", \"target\": \"target\", \"sync\": \"full\"}";
    }

    @Override
    protected String errorPolicyArgument(boolean read) {
        return read ? "on-source-error" : "on-target-error";
    }

    @Override
    protected boolean writesWaitForTheJobsCopy() {
        return true;
    }

    @Override
    protected void checkResult(Run run) {
        MemoryNode target = run.memoryNode("target");
        assertThat(target.view()).as("the target is the device as it was when the job started")
                .isEqualTo(run.before().view("top"));
        assertThat(run.view("top")).as("the device has every client write").isEqualTo(run.expected());
        assertThat(target.hasUnflushedWrites()).as("the target is durable before the job completes").isFalse();
        assertThat(run.links("top")).containsExactly("top", "base");
    }

    @Override
    protected OptionalLong throttledBytes(MemoryChain chain) {
        return OptionalLong.of(SIZE); // sync full: every cluster, once
    }

    @Override
    protected Optional<FaultSite> readFault(MemoryChain chain) {
        return Optional.of(FaultSite.read("base", 300_000));
    }

    @Override
    protected Optional<FaultSite> writeFault(MemoryChain chain) {
        return Optional.of(FaultSite.write("target", 2_500_000));
    }

    // ---- backup's own ----------------------------------------------------------------------------

    private static byte[] data(int length, long seed) {
        byte[] b = new byte[length];
        new SplittableRandom(seed).nextBytes(b);
        return b;
    }

    /** Every cluster of the node, as allocated (true) or not. */
    private static List<Boolean> allocation(MemoryNode n) {
        List<Boolean> a = new ArrayList<>();
        for (long c = 0; c < SIZE; c += C) {
            a.add(n.isAllocated(c));
        }
        return a;
    }

    @Test
    void syncTopCopiesOnlyWhatTheTopLayerAllocates() {
        MemoryChain chain = twoLayers();
        try (JobHarness h = harness(chain)) {
            HarnessJob.Outcome o = h.start("blockdev-backup",
                    "{\"device\": \"top\", \"target\": \"target\", \"sync\": \"top\"}").awaitEnd();
            assertThat(o.completed()).as("completed: " + o.events()).isTrue();
            MemoryNode top = chain.top();
            MemoryNode target = (MemoryNode) h.node("target");
            assertThat(allocation(target)).as("the target allocates what the top does").isEqualTo(allocation(top));
            assertThat(target.view(MIB, 512 * KIB)).isEqualTo(top.view(MIB, 512 * KIB));
            assertThat(target.view(1792 * KIB, C)).as("the top's zero cluster").isEqualTo(new byte[C]);
            assertThat(target.view(0, MIB)).as("the base's data is not copied").isEqualTo(new byte[MIB]);
            assertThat(o.progressDone()).isEqualTo(o.progressTotal()).isEqualTo(512L * KIB + C);
        }
    }

    /**
     * {@code sync: bitmap} copies the clusters the bitmap marks and nothing else; {@code bitmap-mode}
     * says what the bitmap is afterwards. Marked before the job: clusters 5 and 40; written during
     * it: cluster 20; the target fails writes of cluster 40 when {@code fail} (one worker, so that
     * cluster 5 is copied before).
     */
    @ParameterizedTest(name = "bitmap-mode {0}, target fails {1}: the bitmap ends with clusters {2}")
    @CsvSource({
            "on-success, false, 20",
            "on-success, true, 5 20 40",
            "never, false, 5 20 40",
            "never, true, 5 20 40",
            "always, false, 20",
            "always, true, 20 40"})
    void syncBitmapCopiesOnlyTheDirtyClustersAndTheBitmapEndsPerItsMode(String mode, boolean fail, String expected)
            throws Exception {
        MemoryChain chain = twoLayers();
        try (JobHarness h = harness(chain)) {
            RootEdge guest = h.client("top");
            HarnessBitmap b = h.addBitmap("top", "b", C);
            guest.write(5L * C + 100, ByteBuffer.wrap(data(1000, 5)));
            guest.write(40L * C, ByteBuffer.wrap(data(C, 40)));
            byte[] before = chain.top().view();
            MemoryNode target = (MemoryNode) h.node("target");
            if (fail) {
                target.failWrites(40L * C, Errno.EIO);
            }
            HarnessJob job = h.prepare("blockdev-backup", "{\"device\": \"top\", \"target\": \"target\", \"sync\": \"bitmap\","
                    + " \"bitmap\": \"b\", \"bitmap-mode\": \"" + mode + "\", \"x-perf\": {\"max-workers\": 1}}");
            job.breakAt(1).start();
            job.awaitBreak();
            guest.write(20L * C, ByteBuffer.wrap(data(C, 20)));
            job.go();
            HarnessJob.Outcome o = job.awaitEnd();
            assertThat(o.completed()).as("completed: " + o.events()).isEqualTo(!fail);
            List<Long> dirty = new ArrayList<>();
            for (long c = 0; c < SIZE / C; c++) {
                if (b.isDirty(c * C)) {
                    dirty.add(c);
                }
            }
            assertThat(dirty).as("the bitmap's clusters after the job").containsExactlyElementsOf(
                    Arrays.stream(expected.split(" ")).map(Long::valueOf).toList());
            assertThat(b.busy()).isFalse();
            assertThat(b.recording()).isTrue();
            List<Boolean> copied = allocation(target);
            for (int c = 0; c < copied.size(); c++) {
                boolean wanted = c == 5 || c == 40 && !fail;
                assertThat(copied.get(c)).as("cluster " + c + " copied").isEqualTo(wanted);
            }
            assertThat(target.view(5L * C, C)).isEqualTo(Arrays.copyOfRange(before, 5 * C, 6 * C));
            if (!fail) {
                assertThat(target.view(40L * C, C)).isEqualTo(Arrays.copyOfRange(before, 40 * C, 41 * C));
            }
        }
    }

    /**
     * A client writes a cluster the background pass has not reached; copy-before-write reads its
     * old data (held there) while the pass reaches the cluster and must not copy it again: the
     * write lands only after the old data reached the target, and every cluster is copied once.
     */
    @Test
    void copyBeforeWriteSavesTheOldDataOfAWriteRacingTheBackgroundCopy() throws Exception {
        MemoryChain chain = twoLayers();
        long x = SIZE - 2L * C; // in the last chunk of the pass
        chain.top().random(x, C, 7); // data: a zero range would be saved without a read
        try (JobHarness h = harness(chain)) {
            RootEdge guest = h.client("top");
            byte[] before = chain.top().view();
            HarnessJob job = h.prepare("blockdev-backup", "{\"device\": \"top\", \"target\": \"target\", \"sync\": \"full\"}");
            job.breakAt(1).start();
            job.awaitBreak();
            Stall stall = chain.top().stallRead(x);
            byte[] mine = data(4096, 9);
            Thread writer = Thread.ofVirtual().start(() -> {
                try {
                    guest.write(x + 512, ByteBuffer.wrap(mine));
                } catch (java.io.IOException e) {
                    throw new IllegalStateException(e);
                }
            });
            stall.awaitStalled();
            job.go();
            MemoryNode target = (MemoryNode) h.node("target");
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (target.bytesWritten() < SIZE - C && System.nanoTime() < deadline) {
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1)); // the pass copies every other cluster
            }
            assertThat(target.bytesWritten()).as("the pass copied every cluster but the one being saved")
                    .isEqualTo(SIZE - C);
            assertThat(job.status()).as("the job waits for the save in flight").isEqualTo(JobStatus.RUNNING);
            assertThat(writer.isAlive()).as("the client's write waits for its old data to be saved").isTrue();
            assertThat(chain.top().view(x, C)).isEqualTo(Arrays.copyOfRange(before, (int) x, (int) x + C));
            stall.release();
            writer.join(TimeUnit.SECONDS.toMillis(30));
            assertThat(writer.isAlive()).isFalse();
            HarnessJob.Outcome o = job.awaitEnd();
            assertThat(o.completed()).as("completed: " + o.events()).isTrue();
            assertThat(target.view()).as("the target is the disk as it was").isEqualTo(before);
            assertThat(target.bytesWritten()).as("every cluster copied once").isEqualTo(SIZE);
            assertThat(chain.top().view(x + 512, 4096)).isEqualTo(mine);
        }
    }

    /**
     * {@code discard-source}: the filter discards what it copied through its own file child, which
     * takes write for it ({@code extraChildPermissions}) though nobody writes through the filter;
     * a guest writes the disk afterwards.
     */
    @Test
    void discardSourceDiscardsWhatWasCopiedThroughTheFiltersFile() throws Exception {
        MemoryChain chain = twoLayers();
        try (JobHarness h = harness(chain)) {
            byte[] before = chain.top().view();
            HarnessJob.Outcome o = h.start("blockdev-backup", "{\"device\": \"top\", \"target\": \"target\","
                    + " \"sync\": \"full\", \"discard-source\": true}").awaitEnd();
            RootEdge guest = h.client("top");
            assertThat(o.completed()).as("completed: " + o.events()).isTrue();
            assertThat(((MemoryNode) h.node("target")).view()).isEqualTo(before);
            assertThat(chain.top().view()).as("the source's copied clusters are discarded").isEqualTo(new byte[(int) SIZE]);
            guest.write(C, ByteBuffer.wrap(new byte[] {1}));
            assertThat(chain.top().view(C, 1)).containsExactly(1);
        }
    }

    /** The top's zero cluster over the base's data, and the chain's unallocated end, reach the target as write-zeroes. */
    @Test
    void aZeroClusterOfTheSourceIsWrittenAsWriteZeroes() {
        MemoryChain chain = twoLayers();
        try (JobHarness h = harness(chain)) {
            MemoryNode target = (MemoryNode) h.node("target");
            List<WriteRequest> requests = new CopyOnWriteArrayList<>();
            target.addHook(new WriteHook() {
                @Override
                public void before(WriteRequest r) {
                    requests.add(r);
                }
            });
            assertThat(h.start("blockdev-backup", "{\"device\": \"top\", \"target\": \"target\", \"sync\": \"full\"}")
                    .awaitEnd().completed()).isTrue();
            List<WriteRequest> zeroes = requests.stream().filter(r -> r.kind() == WriteRequest.Kind.WRITE_ZEROES).toList();
            assertThat(zeroes).as("write-zeroes").extracting(WriteRequest::offset)
                    .contains(1792L * KIB, 2L * MIB);
            assertThat(zeroes).as("zeroes are written, not unmapped: a target with a backing file reads zeroes there")
                    .allMatch(r -> !r.flags().contains(RequestFlag.MAY_UNMAP));
            long zeroBytes = zeroes.stream().mapToLong(WriteRequest::length).sum();
            assertThat(zeroBytes).isEqualTo(C + 2L * MIB);
            assertThat(requests).filteredOn(r -> r.kind() == WriteRequest.Kind.WRITE)
                    .as("no data write covers a zero range")
                    .noneMatch(r -> r.offset() < 1792L * KIB + C && 1792L * KIB < r.end() || r.end() > 2L * MIB);
            assertThat(target.isAllocated(1792L * KIB)).isTrue();
            assertThat(target.view()).isEqualTo(chain.top().view());
        }
    }
}
