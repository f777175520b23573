package io.blockjobs.platform.graph;

import io.blockjobs.platform.image.NodeLimits;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A child link {@code (parent, name, child, perm, shared-perm)}: QEMU's {@code BdrvChild}. A
 * root edge has no parent node but a user (an export, a job): QEMU's {@code BlockBackend}.
 * Requests through an edge go to whatever node it points to now, so swapping the child (a
 * snapshot, a filter put above the node, a job's switch-over) moves the parent's requests.
 *
 * <p>A root edge of an export holds requests off while a drain covers its node ({@link Gate});
 * a job's own edges never wait, so a job can copy inside the drain it began.
 */
public final class Edge implements BlockNode, NodeLimits, io.blockjobs.platform.image.Resizable,
        io.blockjobs.platform.image.DebugEvents {
    private final GraphNode parent;
    private final String name;
    private final ChildRole role;
    private final String user;
    private final Gate gate;
    private volatile GraphNode child;
    private volatile int perm;
    private volatile int shared;
    private int frozen;

    Edge(GraphNode parent, String name, ChildRole role, GraphNode child) {
        this.parent = parent;
        this.name = name;
        this.role = role;
        this.user = null;
        this.gate = null;
        this.child = child;
        this.shared = Perm.ALL;
    }

    /** A root edge: {@code user} is how messages name its holder ("an unnamed block device"). */
    Edge(String user, String name, GraphNode child, int perm, int shared, boolean waitsOnDrain) {
        this.parent = null;
        this.name = name;
        this.role = null;
        this.user = user;
        this.gate = waitsOnDrain ? new Gate() : null;
        this.child = child;
        this.perm = perm;
        this.shared = shared;
    }

    /** The parent node, or null for a root edge. */
    public GraphNode parent() {
        return parent;
    }

    /** The child's name in its parent ({@code file}, {@code backing}, {@code root}). */
    public String name() {
        return name;
    }

    /** What the child is to its parent; null for a root edge. */
    public ChildRole role() {
        return role;
    }

    /** The node this edge points to now. */
    public GraphNode child() {
        return child;
    }

    /** The permissions taken. */
    public int perm() {
        return perm;
    }

    /** The permissions shared with other parents. */
    public int shared() {
        return shared;
    }

    /** Whether a job froze this link. */
    public synchronized boolean frozen() {
        return frozen > 0;
    }

    synchronized void freeze() {
        frozen++;
    }

    synchronized void unfreeze() {
        if (frozen > 0) {
            frozen--;
        }
    }

    boolean isRoot() {
        return parent == null;
    }

    /** A job's own edge stays at its node when an overlay goes on top (QEMU's {@code stay_at_node}). */
    boolean staysAtNode() {
        return parent == null && gate == null;
    }

    /** How QEMU's messages name the parent: {@code node 'top'}, {@code an unnamed block device}. */
    String userDescription() {
        return parent != null ? "node '" + parent.name() + "'" : user;
    }

    void setChild(GraphNode node) {
        this.child = node;
    }

    void setPermissions(int perm, int shared) {
        this.perm = perm;
        this.shared = shared;
    }

    Gate gate() {
        return gate;
    }

    // ---- I/O: to the child's entry point, within the root's gate --------------------------------

    private GraphNode enter() throws IOException {
        if (gate != null) {
            gate.enter();
        }
        return child;
    }

    private void exit() {
        if (gate != null) {
            gate.exit();
        }
    }

    /** A user's requests stay inside the node, as QEMU's {@code blk_check_byte_request}. */
    private void inside(long offset, long length, BlockStats.Kind kind) throws IOException {
        if (parent != null) {
            return; // a parent driver knows its child's extent (a format's file grows)
        }
        long size = child.size();
        if (offset < 0 || length < 0 || offset > size - length) {
            child.countInvalid(kind);
            throw new BlockIoException(Errno.EINVAL, child.filename() + ": request [" + offset + ", +" + length
                    + ") is past the end of the " + size + "-byte image");
        }
    }

    private void needs(int mask, String what) throws IOException {
        if ((perm & mask) == 0) {
            throw new BlockIoException(Errno.EPERM, child.name() + ": " + what + " without the permission to ("
                    + userDescription() + " uses it as '" + name + "' child)");
        }
    }

    @Override
    public String driver() {
        return child.driver();
    }

    @Override
    public String filename() {
        return child.filename();
    }

    @Override
    public String nodeName() {
        return child.name();
    }

    @Override
    public long size() throws IOException {
        return child.size();
    }

    /** A parent resizing through its child (raw its file): the child's size changes. */
    @Override
    public void truncate(long size) throws IOException {
        child.truncate(size);
    }

    @Override
    public boolean isReadOnly() {
        return child.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return child.clusterSize();
    }

    @Override
    public boolean supportsCompressedWrites() {
        return child.supportsCompressedWrites();
    }

    @Override
    public Optional<BlockNode> backing() {
        return child.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        inside(offset, dst.remaining(), BlockStats.Kind.READ);
        GraphNode n = enter();
        try {
            // a format that fires its own read events on its file (qcow2) gets no raw-style read_aio there
            n.read(offset, dst, parent == null || !name.equals("file")
                    || !io.blockjobs.platform.image.DebugEvents.firesOwnReadEvents(parent.driver()));
        } finally {
            exit();
        }
    }

    /** An event the parent's driver fires on this child, as QEMU's {@code BLKDBG_EVENT(bs->file, ...)}. */
    @Override
    public void debugEvent(io.blockjobs.platform.image.BlkdebugEvent event) {
        child.debug(event);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        needs(Perm.WRITE.bit(), "write");
        inside(offset, src.remaining(), BlockStats.Kind.WRITE);
        GraphNode n = enter();
        try {
            n.write(offset, src, flags);
        } finally {
            exit();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        needs(Perm.WRITE.bit(), "write zeroes");
        inside(offset, length, BlockStats.Kind.WRITE);
        GraphNode n = enter();
        try {
            n.writeZeroes(offset, length, flags);
        } finally {
            exit();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        needs(Perm.WRITE.bit(), "discard");
        inside(offset, length, BlockStats.Kind.UNMAP);
        GraphNode n = enter();
        try {
            n.discard(offset, length);
        } finally {
            exit();
        }
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        needs(Perm.WRITE.bit() | Perm.WRITE_UNCHANGED.bit(), "copy on read");
        GraphNode n = enter();
        try {
            n.writeUnallocated(offset, src);
        } finally {
            exit();
        }
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        needs(Perm.WRITE.bit() | Perm.WRITE_UNCHANGED.bit(), "unallocate");
        GraphNode n = enter();
        try {
            n.unallocate(offset, length);
        } finally {
            exit();
        }
    }

    @Override
    public void flush() throws IOException {
        GraphNode n = enter();
        try {
            n.flush();
        } finally {
            exit();
        }
    }

    /** The limits of the node the edge points to now. */
    @Override
    public Limits limits() {
        return child.limits();
    }

    @Override
    public SerialisedRange serialise(long offset, long length) throws IOException {
        return child.serialise(offset, length);
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        GraphNode n = enter();
        try {
            return n.blockStatus(offset, maxLength);
        } finally {
            exit();
        }
    }

    @Override
    public BlockStatus chainStatus(long offset, long maxLength) throws IOException {
        GraphNode n = enter();
        try {
            return n.chainStatus(offset, maxLength);
        } finally {
            exit();
        }
    }

    /** {@link GraphNode#allocationDepth} of the node the edge points to now, within its gate. */
    public GraphNode.Allocation allocationDepth(long offset, long maxLength) throws IOException {
        GraphNode n = enter();
        try {
            return n.allocationDepth(offset, maxLength);
        } finally {
            exit();
        }
    }

    /** The graph closes nodes; closing an edge does nothing. */
    @Override
    public void close() {
    }

    @Override
    public String toString() {
        return userDescription() + " -" + name + "-> " + child.name();
    }

    /**
     * The drain gate of a root edge: requests count themselves in and out; a drain, begun and
     * ended by any thread and nested, holds new requests off and waits for those in flight.
     */
    static final class Gate {
        private final ReentrantLock lock = new ReentrantLock();
        private final Condition changed = lock.newCondition();
        private int drains;
        private int inFlight;

        void enter() {
            lock.lock();
            try {
                while (drains > 0) {
                    changed.awaitUninterruptibly();
                }
                inFlight++;
            } finally {
                lock.unlock();
            }
        }

        void exit() {
            lock.lock();
            try {
                if (--inFlight == 0) {
                    changed.signalAll();
                }
            } finally {
                lock.unlock();
            }
        }

        /** Holds new requests off. */
        void close() {
            lock.lock();
            try {
                drains++;
            } finally {
                lock.unlock();
            }
        }

        /** Waits for the requests in flight. */
        void awaitIdle() {
            lock.lock();
            try {
                while (inFlight > 0) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                lock.unlock();
            }
        }

        void open() {
            lock.lock();
            try {
                if (drains > 0 && --drains == 0) {
                    changed.signalAll();
                }
            } finally {
                lock.unlock();
            }
        }
    }
}
