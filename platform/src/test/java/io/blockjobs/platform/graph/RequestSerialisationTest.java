package io.blockjobs.platform.graph;

import static io.blockjobs.platform.graph.GraphFixture.async;
import static io.blockjobs.platform.graph.GraphFixture.awaitParkedIn;
import static io.blockjobs.platform.graph.GraphFixture.filled;
import static io.blockjobs.platform.graph.GraphFixture.pattern;
import static io.blockjobs.platform.graph.GraphFixture.read;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.GraphFixture.Async;
import io.blockjobs.platform.graph.GraphFixture.Events;
import io.blockjobs.platform.graph.GraphFixture.RecordingHook;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Tracked requests (QEMU's {@code bdrv_make_request_serialising}): a serialising range holds
 * overlapping requests off until it is closed and waits for the overlapping requests older than
 * itself; requests elsewhere go on; I/O through the range itself never waits for it. A request's
 * wait happens before the node's write hooks, so a hook that has not run proves the request is
 * still waiting.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class RequestSerialisationTest {
    private static final int K = 1024;

    @TempDir
    Path dir;
    GraphFixture g;
    GraphNode disk;
    final Events events = new Events();

    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        disk = g.qcow2Node("disk", g.qcow2("disk.qcow2", 1 << 20, null), null);
        disk.write(0, pattern(256 * K, 0x11));
    }

    @AfterEach
    void close() {
        g.close();
    }

    @Test
    void writeOverlappingAHeldRangeWaitsUntilItIsClosed() throws Exception {
        disk.addHook(new RecordingHook("hook", events));
        SerialisedRange range = disk.serialise(64 * K, 64 * K);
        Async<Void> writer = async("writer", () -> disk.write(124 * K, pattern(8 * K, 0x22)));

        awaitParkedIn(writer, "RequestTracker", "begin");
        assertThat(events.snapshot()).as("the write has not reached the hooks").isEmpty();
        ByteBuffer inside = ByteBuffer.allocate(4 * K);
        range.read(124 * K, inside);
        assertThat(inside.array()).as("nor the image").isEqualTo(filled(4 * K, 0x11));

        events.add("range closed");
        range.close();
        writer.join();
        assertThat(events.snapshot()).containsExactly("range closed", "hook.before WRITE@126976+8192",
                "hook.after WRITE@126976+8192 ok");
        assertThat(read(disk, 124 * K, 8 * K)).isEqualTo(filled(8 * K, 0x22));
    }

    @Test
    void readOverlappingAHeldRangeWaitsToo() throws Exception {
        SerialisedRange range = disk.serialise(64 * K, 64 * K);
        Async<byte[]> reader = async("reader", () -> read(disk, 127 * K, 2 * K));
        awaitParkedIn(reader, "RequestTracker", "begin");
        range.write(127 * K, pattern(K, 0x33), RequestFlag.NONE); // lands before the reader reads
        range.close();
        byte[] got = reader.join();
        assertThat(got).startsWith(filled(K, 0x33)).endsWith(filled(K, 0x11));
    }

    @Test
    void requestsBesideAHeldRangeDoNotWait() throws Exception {
        disk.addHook(new RecordingHook("hook", events));
        try (SerialisedRange range = disk.serialise(64 * K, 64 * K)) {
            // Touching both ends of the range, not overlapping it.
            async("before", () -> disk.write(60 * K, pattern(4 * K, 0x44))).join();
            async("after", () -> disk.write(128 * K, pattern(4 * K, 0x55))).join();
            async("zeroes", () -> disk.writeZeroes(192 * K, 64 * K, false)).join();
            assertThat(async("read", () -> read(disk, 0, 64 * K)).join()).endsWith(filled(4 * K, 0x44));
            assertThat(range.length()).isEqualTo(64 * K);
        }
        assertThat(events.snapshot()).containsExactly(
                "hook.before WRITE@61440+4096", "hook.after WRITE@61440+4096 ok",
                "hook.before WRITE@131072+4096", "hook.after WRITE@131072+4096 ok",
                "hook.before WRITE_ZEROES@196608+65536", "hook.after WRITE_ZEROES@196608+65536 ok");
    }

    @Test
    void serialisingRequestWaitsForAnOlderOverlappingRequestAndHoldsNewerOnesOff() throws Exception {
        RecordingHook holder = new RecordingHook("hook", events, r -> r.offset() == 64 * K);
        disk.addHook(holder);
        Async<Void> older = async("older", () -> disk.write(64 * K, pattern(4 * K, 0x66)));
        holder.awaitHeld(); // in flight: tracked, inside its hook

        Async<SerialisedRange> serialising = async("serialising", () -> disk.serialise(60 * K, 8 * K));
        awaitParkedIn(serialising, "RequestTracker", "begin");
        // A newer request that overlaps the waiting serialising one (not the older write) waits behind it.
        Async<Void> newer = async("newer", () -> disk.write(60 * K, pattern(K, 0x77)));
        awaitParkedIn(newer, "RequestTracker", "begin");
        assertThat(events.snapshot()).containsExactly("hook.before WRITE@65536+4096");

        holder.release();
        older.join();
        SerialisedRange range = serialising.join();
        // The range shows the older write's data, and the newer write is still held off.
        assertThat(range.offset()).isEqualTo(60 * K);
        ByteBuffer seen = ByteBuffer.allocate(8 * K);
        range.read(60 * K, seen);
        assertThat(seen.array()).startsWith(filled(4 * K, 0x11)).endsWith(filled(4 * K, 0x66));
        awaitParkedIn(newer, "RequestTracker", "begin");
        assertThat(events.snapshot()).containsExactly("hook.before WRITE@65536+4096",
                "hook.after WRITE@65536+4096 ok");

        range.close();
        newer.join();
        assertThat(events.snapshot()).endsWith("hook.before WRITE@61440+1024", "hook.after WRITE@61440+1024 ok");
        assertThat(read(disk, 60 * K, K)).isEqualTo(filled(K, 0x77));
    }

    @Test
    void serialisingRequestsOverlappingEachOtherTakeTurns() throws Exception {
        SerialisedRange first = disk.serialise(0, 64 * K);
        Async<SerialisedRange> second = async("second", () -> disk.serialise(32 * K, 64 * K));
        awaitParkedIn(second, "RequestTracker", "begin");
        first.write(32 * K, pattern(K, 0x12), RequestFlag.NONE);
        first.close();
        try (SerialisedRange r = second.join()) {
            ByteBuffer b = ByteBuffer.allocate(K);
            r.read(32 * K, b);
            assertThat(b.array()).isEqualTo(filled(K, 0x12));
        }
    }

    @Test
    void ioThroughTheRangeItselfDoesNotWaitForIt() throws Exception {
        disk.addHook(new RecordingHook("hook", events));
        SerialisedRange range = disk.serialise(64 * K, 64 * K);
        // On another thread, so that a deadlock fails the test instead of hanging it.
        async("inside", () -> {
            range.write(64 * K, pattern(4 * K, 0x88), RequestFlag.NONE);
            range.write(120 * K, pattern(8 * K, 0x99), RequestFlag.NONE);
            ByteBuffer b = ByteBuffer.allocate(64 * K);
            range.read(64 * K, b);
            assertThat(b.array()).startsWith(filled(4 * K, 0x88)).endsWith(filled(8 * K, 0x99));
        }).join();
        // The range's writes are writes of the node: its hooks saw them.
        assertThat(events.snapshot()).containsExactly(
                "hook.before WRITE@65536+4096", "hook.after WRITE@65536+4096 ok",
                "hook.before WRITE@122880+8192", "hook.after WRITE@122880+8192 ok");

        assertThatThrownBy(() -> range.write(126 * K, pattern(4 * K, 0), RequestFlag.NONE))
                .isInstanceOfSatisfying(BlockIoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL))
                .hasMessageContaining("outside the serialised range [65536, +65536)");
        assertThatThrownBy(() -> range.read(60 * K, ByteBuffer.allocate(8 * K)))
                .isInstanceOfSatisfying(BlockIoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));

        range.close();
        range.close(); // once is enough; twice is harmless
        async("after close", () -> disk.write(64 * K, pattern(K, 0x10))).join();
        assertThat(disk.requestsInFlight()).isZero();
    }
}
