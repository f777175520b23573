package io.blockjobs.plugins.colo;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.testkit.MemoryNode;
import java.nio.ByteBuffer;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** The replication filter's stages on the primary (QEMU's block/replication.c), with the SDK alone. */
class ReplicationNodeTest {
    static final int SIZE = 1 << 20;

    private static ByteBuffer filled(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return ByteBuffer.wrap(b);
    }

    private static void assertEio(org.assertj.core.api.ThrowableAssert.ThrowingCallable call) {
        assertThatThrownBy(call).isInstanceOfSatisfying(BlockIoException.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
    }

    @Test
    void thePrimaryForwardsWritesWhileRunningAndHidesTheirErrors() throws Exception {
        MemoryNode secondary = new MemoryNode("nbd", SIZE);
        ReplicationNode r = new ReplicationNode("r", secondary, true, null, new Replications(), null);
        assertEio(() -> r.write(0, filled(512, 1))); // not started: QEMU's stage none refuses
        assertThatThrownBy(r::error).isInstanceOf(CommandException.class).hasMessage("Block replication is not running");
        assertThatThrownBy(() -> r.start(false)).isInstanceOf(CommandException.class)
                .hasMessage("The parameter mode's value is invalid, needs 0, but got 1");

        r.start(true);
        r.write(4096, filled(512, 0x22));
        assertThat(secondary.view(4096, 512)).containsOnly(0x22);
        assertEio(() -> r.read(4096, ByteBuffer.allocate(512))); // the primary reads its own disk, never this
        r.error(); // no error yet
        secondary.failWrites(8192, Errno.ESHUTDOWN); // the NBD link went away
        ByteBuffer src = filled(512, 0x33);
        r.write(8192, src);
        assertThat(src.remaining()).isZero(); // the writer is told it worked
        assertThat(r.lastError()).isEqualTo(Errno.ESHUTDOWN);
        assertThatThrownBy(r::error).isInstanceOf(CommandException.class).hasMessage("I/O error occurred");
        assertThatThrownBy(() -> r.start(true)).isInstanceOf(CommandException.class)
                .hasMessage("Block replication is running or done");

        r.stop(false);
        assertThat(r.stage()).isEqualTo(ReplicationNode.Stage.DONE);
        r.error(); // stopping clears it, as in QEMU
        assertEio(() -> r.write(0, filled(512, 1))); // done: the primary forwards nothing more
        r.stop(false); // a second stop is ignored, as for a promoted secondary
        r.start(true); // and so is a start
        assertThat(r.stage()).isEqualTo(ReplicationNode.Stage.DONE);
    }

    @Test
    void theSecondaryRefusesRequestsBeforeItStarts() {
        ReplicationNode r = new ReplicationNode("s", new MemoryNode("active", SIZE), false, "top", new Replications(), null);
        assertEio(() -> r.read(0, ByteBuffer.allocate(512)));
        assertEio(() -> r.write(0, filled(512, 1)));
        assertThatThrownBy(() -> r.stop(true)).isInstanceOf(CommandException.class)
                .hasMessage("Block replication is not running");
        assertThat(r.topId()).isEqualTo("top");
    }

    @Test
    void theCommandsDriveEveryNodeAsQemusReplicationAllFunctions() throws Exception {
        Replications all = new Replications();
        MemoryNode remote = new MemoryNode("nbd", SIZE);
        ReplicationNode a = new ReplicationNode("a", remote, true, null, all, null);
        ReplicationNode b = new ReplicationNode("b", new MemoryNode("nbd2", SIZE), true, null, all, null);
        assertThat(all.status()).isEqualTo(new Replications.Status(true, java.util.Optional.of("Block replication is not running")));
        assertThatThrownBy(() -> all.set(new Replications.SetArgs(true, true, java.util.Optional.of(false))))
                .isInstanceOf(CommandException.class).hasMessage("Parameter 'failover' is only for stopping replication");
        assertThatThrownBy(() -> all.set(new Replications.SetArgs(false, true, java.util.Optional.empty())))
                .isInstanceOf(CommandException.class).hasMessage("Block replication is not running");
        all.set(new Replications.SetArgs(false, true, java.util.Optional.of(true))); // a failover reports nothing
        all.set(new Replications.SetArgs(true, true, java.util.Optional.empty()));
        assertThat(a.stage()).isEqualTo(ReplicationNode.Stage.RUNNING);
        assertThat(b.stage()).isEqualTo(ReplicationNode.Stage.RUNNING);
        assertThat(all.status()).isEqualTo(new Replications.Status(false, java.util.Optional.empty()));
        all.checkpoint(); // nothing to do on a primary
        remote.failWrites(0, Errno.EIO);
        a.write(0, filled(512, 1));
        assertThat(all.status()).isEqualTo(new Replications.Status(true, java.util.Optional.of("I/O error occurred")));
        all.set(new Replications.SetArgs(false, true, java.util.Optional.empty()));
        assertThat(a.stage()).isEqualTo(ReplicationNode.Stage.DONE);
        assertThat(all.status()).isEqualTo(new Replications.Status(false, java.util.Optional.empty()));
        a.close();
        b.close();
        assertThat(all.status()).isEqualTo(new Replications.Status(false, java.util.Optional.empty()));
    }
}
