package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.GraphQuery;
import io.blockjobs.sdk.driver.Limits;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A {@code replication} node, as QEMU's {@code block/replication.c}, in QEMU's stages
 * ({@code none → running → failover → done}, or {@code failover-failed}).
 *
 * <p>On the primary the node only forwards the primary's writes to its {@code file} (an NBD
 * client of the secondary's export): its reads fail ({@code EIO}: a quorum in {@code fifo} mode
 * then reads its local child), and while replication runs a failed write is hidden from the
 * writer and recorded, for {@link #error()}. Before it starts and after it stops, writes fail
 * too. On the secondary, reads and writes go to {@code file} (the active disk) while it runs,
 * and {@link SecondarySide} keeps the hidden disk, the checkpoints and the failover; after a
 * failover they go to the secondary disk, which then holds everything. Requests come in 512-byte
 * sectors, as QEMU's sector-based drivers get them; zero writes are writes of zeroes and
 * discards do nothing, as QEMU's block layer makes them for a driver that has neither.
 */
final class ReplicationNode implements DriverNode {
    private static final Logger log = LoggerFactory.getLogger(ReplicationNode.class);

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
    private volatile String failure; // why the secondary's checkpoint or failover failed, null for none
    private volatile SecondarySide secondary; // the secondary's, from its start
    private volatile BlockNode target; // where the secondary's requests go: file, then the secondary disk after failover

    private final Replications registry;
    private final GraphQuery graph; // null in a graph that answers no questions (a test's): its checks are skipped

    ReplicationNode(String name, BlockNode file, boolean primary, String topId, Replications registry, GraphQuery graph) {
        this.name = name;
        this.graph = graph;
        this.file = file;
        this.target = file;
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
        vm(() -> target.read(offset, dst));
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        if (!admits()) {
            throw refused("write");
        }
        if (primary) {
            try {
                file.write(offset, src);
            } catch (IOException e) {
                error = Errno.of(e); // hidden from the primary's writer, reported by error()
                src.position(src.limit());
            }
            return;
        }
        vm(() -> {
            if (writesBoth()) { // the commit runs: the active disk (the view) and the secondary disk
                target.write(offset, src.duplicate());
                secondary.disk().write(offset, src);
            } else {
                target.write(offset, src);
            }
        });
    }

    /** Whether the secondary VM's writes go to the secondary disk too: while the failover's commit runs, or after it failed. */
    private boolean writesBoth() {
        Stage now = stage;
        return now == Stage.FAILOVER || now == Stage.FAILOVER_FAILED;
    }

    /** A request of the secondary VM: inside the checkpoint barrier once replication has started. */
    private void vm(SecondarySide.IoCall call) throws IOException {
        SecondarySide side = secondary;
        if (side == null) {
            call.run();
        } else {
            side.vm(call);
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
        target.flush();
        if (writesBoth()) {
            secondary.disk().flush();
        }
    }

    /** The file's, as QEMU reports a filter's (whatever the stage: block status is no read). */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return target.blockStatus(offset, maxLength);
    }

    @Override
    public void close() {
        if (stage == Stage.RUNNING) {
            stop(false); // as replication_close
        }
        SecondarySide side = secondary;
        if (side != null) {
            side.stopCopying();
        }
        registry.remove(this);
    }

    // ---- the replication state machine (QEMU's ReplicationOps) ---------------------------------------

    /** QEMU's replication_start. */
    void start(boolean asPrimary) {
        // The graph's answers first, outside this node's lock: the graph closes nodes (taking this
        // lock) under its own lock, so asking it while holding this one could deadlock.
        start(asPrimary, primary || graph == null ? null : graphFacts());
    }

    /** What a secondary's start learns from the graph: whether something exports the secondary disk, and whether top-id is a top above this node. */
    private record GraphFacts(boolean diskHasUser, boolean validTop) {
    }

    private GraphFacts graphFacts() {
        String disk = file.backing().flatMap(BlockNode::backing).map(BlockNode::nodeName).orElse(null);
        String top = graph.lookup(topId);
        // QEMU's: top-id names a node no node or job sits on (the VM's disk) with this node below it
        return new GraphFacts(disk == null || graph.hasUser(disk),
                top != null && graph.isRoot(top) && graph.reaches(top, name));
    }

    private synchronized void start(boolean asPrimary, GraphFacts facts) {
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
            SecondarySide side;
            try {
                side = SecondarySide.over(file, facts == null || facts.diskHasUser());
            } catch (IOException e) {
                throw new CommandException("Active disk, hidden disk, secondary disk's length are not the same");
            }
            if (facts != null && !facts.validTop()) {
                throw new CommandException("No top_bs or it is invalid");
            }
            side.startCopying();
            secondary = side;
            stage = Stage.RUNNING;
            error = null;
            failure = null;
            try {
                side.checkpoint(); // as QEMU, the start is a checkpoint: both sides equal now
            } catch (CommandException e) {
                failure = e.getMessage();
                throw e;
            }
            return;
        }
        stage = Stage.RUNNING;
        error = null;
    }

    /**
     * QEMU's replication_stop. On the secondary, a failover commits the active and hidden disks
     * into the secondary disk in the background and calls {@code done} with null when the
     * secondary disk alone serves, or with the reason it failed; a stop without failover empties
     * them (the secondary disk then holds the primary's data, which it takes from now on).
     */
    synchronized void stop(boolean failover, java.util.function.Consumer<String> done) {
        if (stage == Stage.DONE || stage == Stage.FAILOVER) {
            done.accept(null); // nothing left to do (a failover already running tells nobody twice)
            return;
        }
        if (stage != Stage.RUNNING) {
            throw new CommandException("Block replication is not running");
        }
        if (primary) {
            stage = Stage.DONE;
            error = null;
            done.accept(null);
            return;
        }
        SecondarySide side = secondary;
        if (failover && side.disk().isReadOnly()) { // QEMU would start its commit and fail in it
            throw new CommandException("Cannot fail over: the secondary disk '" + side.disk().nodeName()
                    + "' is read-only, so the active and hidden disks cannot be committed into it");
        }
        side.stopCopying(); // QEMU cancels its backup job
        if (!failover) {
            try {
                side.checkpoint();
            } finally {
                stage = Stage.DONE;
            }
            done.accept(null);
            return;
        }
        side.quiesced(() -> stage = Stage.FAILOVER);
        Thread.ofVirtual().name("replication-failover-" + name).start(() -> {
            String why = null;
            try {
                side.commit();
                side.quiesced(() -> {
                    target = side.disk(); // from now on the secondary disk alone serves
                    stage = Stage.DONE;
                });
                failure = null;
                log.info("{}: failover done: the active and hidden disks are committed into '{}'", name,
                        side.disk().nodeName());
            } catch (IOException | RuntimeException e) {
                why = "committing into the secondary disk '" + side.disk().nodeName() + "' failed: " + e.getMessage();
                failure = why;
                stage = Stage.FAILOVER_FAILED;
                log.warn("{}: failover failed: {}; the active disk keeps serving", name, why);
            }
            done.accept(why);
        });
    }

    /** As {@link #stop(boolean, java.util.function.Consumer)}, with nobody to tell. */
    void stop(boolean failover) {
        stop(failover, why -> {
        });
    }

    /**
     * QEMU's replication_do_checkpoint: nothing on the primary; the secondary empties its active
     * and hidden disks.
     */
    synchronized void checkpoint() {
        if (stage == Stage.DONE || stage == Stage.FAILOVER || primary) {
            return;
        }
        SecondarySide side = secondary;
        if (side == null) {
            throw new CommandException("Backup job was cancelled unexpectedly");
        }
        try {
            side.checkpoint();
        } catch (CommandException e) {
            failure = e.getMessage();
            throw e;
        }
    }

    /**
     * QEMU's replication_get_error: "I/O error occurred" after a forwarding error on the primary,
     * a copy into the hidden disk that failed or a failed checkpoint or failover on the secondary
     * (with the reason, where QEMU says no more); a failover in progress is no error.
     */
    synchronized void error() {
        if (stage == Stage.NONE) {
            throw new CommandException("Block replication is not running");
        }
        if (error != null) {
            throw new CommandException("I/O error occurred");
        }
        String why = failure != null ? failure : secondary != null && stage == Stage.RUNNING ? secondary.error() : null;
        if (why != null) {
            throw new CommandException("I/O error occurred: " + why);
        }
    }

    /** A failover in progress, as "committed N of M bytes", or null if none runs. */
    String failoverProgress() {
        SecondarySide side = secondary;
        if (stage != Stage.FAILOVER || side == null) {
            return null;
        }
        return "failover in progress: " + side.committed() + " of " + side.size() + " bytes committed";
    }

    /** The errno of the last forwarding error the primary hid, or null. */
    Errno lastError() {
        return error;
    }
}
