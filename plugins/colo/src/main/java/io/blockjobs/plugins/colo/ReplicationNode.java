package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;

/**
 * A {@code replication} node, as QEMU's {@code block/replication.c}, in QEMU's stages
 * ({@code none → running → done}; the secondary's failover stages come with its start).
 *
 * <p>On the primary the node only forwards the primary's writes to its {@code file} (an NBD
 * client of the secondary's export): its reads fail ({@code EIO}: a quorum in {@code fifo} mode
 * then reads its local child), and while replication runs a failed write is hidden from the
 * writer and recorded, for {@link #error()}. Before it starts and after it stops, writes fail
 * too. On the secondary, reads and writes go to {@code file} (the active disk) while it runs.
 * Requests come in 512-byte sectors, as QEMU's sector-based drivers get them; zero writes are
 * writes of zeroes and discards do nothing, as QEMU's block layer makes them for a driver that
 * has neither.
 */
final class ReplicationNode implements DriverNode {

    /** QEMU's {@code ReplicationStage}. */
    enum Stage {
        NONE, RUNNING, FAILOVER, FAILOVER_FAILED, DONE
    }

    private final String name;
    private final BlockNode file;
    private final boolean primary;
    private final String topId;
    private volatile Stage stage = Stage.NONE;
    private volatile Errno error; // the last forwarding error on the primary, null for none

    private final Replications registry;

    ReplicationNode(String name, BlockNode file, boolean primary, String topId, Replications registry) {
        this.name = name;
        this.file = file;
        this.primary = primary;
        this.topId = topId;
        this.registry = registry;
        registry.add(this);
    }

    @Override
    public String driver() {
        return "replication";
    }

    @Override
    public String filename() {
        return file.filename();
    }

    @Override
    public Optional<String> filteredChild() {
        return Optional.of("file");
    }

    @Override
    public Limits limits() {
        return new Limits(512, 0, file.clusterSize());
    }

    @Override
    public long size() throws IOException {
        return file.size();
    }

    @Override
    public boolean isReadOnly() {
        return file.isReadOnly();
    }

    Stage stage() {
        return stage;
    }

    /** The secondary's {@code top-id}, null on the primary. */
    String topId() {
        return topId;
    }

    // ---- I/O -----------------------------------------------------------------------------------------

    /** QEMU's replication_get_io_status: EIO (null here) where the stage admits no request, else whether it does. */
    private boolean admits() {
        return switch (stage) {
            case NONE -> false;
            case RUNNING -> true;
            case FAILOVER, FAILOVER_FAILED, DONE -> !primary;
        };
    }

    private BlockIoException refused(String what) {
        return new BlockIoException(Errno.EIO, name + ": " + what + " while block replication is " + stage.name().toLowerCase());
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        if (primary) {
            throw new BlockIoException(Errno.EIO, name + ": the primary's replication node only forwards writes");
        }
        if (!admits()) {
            throw refused("read");
        }
        file.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        if (!admits()) {
            throw refused("write");
        }
        try {
            file.write(offset, src);
        } catch (IOException e) {
            if (!primary) {
                throw e;
            }
            error = Errno.of(e); // hidden from the primary's writer, reported by error()
            src.position(src.limit());
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        ByteBuffer zeroes = ByteBuffer.allocate(64 * 1024);
        for (long pos = offset; pos < offset + length; ) {
            int n = (int) Math.min(zeroes.capacity(), offset + length - pos);
            write(pos, zeroes.clear().limit(n));
            pos += n;
        }
    }

    @Override
    public void discard(long offset, long length) {
    }

    @Override
    public void flush() throws IOException {
        file.flush();
    }

    /** The file's, as QEMU reports a filter's (whatever the stage: block status is no read). */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return file.blockStatus(offset, maxLength);
    }

    @Override
    public void close() {
        if (stage == Stage.RUNNING) {
            stop(false); // as replication_close
        }
        registry.remove(this);
    }

    // ---- the replication state machine (QEMU's ReplicationOps) ---------------------------------------

    /** QEMU's replication_start, for the primary. */
    synchronized void start(boolean asPrimary) {
        if (stage == Stage.DONE || stage == Stage.FAILOVER) {
            return; // a secondary promoted to primary: nothing left to do
        }
        if (stage != Stage.NONE) {
            throw new CommandException("Block replication is running or done");
        }
        if (asPrimary != primary) {
            throw new CommandException("The parameter mode's value is invalid, needs " + (primary ? 0 : 1)
                    + ", but got " + (asPrimary ? 0 : 1));
        }
        if (!primary) {
            throw new CommandException("Starting the secondary side of block replication is not supported yet");
        }
        stage = Stage.RUNNING;
        error = null;
    }

    /** QEMU's replication_stop. */
    synchronized void stop(boolean failover) {
        if (stage == Stage.DONE || stage == Stage.FAILOVER) {
            return;
        }
        if (stage != Stage.RUNNING) {
            throw new CommandException("Block replication is not running");
        }
        stage = Stage.DONE;
        error = null;
    }

    /**
     * QEMU's replication_do_checkpoint: nothing on the primary; the secondary's (emptying the
     * active and hidden disks) needs the backup job its start runs, which is not there yet.
     */
    synchronized void checkpoint() {
        if (stage == Stage.DONE || stage == Stage.FAILOVER || primary) {
            return;
        }
        throw new CommandException("Backup job was cancelled unexpectedly");
    }

    /** QEMU's replication_get_error: "I/O error occurred" after a forwarding error. */
    synchronized void error() {
        if (stage == Stage.NONE) {
            throw new CommandException("Block replication is not running");
        }
        if (error != null) {
            throw new CommandException("I/O error occurred");
        }
    }

    /** The errno of the last forwarding error the primary hid, or null. */
    Errno lastError() {
        return error;
    }
}
