package io.blockjobs.plugins.throttle;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.ThrottleGroup;
import io.blockjobs.sdk.testkit.MemoryNode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Which requests the filter throttles, and as what (QEMU's block/throttle.c), with the SDK alone. */
class ThrottleNodeTest {

    /** A member that records what it was asked to admit. */
    private static final class RecordingMember implements ThrottleGroup.Member {
        final List<String> admitted = new ArrayList<>();
        boolean closed;

        @Override
        public void acquire(boolean write, long bytes) {
            admitted.add((write ? "write " : "read ") + bytes);
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    @Test
    void readsAndEveryKindOfWriteWaitForTheGroupThenPassUnchanged() throws Exception {
        MemoryNode file = new MemoryNode("file", 1 << 20, null);
        RecordingMember member = new RecordingMember();
        ThrottleNode node = new ThrottleNode(file, member);

        node.write(0, ByteBuffer.wrap(new byte[] {1, 2, 3, 4}));
        node.write(4096, ByteBuffer.allocate(512).put(0, (byte) 7), Set.of(RequestFlag.FUA));
        node.writeZeroes(65536, 65536, false);
        node.writeZeroes(131072, 4096, Set.of(RequestFlag.MAY_UNMAP));
        node.discard(0, 8192);
        ByteBuffer dst = ByteBuffer.allocate(1024);
        node.read(4096, dst);
        node.flush();
        node.blockStatus(0, 1 << 20);

        // discard and write-zeroes count as writes of their length; flush and block status are not throttled
        assertThat(member.admitted).containsExactly("write 4", "write 512", "write 65536", "write 4096",
                "write 8192", "read 1024");
        assertThat(dst.get(0)).isEqualTo((byte) 7);
        assertThat(node.filteredChild()).contains("file");
        assertThat(node.size()).isEqualTo(1 << 20);
        assertThat(node.driver()).isEqualTo("throttle");
        node.close();
        assertThat(member.closed).isTrue();
    }

    @Test
    void thePluginContributesTheDriver() {
        assertThat(new ThrottlePlugin().blockDrivers()).extracting(d -> d.name()).containsExactly("throttle");
        assertThat(new ThrottlePlugin().jobCommands()).isEmpty();
    }
}
