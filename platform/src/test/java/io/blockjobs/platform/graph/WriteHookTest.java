package io.blockjobs.platform.graph;

import static io.blockjobs.platform.graph.GraphFixture.filled;
import static io.blockjobs.platform.graph.GraphFixture.pattern;
import static io.blockjobs.platform.graph.GraphFixture.read;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.GraphFixture.Events;
import io.blockjobs.platform.graph.GraphFixture.RecordingHook;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Write hooks: run in the order they were added, {@code before} ahead of the driver and
 * {@code after} behind it with the outcome; a {@code before} that throws fails the write
 * without the driver seeing it; write-zeroes and discards pass the hooks, reads and flushes
 * do not.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class WriteHookTest {
    private static final int K = 1024;

    @TempDir
    Path dir;
    GraphFixture g;
    final Events events = new Events();

    @BeforeEach
    void open() {
        g = new GraphFixture(dir);
    }

    @AfterEach
    void close() {
        g.close();
    }

    /** A hook that records what the node holds at the request's offset when it runs. */
    private WriteHook sampling(String tag, GraphNode node) {
        return new WriteHook() {
            @Override
            public void before(WriteRequest r) throws IOException {
                events.add(tag + ".before sees " + Integer.toHexString(read(node, r.offset(), 1)[0]));
            }

            @Override
            public void after(WriteRequest r, boolean ok) {
                try {
                    events.add(tag + ".after " + (ok ? "ok" : "failed") + " sees "
                            + Integer.toHexString(read(node, r.offset(), 1)[0]));
                } catch (IOException e) {
                    events.add(tag + ".after could not read: " + e.getMessage());
                }
            }
        };
    }

    @Test
    void hooksRunInTheirOrderBeforeAndAfterTheDriver() throws Exception {
        GraphNode disk = g.qcow2Node("disk", g.qcow2("disk.qcow2", 1 << 20, null), null);
        disk.write(64 * K, pattern(4 * K, 0x11));
        for (String tag : new String[] {"A", "B", "C"}) {
            disk.addHook(sampling(tag, disk));
        }
        disk.write(64 * K, pattern(4 * K, 0x22));
        assertThat(events.snapshot()).containsExactly(
                "A.before sees 11", "B.before sees 11", "C.before sees 11",
                "A.after ok sees 22", "B.after ok sees 22", "C.after ok sees 22");
    }

    @Test
    void hookAddedLaterRunsLaterAndARemovedHookNoLonger() throws Exception {
        GraphNode disk = g.qcow2Node("disk", g.qcow2("disk.qcow2", 1 << 20, null), null);
        RecordingHook first = new RecordingHook("first", events);
        disk.addHook(first);
        disk.addHook(new RecordingHook("second", events));
        disk.removeHook(first);
        disk.addHook(new RecordingHook("third", events));
        disk.write(0, pattern(512, 1));
        assertThat(events.snapshot()).containsExactly("second.before WRITE@0+512", "third.before WRITE@0+512",
                "second.after WRITE@0+512 ok", "third.after WRITE@0+512 ok");
    }

    @Test
    void beforeHookThatThrowsFailsTheWriteUnseenByTheDriver() throws Exception {
        GraphNode disk = g.qcow2Node("disk", g.qcow2("disk.qcow2", 1 << 20, null), null);
        disk.write(64 * K, pattern(4 * K, 0x11));
        g.node("f-disk").addHook(new RecordingHook("file", events)); // the qcow2 driver writes only through it
        BlockIoException refusal = new BlockIoException(Errno.ENOSPC, "the copy-before-write target is full");
        disk.addHook(new RecordingHook("A", events));
        disk.addHook(new WriteHook() {
            @Override
            public void before(WriteRequest request) throws IOException {
                events.add("B.before");
                throw refusal;
            }

            @Override
            public void after(WriteRequest request, boolean succeeded) {
                events.add("B.after");
            }
        });
        disk.addHook(new RecordingHook("C", events));
        BlockStats.Snapshot before = disk.stats().snapshot();

        assertThatThrownBy(() -> disk.write(64 * K, pattern(4 * K, 0x22))).isSameAs(refusal);

        assertThat(events.snapshot()).as("C never ran, B's after neither, and the file saw no write")
                .startsWith("A.before WRITE@65536+4096", "B.before")
                .doesNotContain("B.after")
                .noneMatch(e -> e.startsWith("C.") || e.startsWith("file."));
        assertThat(read(disk, 64 * K, 4 * K)).isEqualTo(filled(4 * K, 0x11));
        BlockStats.Snapshot after = disk.stats().snapshot();
        assertThat(after.failedWr()).isEqualTo(before.failedWr() + 1);
        assertThat(after.wrOperations()).isEqualTo(before.wrOperations());
        assertThat(after.wrBytes()).isEqualTo(before.wrBytes());
        assertThat(after.wrHighestOffset()).isEqualTo(before.wrHighestOffset());
    }

    @Test
    void afterHooksSeeTheDriversFailure() throws Exception {
        Path image = g.raw("disk.raw", 1 << 20);
        // QEMU's blkdebug: every write to the image fails with EIO; reads pass.
        GraphNode disk = g.add("""
                {"driver": "raw", "node-name": "disk",
                 "file": {"driver": "blkdebug", "node-name": "dbg",
                          "inject-error": [{"event": "pwritev", "iotype": "write", "errno": 5}],
                          "image": {"driver": "file", "node-name": "f-disk", "filename": "%s"}}}""", image);
        GraphNode dbg = g.node("dbg");
        disk.addHook(new RecordingHook("raw", events));
        dbg.addHook(new RecordingHook("blkdebug", events));
        g.node("f-disk").addHook(new RecordingHook("file", events));
        Edge user = g.export("disk", true); // a raw node forwards only what its users may do

        assertThatThrownBy(() -> user.write(4 * K, pattern(4 * K, 0x22)))
                .isInstanceOfSatisfying(BlockIoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));

        assertThat(events.snapshot()).containsExactly(
                "raw.before WRITE@4096+4096", "blkdebug.before WRITE@4096+4096",
                "blkdebug.after WRITE@4096+4096 failed", "raw.after WRITE@4096+4096 failed");
        assertThat(disk.stats().snapshot().failedWr()).isEqualTo(1);
        assertThat(dbg.stats().snapshot().failedWr()).isEqualTo(1);
        assertThat(disk.stats().snapshot().wrOperations()).isZero();
        assertThat(read(user, 4 * K, 4 * K)).isEqualTo(new byte[4 * K]);
    }

    @Test
    void hooksSeeWriteZeroesAndDiscardsButNotReadsOrFlushes() throws Exception {
        Path image = g.qcow2("disk.qcow2", 1 << 20, null);
        GraphNode disk = g.add("""
                {"driver": "qcow2", "node-name": "disk", "discard": "unmap",
                 "file": {"driver": "file", "filename": "%s"}}""", image);
        disk.addHook(new RecordingHook("hook", events));

        disk.write(0, pattern(128 * K, 0x5a));
        read(disk, 0, 64 * K);
        disk.writeZeroes(64 * K, 64 * K, Set.of(RequestFlag.MAY_UNMAP));
        disk.discard(0, 64 * K);
        disk.writeZeroes(256 * K, 4 * K, RequestFlag.NONE);
        disk.flush();
        disk.blockStatus(0, 1 << 20);

        assertThat(events.snapshot()).containsExactly(
                "hook.before WRITE@0+131072", "hook.after WRITE@0+131072 ok",
                "hook.before WRITE_ZEROES@65536+65536 [MAY_UNMAP]", "hook.after WRITE_ZEROES@65536+65536 [MAY_UNMAP] ok",
                "hook.before DISCARD@0+65536", "hook.after DISCARD@0+65536 ok",
                "hook.before WRITE_ZEROES@262144+4096", "hook.after WRITE_ZEROES@262144+4096 ok");
        assertThat(read(disk, 0, 128 * K)).isEqualTo(new byte[128 * K]);
    }

    @Test
    void withDiscardIgnoreDiscardsStopAtTheNodeAndWriteZeroesKeepTheirStorage() throws Exception {
        Path image = g.qcow2("disk.qcow2", 1 << 20, null);
        GraphNode disk = g.add("""
                {"driver": "qcow2", "node-name": "disk", "discard": "ignore",
                 "file": {"driver": "file", "filename": "%s"}}""", image);
        disk.write(0, pattern(64 * K, 0x5a));
        disk.addHook(new RecordingHook("hook", events));

        disk.discard(0, 64 * K);
        disk.writeZeroes(64 * K, 64 * K, Set.of(RequestFlag.MAY_UNMAP, RequestFlag.FUA));

        // QEMU's bdrv_co_pdiscard returns before tracking when the node lacks BDRV_O_UNMAP, and
        // bdrv_co_pwrite_zeroes drops MAY_UNMAP.
        assertThat(events.snapshot()).containsExactly(
                "hook.before WRITE_ZEROES@65536+65536 [FUA]", "hook.after WRITE_ZEROES@65536+65536 [FUA] ok");
        assertThat(read(disk, 0, 64 * K)).as("the discard was dropped").isEqualTo(filled(64 * K, 0x5a));
        assertThat(disk.stats().snapshot().unmapOperations()).as("yet accepted").isEqualTo(1);
    }

    @Test
    void detectedZeroesReachHooksAsWriteZeroes() throws Exception {
        Path image = g.qcow2("disk.qcow2", 1 << 20, null);
        GraphNode disk = g.add("""
                {"driver": "qcow2", "node-name": "disk", "detect-zeroes": "on",
                 "file": {"driver": "file", "filename": "%s"}}""", image);
        disk.addHook(new RecordingHook("hook", events));
        disk.write(0, ByteBuffer.allocate(64 * K));
        ByteBuffer almost = ByteBuffer.allocate(64 * K);
        almost.put(64 * K - 1, (byte) 1);
        disk.write(64 * K, almost);
        assertThat(events.snapshot()).containsExactly(
                "hook.before WRITE_ZEROES@0+65536", "hook.after WRITE_ZEROES@0+65536 ok",
                "hook.before WRITE@65536+65536", "hook.after WRITE@65536+65536 ok");
    }
}
