package io.blockjobs.platform.graph;

import static io.blockjobs.platform.graph.GraphFixture.async;
import static io.blockjobs.platform.graph.GraphFixture.awaitParkedIn;
import static io.blockjobs.platform.graph.GraphFixture.filled;
import static io.blockjobs.platform.graph.GraphFixture.pattern;
import static io.blockjobs.platform.graph.GraphFixture.read;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.graph.GraphFixture.Async;
import io.blockjobs.platform.graph.GraphFixture.Events;
import io.blockjobs.platform.graph.GraphFixture.RecordingHook;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Drain: a gate on the root edges of exports that reach the drained node. While it is closed
 * their new requests wait, and beginning it waits for those in flight; jobs' own root edges go
 * on. Any thread may end it, and drains nest.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class DrainTest {
    private static final int K = 1024;
    private static final String GATE = "Edge$Gate";

    @TempDir
    Path dir;
    GraphFixture g;
    GraphNode top;
    final Events events = new Events();

    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        g.chain(1 << 20);
        top = g.node("top");
    }

    @AfterEach
    void close() {
        g.close();
    }

    @Test
    void beganOnOneThreadEndedOnAnother() throws Exception {
        Edge export = g.export("top", true);
        Async<AutoCloseable> began = async("drain begins", () -> g.graph.drain(top));
        AutoCloseable drain = began.join();

        Async<Void> write = async("export write", () -> export.write(0, pattern(4 * K, 0x21)));
        awaitParkedIn(write, GATE, "enter");
        assertThat(top.stats().snapshot().wrOperations()).isZero();

        Async<Void> ended = async("drain ends", drain::close);
        ended.join();
        assertThat(ended.thread).isNotSameAs(began.thread);
        write.join();
        assertThat(read(export, 0, 4 * K)).isEqualTo(filled(4 * K, 0x21));
    }

    @Test
    void drainingALowerNodeHoldsExportsAboveButNotJobsOrUnrelatedExports() throws Exception {
        Edge onTop = g.export("top", true);
        Edge onMid = g.export("mid", false);
        GraphNode other = g.qcow2Node("other", g.qcow2("other.qcow2", 1 << 20, null), null);
        Edge onOther = g.export("other", true);
        Edge job = g.graph.attachRoot(BlockGraph.RootUser.job("stream", "s1"), "active node", top,
                Perm.CONSISTENT_READ.bit(), Perm.ALL, false);

        try (AutoCloseable drain = g.graph.drain(g.node("base"))) {
            Async<Void> topWrite = async("top write", () -> onTop.write(0, pattern(K, 1)));
            Async<byte[]> midRead = async("mid read", () -> read(onMid, 0, K));
            awaitParkedIn(topWrite, GATE, "enter");
            awaitParkedIn(midRead, GATE, "enter");
            // A job copies inside the drain it began; an export elsewhere is none of the drain's business.
            async("job read", () -> read(job, 0, K)).join();
            async("other write", () -> onOther.write(0, pattern(K, 2))).join();
            assertThat(read(other, 0, K)).isEqualTo(filled(K, 2));
            awaitParkedIn(topWrite, GATE, "enter"); // still held
            drain.close();
            topWrite.join();
            midRead.join();
        }
        assertThat(read(onTop, 0, K)).isEqualTo(filled(K, 1));
    }

    @Test
    void beginningWaitsForRequestsInFlight() throws Exception {
        Edge export = g.export("top", true);
        RecordingHook holder = new RecordingHook("hook", events, r -> r.offset() == 0);
        top.addHook(holder);
        Async<Void> inFlight = async("in flight", () -> export.write(0, pattern(4 * K, 0x31)));
        holder.awaitHeld();

        Async<AutoCloseable> draining = async("drain", () -> {
            AutoCloseable d = g.graph.drain(top);
            events.add("drained");
            return d;
        });
        awaitParkedIn(draining, GATE, "awaitIdle");
        Async<Void> newer = async("newer", () -> export.write(64 * K, pattern(4 * K, 0x32)));
        awaitParkedIn(newer, GATE, "enter");

        holder.release();
        inFlight.join();
        AutoCloseable drain = draining.join();
        assertThat(events.snapshot()).containsExactly("hook.before WRITE@0+4096", "hook.after WRITE@0+4096 ok",
                "drained");
        awaitParkedIn(newer, GATE, "enter");

        drain.close();
        newer.join();
        assertThat(events.snapshot()).endsWith("hook.before WRITE@65536+4096", "hook.after WRITE@65536+4096 ok");
    }

    @Test
    void drainsNest() throws Exception {
        Edge export = g.export("top", true);
        AutoCloseable outer = g.graph.drain(top);
        AutoCloseable inner = g.graph.drain(g.node("mid"));
        Async<byte[]> read = async("read", () -> read(export, 0, K));
        awaitParkedIn(read, GATE, "enter");

        outer.close();
        outer.close(); // ending one drain twice does not end the other
        awaitParkedIn(read, GATE, "enter");
        assertThat(read.isDone()).isFalse();

        async("inner ends", inner::close).join();
        assertThat(read.join()).hasSize(K);
    }

    @Test
    void anExportAddedDuringADrainIsHeldToo() throws Exception {
        AutoCloseable drain = g.graph.drain(g.node("mid"));
        Edge late = g.export("top", true); // QEMU quiesces a user attached to a drained node
        Async<Void> write = async("late write", () -> late.write(0, pattern(K, 0x41)));
        awaitParkedIn(write, GATE, "enter");
        drain.close();
        write.join();
        Edge after = g.export("top", false);
        assertThat(async("after the drain", () -> read(after, 0, K)).join()).isEqualTo(filled(K, 0x41));
    }
}
