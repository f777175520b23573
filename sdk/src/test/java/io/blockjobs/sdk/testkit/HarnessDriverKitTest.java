package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.FilterSpec;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Test;

/** The harness opens the block drivers a plugin contributes as the platform does: a job's filters, and blockdev-add. */
class HarnessDriverKitTest {
    private static final int C = MemoryNode.DEFAULT_CLUSTER_SIZE;

    /** A driver that forwards to {@code child} and records how it was opened, written and closed. */
    static final class Forwarding implements BlockDriver {
        final String name;
        final String childKey;
        final ChildRole role;
        final List<String> seen = new CopyOnWriteArrayList<>();

        Forwarding(String name, String childKey, ChildRole role) {
            this.name = name;
            this.childKey = childKey;
            this.role = role;
        }

        @Override
        public String name() {
            return name;
        }

        @Override
        public DriverNode open(DriverContext ctx) {
            String tag = ctx.options().optString("tag");
            String obj = ctx.options().optString("object");
            String found = obj == null ? null : ctx.object(obj, String.class);
            BlockNode child = ctx.child(childKey, role);
            seen.add("open " + ctx.nodeName() + " tag=" + tag + " " + childKey + "=" + child.nodeName() + " read-only="
                    + ctx.readOnly() + (found == null ? "" : " object=" + found));
            return new Node(this, ctx.nodeName(), child);
        }

        /** The open node: a filter when its child is {@code FILTERED}. */
        static final class Node implements DriverNode {
            private final Forwarding driver;
            private final String name;
            private final BlockNode child;

            Node(Forwarding driver, String name, BlockNode child) {
                this.driver = driver;
                this.name = name;
                this.child = child;
            }

            @Override
            public Optional<String> filteredChild() {
                return driver.role == ChildRole.FILTERED ? Optional.of(driver.childKey) : Optional.empty();
            }

            @Override
            public String driver() {
                return driver.name;
            }

            @Override
            public String filename() {
                return child.filename();
            }

            @Override
            public long size() throws IOException {
                return child.size();
            }

            @Override
            public boolean isReadOnly() {
                return child.isReadOnly();
            }

            @Override
            public void read(long offset, ByteBuffer dst) throws IOException {
                child.read(offset, dst);
            }

            @Override
            public void write(long offset, ByteBuffer src) throws IOException {
                driver.seen.add(name + " write " + offset + "+" + src.remaining());
                child.write(offset, src);
            }

            @Override
            public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
                child.writeZeroes(offset, length, mayUnmap);
            }

            @Override
            public void discard(long offset, long length) throws IOException {
                child.discard(offset, length);
            }

            @Override
            public void flush() throws IOException {
                child.flush();
            }

            @Override
            public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
                return child.blockStatus(offset, maxLength);
            }

