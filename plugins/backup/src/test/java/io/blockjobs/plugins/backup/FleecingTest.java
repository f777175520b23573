package io.blockjobs.plugins.backup;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.testkit.HarnessJob;
import io.blockjobs.sdk.testkit.JobHarness;
import io.blockjobs.sdk.testkit.MemoryChain;
import io.blockjobs.sdk.testkit.MemoryNode;
import io.blockjobs.sdk.testkit.RootEdge;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Pull-mode backups with the SDK's test kit, as QEMU's fleecing: a {@code copy-before-write} node
 * over the disk with a scratch target, opened as {@code blockdev-add} opens it, the guest writing
 * through it, and a {@code snapshot-access} node that reads the disk as it was; and the older
 * form, {@code blockdev-backup sync: none} into an overlay of the disk.
 */
class FleecingTest {
    private static final int KIB = 1 << 10;
    private static final int MIB = 1 << 20;
    private static final int C = 64 * KIB;
    private static final long SIZE = 4L * MIB;

    /** A disk with data in [0, 3 MiB) and a zero cluster at 1.5 MiB; an empty scratch node. */
    private static JobHarness harness() {
        MemoryNode disk = new MemoryNode("disk", SIZE).random(0, 3 * MIB, 1).zero(1536 * KIB, C);
        return new JobHarness().install(new BackupPlugin()).add(disk, new MemoryNode("scratch", SIZE));
    }

    private static MemoryNode memory(JobHarness h, String name) {
        return (MemoryNode) h.node(name);
    }

    private static byte[] data(int length, long seed) {
        byte[] b = new byte[length];
        new SplittableRandom(seed).nextBytes(b);
        return b;
    }

    private static byte[] read(RootEdge edge, long offset, int length) throws Exception {
        ByteBuffer dst = ByteBuffer.allocate(length);
        edge.read(offset, dst);
        return dst.array();
    }

    /** The guest's writes: data in one cluster, data across two, zeroes, a discard. */
    private static void guestWrites(RootEdge guest) throws Exception {
        guest.write(0, ByteBuffer.wrap(data(4096, 11)));
        guest.write(MIB + 100, ByteBuffer.wrap(data(C + 1000, 12)));
        guest.writeZeroes(2L * MIB, C, Set.of(RequestFlag.MAY_UNMAP));
        guest.discard(3L * MIB - C, C);
    }

    /** The clusters the guest's writes touch. */
    private static final List<Long> TOUCHED = List.of(0L, 16L, 17L, 32L, 47L);

    private static List<Long> allocated(MemoryNode n) {
        List<Long> clusters = new ArrayList<>();
        for (long c = 0; c < SIZE / C; c++) {
            if (n.isAllocated(c * C)) {
                clusters.add(c);
            }
        }
        return clusters;
    }

    @Test
    void theSnapshotReadsTheDiskAtTheFleecingPointWhileTheGuestWrites() throws Exception {
        try (JobHarness h = harness()) {
            byte[] before = memory(h, "disk").view();
            h.open(Map.of("driver", "copy-before-write", "node-name", "cbw", "file", "disk", "target", "scratch"));
            h.open(Map.of("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
            RootEdge guest = h.client("cbw");
            RootEdge fleece = h.client("acc");
            guestWrites(guest);
            assertThat(read(fleece, 0, (int) SIZE)).as("the snapshot: the disk at the fleecing point").isEqualTo(before);
            assertThat(memory(h, "disk").view(MIB + 100, 4)).isEqualTo(Arrays.copyOf(data(C + 1000, 12), 4));
            assertThat(allocated(memory(h, "scratch"))).as("only the clusters the guest overwrote were saved")
                    .isEqualTo(TOUCHED);
            assertThatThrownBy(() -> fleece.write(C, ByteBuffer.allocate(512))).isInstanceOf(BlockIoException.class)
                    .satisfies(e -> assertThat(Errno.of((BlockIoException) e)).isEqualTo(Errno.ENOTSUP));
            fleece.discard(0, C); // the client is done with the first cluster
            assertThatThrownBy(() -> read(fleece, 0, 512)).isInstanceOf(BlockIoException.class)
                    .satisfies(e -> assertThat(Errno.of((BlockIoException) e)).isEqualTo(Errno.EACCES));
            assertThat(read(fleece, C, C)).isEqualTo(Arrays.copyOfRange(before, C, 2 * C));
            assertThat(memory(h, "scratch").view(0, C)).as("the scratch's copy of it is discarded").isEqualTo(new byte[C]);

            assertThatThrownBy(() -> h.delete("acc")).hasMessage("Node acc is in use");
            h.detach(fleece);
            assertThatThrownBy(() -> h.delete("cbw")).hasMessage("Node cbw is in use");
            h.delete("acc");
            h.detach(guest);
            assertThatThrownBy(() -> h.delete("scratch")).hasMessage("Block device scratch is in use");
            h.delete("cbw");
            assertThat(CopyBeforeWrite.lookup("cbw")).as("deleting the node closes the filter").isEmpty();
            assertThat(h.nodeNames()).containsExactlyInAnyOrder("disk", "scratch");
        }
    }

    /**
     * {@code on-cbw-error} with a scratch that fails writes: {@code break-guest-write} fails the
     * guest's write and keeps the snapshot; {@code break-snapshot} lets the write pass and breaks
     * the snapshot.
     */
    @ParameterizedTest
    @ValueSource(strings = {"break-guest-write", "break-snapshot"})
    void onCbwErrorBreaksTheGuestWriteOrTheSnapshot(String mode) throws Exception {
        try (JobHarness h = harness()) {
            byte[] before = memory(h, "disk").view();
            memory(h, "scratch").failWrites(0, Errno.EIO);
            h.open(Map.of("driver", "copy-before-write", "node-name", "cbw", "file", "disk", "target", "scratch",
                    "on-cbw-error", mode));
            h.open(Map.of("driver", "snapshot-access", "node-name", "acc", "file", "cbw"));
            RootEdge guest = h.client("cbw");
            RootEdge fleece = h.client("acc", EnumSet.of(BlockPermission.CONSISTENT_READ),
                    EnumSet.allOf(BlockPermission.class));
            byte[] mine = data(4096, 21);
            if (mode.equals("break-guest-write")) {
                assertThatThrownBy(() -> guest.write(0, ByteBuffer.wrap(mine))).isInstanceOf(BlockIoException.class);
                assertThat(memory(h, "disk").view(0, 4096)).as("the write did not land").isEqualTo(Arrays.copyOf(before, 4096));
                assertThat(read(fleece, 0, (int) SIZE)).as("the snapshot is whole").isEqualTo(before);
            } else {
                guest.write(0, ByteBuffer.wrap(mine));
                assertThat(memory(h, "disk").view(0, 4096)).isEqualTo(mine);
                assertThatThrownBy(() -> read(fleece, C, 512)).as("the snapshot is broken")
                        .isInstanceOf(BlockIoException.class)
                        .satisfies(e -> assertThat(Errno.of((BlockIoException) e)).isEqualTo(Errno.EACCES));
            }
        }
        assertThatThrownBy(() -> {
            try (JobHarness h = harness()) {
                h.open(Map.of("driver", "copy-before-write", "node-name", "cbw", "file", "disk", "target", "scratch",
                        "on-cbw-error", "sometimes"));
            }
        }).hasMessage("Parameter 'on-cbw-error' does not accept value 'sometimes'");
    }

    /**
     * Pull mode as before QEMU 6.2: {@code sync: none} into an overlay backed by the disk. The job's
     * filter goes between the disk and its users but not between the overlay and its backing disk
     * (the filter reaches the overlay: QEMU's {@code should_update_child}); the overlay reads the
     * disk as it was; the job runs until cancelled, and wakes meanwhile for the copies and every 100 ms
 * to look for a cancel, not in a spin.
     */
    @Test
    void aSyncNoneBackupIntoAnOverlayIsAFleeceAndEndsCancelled() throws Exception {
        try (JobHarness h = harness()) {
            MemoryNode disk = memory(h, "disk");
            MemoryNode overlay = new MemoryNode("fl", SIZE, disk);
            h.add(overlay);
            byte[] before = disk.view();
            RootEdge guest = h.client("disk");
            long started = System.nanoTime();
            HarnessJob job = h.start("blockdev-backup", "{\"job-id\": \"fleece\", \"device\": \"disk\", \"target\": \"fl\","
                    + " \"sync\": \"none\", \"filter-node-name\": \"cbw\"}");
            assertThat(guest.target().nodeName()).isEqualTo("cbw");
            assertThat(MemoryChain.links(overlay)).as("the overlay stays on the disk").containsExactly("fl", "disk");
            RootEdge reader = h.client("fl", EnumSet.of(BlockPermission.CONSISTENT_READ), EnumSet.allOf(BlockPermission.class));
            guestWrites(guest);
            assertThat(read(reader, 0, (int) SIZE)).as("the overlay: the disk when the job started").isEqualTo(before);
            assertThat(allocated(overlay)).isEqualTo(TOUCHED);
            h.detach(reader);
            long elapsedMillis = (System.nanoTime() - started) / 1_000_000;
            assertThat(job.pausePoints()).as("pause points in %d ms: one per wake-up (five copies, and every 100 ms)",
                    elapsedMillis).isLessThanOrEqualTo((int) (elapsedMillis / 100) + 20);
            job.cancel();
            HarnessJob.Outcome o = job.awaitEnd();
            assertThat(o.cancelled()).as("BLOCK_JOB_CANCELLED: " + o.events()).isTrue();
            assertThat(o.failure()).isNull();
            assertThat(h.filters()).isEmpty();
            assertThat(guest.target().nodeName()).isEqualTo("disk");
            assertThat(MemoryChain.links(overlay)).containsExactly("fl", "disk");
        }
    }
}