            @Override
            public void close() {
                driver.seen.add("close " + name);
            }
        }
    }

    /** A job that puts a filter of the driver named by {@code target} above its device and waits at three pause points. */
    static final JobCommand<JobHarnessKitTest.Args> FILTERING = new JobCommand<>("x-test-filtering", "x-test-filtering",
            JobHarnessKitTest.Args.class, (a, setup) -> {
                List<String> hooked = new CopyOnWriteArrayList<>();
                WriteHook hook = new WriteHook() {
                    @Override
                    public void before(WriteRequest r) {
                        hooked.add("hook " + r.offset());
                    }
                };
                Map<String, Object> options = a.exclusive().orElse(false) ? Map.of("tag", "t1", "bogus", 1)
                        : Map.of("tag", "t1");
                BlockNode filter = setup.insertFilter(a.device(), new FilterSpec(a.target(), "flt", options, List.of(hook)));
                setup.use(a.device(), "source", EnumSet.noneOf(BlockPermission.class), EnumSet.allOf(BlockPermission.class));
                JobHarnessKitTest.SEEN.set(hooked);
                return ctx -> {
                    for (int i = 0; i < 3; i++) {
                        ctx.pausePoint();
                    }
                    filter.flush();
                };
            });

    private static JobHarness harness(Forwarding... drivers) {
        MemoryNode base = new MemoryNode("base", 16L * C).random(0, 16L * C, 1).readOnly();
        MemoryNode top = new MemoryNode("top", 16L * C, base);
        return new JobHarness().register(drivers).add(top);
    }

    @Test
    void aJobsFilterOfARegisteredDriverOpensOverTheNodeAndClosesWhenTheJobEnds() throws Exception {
        Forwarding drv = new Forwarding("x-fwd", "file", ChildRole.FILTERED);
        try (JobHarness h = harness(drv)) {
            RootEdge client = h.client("top");
            HarnessJob job = h.prepare(FILTERING, "{\"device\": \"top\", \"target\": \"x-fwd\"}").breakAt(2).start();
            job.awaitBreak();
            assertThat(drv.seen).containsExactly("open flt tag=t1 file=top read-only=false");
            assertThat(h.filters()).containsExactly("flt");
            assertThat(h.node("flt").driver()).isEqualTo("x-fwd");
            assertThat(client.target().nodeName()).as("the client goes through the filter").isEqualTo("flt");
            assertThat(MemoryChain.links(client.target())).as("chains are walked through it").containsExactly("top", "base");
            client.write(C, ByteBuffer.wrap(new byte[] {5, 6}));
            assertThat(JobHarnessKitTest.SEEN.get()).as("the job's hooks run on the driver's node").containsExactly("hook " + C);
            job.go();
            assertThat(job.awaitEnd().completed()).isTrue();
            assertThat(drv.seen).containsExactly("open flt tag=t1 file=top read-only=false", "flt write " + C + "+2",
                    "close flt");
            assertThat(h.filters()).isEmpty();
            assertThat(h.nodeNames()).containsExactlyInAnyOrder("top", "base");
            assertThat(client.target().nodeName()).isEqualTo("top");
            assertThat(((MemoryNode) h.node("top")).view(C, 2)).containsExactly(5, 6);
        }
    }

    @Test
    void aFilterThatCannotOpenOrIsNoFilterLeavesNothingBehind() {
        Forwarding filter = new Forwarding("x-fwd", "file", ChildRole.FILTERED);
        Forwarding data = new Forwarding("x-cow", "file", ChildRole.COW);
        try (JobHarness h = harness(filter, data)) {
            RootEdge client = h.client("top");
            assertThatThrownBy(() -> h.prepare(FILTERING, "{\"device\": \"top\", \"target\": \"x-fwd\", \"exclusive\": true}"))
                    .isInstanceOf(CommandException.class).hasMessage("Parameter 'bogus' is unexpected");
            assertThat(filter.seen).as("opened, then refused for a member it did not read, and closed")
                    .containsExactly("open flt tag=t1 file=top read-only=false", "close flt");
            assertThatThrownBy(() -> h.prepare(FILTERING, "{\"device\": \"top\", \"target\": \"x-cow\"}"))
                    .hasMessage("'x-cow' is not a filter driver");
            assertThat(data.seen).hasSize(2).last().isEqualTo("close flt");
            assertThatThrownBy(() -> h.prepare(FILTERING, "{\"device\": \"top\", \"target\": \"x-none\"}"))
                    .hasMessage("Parameter 'driver' does not accept value 'x-none'");
            assertThat(h.nodeNames()).containsExactlyInAnyOrder("top", "base");
            assertThat(h.edges()).containsExactly(client);
            assertThat(client.target().nodeName()).isEqualTo("top");
        }
    }

    @Test
    void openIsBlockdevAddAndDeleteIsBlockdevDel() throws Exception {
        Forwarding drv = new Forwarding("x-fwd", "file", ChildRole.FILTERED);
        try (JobHarness h = harness(drv).addObject("o1", "hello")) {
            assertThatThrownBy(() -> h.open(Map.of("driver", "x-fwd", "file", "top")))
                    .hasMessage("Parameter 'node-name' is missing");
            assertThatThrownBy(() -> h.open(Map.of("driver", "x-none", "node-name", "f", "file", "top")))
                    .hasMessage("Parameter 'driver' does not accept value 'x-none'");
            assertThatThrownBy(() -> h.open(Map.of("driver", "x-fwd", "node-name", "f", "file", "nowhere")))
                    .hasMessage("Cannot find device='' nor node-name='nowhere'");
            assertThatThrownBy(() -> h.open(Map.of("driver", "x-fwd", "node-name", "f", "file", "top", "object", "o2")))
                    .hasMessage("No string object with id 'o2'");
            assertThatThrownBy(() -> h.open(Map.of("driver", "x-fwd", "node-name", "top", "file", "top")))
                    .hasMessage("Duplicate nodes with node-name='top'");
            assertThat(h.nodeNames()).containsExactlyInAnyOrder("top", "base");
            BlockNode f = h.open(Map.of("driver", "x-fwd", "node-name", "f", "file", "top", "object", "o1",
                    "read-only", "on"));
            assertThat(f.nodeName()).isEqualTo("f");
            assertThat(f.isReadOnly()).isTrue();
            assertThat(drv.seen).containsExactly("open f tag=null file=top read-only=true object=hello");
            RootEdge reader = h.client("f", EnumSet.of(BlockPermission.CONSISTENT_READ), EnumSet.allOf(BlockPermission.class));
            ByteBuffer dst = ByteBuffer.allocate(C);
            reader.read(0, dst);
            assertThat(dst.array()).isEqualTo(((MemoryNode) h.node("top")).view(0, C));
            assertThatThrownBy(() -> h.client("f")).as("a read-only node takes no writer")
                    .hasMessage("Block node is read-only");
            assertThatThrownBy(() -> h.delete("f")).hasMessage("Node f is in use");
            h.detach(reader);
            assertThatThrownBy(() -> h.delete("top")).hasMessage("Block device top is in use");
            assertThatThrownBy(() -> h.delete("base")).hasMessage("Node 'base' is busy: node is used as backing hd of 'top'");
            assertThatThrownBy(() -> h.delete("g")).hasMessage("Failed to find node with node-name='g'");
            h.delete("f");
            assertThat(drv.seen).last().isEqualTo("close f");
            assertThat(h.nodeNames()).containsExactlyInAnyOrder("top", "base");
            h.delete("top");
            assertThat(h.nodeNames()).containsExactly("base");
        }
    }

    @Test
    void aDriverNodesLinkToItsChildFollowsAFilterPutInBeneathIt() throws Exception {
        Forwarding drv = new Forwarding("x-fwd", "file", ChildRole.FILTERED);
        try (JobHarness h = harness(drv)) {
            h.open(Map.of("driver", "x-fwd", "node-name", "f", "file", "top"));
            RootEdge guest = h.client("f");
            HarnessJob job = h.prepare(JobHarnessKitTest.HOOKED, "{\"device\": \"top\", \"target\": \"top\"}")
                    .breakAt(2).start();
            job.awaitBreak();
            guest.write(C, ByteBuffer.wrap(new byte[] {3}));
            assertThat(JobHarnessKitTest.SEEN.get()).as("f's write reached top through the job's filter")
                    .containsExactly("before WRITE " + C + "+1", "after true");
            assertThatThrownBy(() -> h.delete("top")).hasMessage("Node 'top' is busy: block device is in use by block job:"
                    + " x-test-hooked");
            job.go();
            assertThat(job.awaitEnd().completed()).isTrue();
            guest.write(2L * C, ByteBuffer.wrap(new byte[] {4}));
            assertThat(JobHarnessKitTest.SEEN.get()).as("the link is back on top").hasSize(2);
            assertThat(((MemoryNode) h.node("top")).view(2L * C, 1)).containsExactly(4);
        }
        assertThat(drv.seen).as("the harness closes the nodes drivers opened").last().isEqualTo("close f");
    }

    @Test
    void aPluginsDriversAndCommandsInstallTogether() {
        Forwarding drv = new Forwarding("x-fwd", "file", ChildRole.FILTERED);
        BlockjobsPlugin plugin = new BlockjobsPlugin() {
            @Override
            public List<JobCommand<?>> jobCommands() {
                return List.of(FILTERING);
            }

            @Override
            public List<BlockDriver> blockDrivers() {
                return List.of(drv);
            }
        };
        try (JobHarness h = new JobHarness().install(plugin).add(new MemoryNode("disk", 4L * C))) {
            assertThat(h.command("x-test-filtering")).isSameAs(FILTERING);
            assertThatThrownBy(() -> h.command("x-nope")).isInstanceOf(CommandException.class)
                    .hasMessage("The command x-nope has not been found");
            assertThatThrownBy(() -> h.install(plugin)).isInstanceOf(IllegalArgumentException.class);
            assertThat(h.start("x-test-filtering", "{\"device\": \"disk\", \"target\": \"x-fwd\"}").awaitEnd().completed())
                    .isTrue();
            assertThat(drv.seen).containsExactly("open flt tag=t1 file=disk read-only=false", "close flt");
        }
    }
}
