package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A user's edge to a node of the harness graph, as QEMU's {@code BlockBackend}: what a job gets
 * from {@link io.blockjobs.sdk.job.JobSetup#use} (it stays at its node and never waits for a
 * drain), or a client ({@link JobHarness#client}) that writes beside a job, as an export or a
 * guest would. A client's requests follow the graph: a filter put above its node, or a job's
 * switch-over, moves them; a drain holds them off. Requests check the permissions the user took,
 * with the platform's messages.
 */
public final class RootEdge implements BlockNode {
    private final String user;
    private final String role;
    private final int perm;
    private final int shared;
    private final Gate gate;
    private volatile BlockNode target;
    private volatile boolean detached;

    RootEdge(String user, String role, BlockNode target, Set<BlockPermission> perm, Set<BlockPermission> shared,
             boolean client) {
        this.user = user;
        this.role = role;
        this.target = target;
        this.perm = HarnessGraph.mask(perm);
        this.shared = HarnessGraph.mask(shared);
        this.gate = client ? new Gate() : null;
    }

    /** How messages name the user: {@code an unnamed block device}, {@code stream job 'j'}. */
    public String user() {
        return user;
    }

    /** The edge's name: the role a job gave, {@code root} for a client. */
    public String role() {
        return role;
    }

    /** The node the edge points to now. */
    public BlockNode target() {
        return target;
    }

    /** The permissions taken. */
    public Set<BlockPermission> permissions() {
        return HarnessGraph.perms(perm);
    }

    /** The permissions shared with other users. */
    public Set<BlockPermission> sharedPermissions() {
        return HarnessGraph.perms(shared);
    }

    /** Whether this is a client's edge (it follows the graph and waits for drains). */
    public boolean isClient() {
        return gate != null;
    }

    /** Whether the edge was given back (the job ended, or the client closed). */
    public boolean detached() {
        return detached;
    }

    int permMask() {
        return perm;
    }

    int sharedMask() {
        return shared;
    }

    void retarget(BlockNode node) {
        this.target = node;
    }

    void markDetached() {
        this.detached = true;
    }

    Gate gate() {
        return gate;
    }

    private BlockNode enter() throws IOException {
        if (detached) {
            throw new BlockIoException(Errno.EIO, user + ": the edge to '" + target.nodeName() + "' was given back");
        }
        if (gate != null) {
            gate.enter();
        }
        return target;
    }

    private void exit() {
        if (gate != null) {
            gate.exit();
        }
    }

    private void needs(int mask, String what) throws IOException {
        if ((perm & mask) == 0) {
            throw new BlockIoException(Errno.EPERM, target.nodeName() + ": " + what + " without the permission to ("
                    + user + " uses it as '" + role + "' child)");
        }
    }

    private void inside(long offset, long length) throws IOException {
        long size = target.size();
        if (offset < 0 || length < 0 || offset > size - length) {
            throw new BlockIoException(Errno.EINVAL, target.filename() + ": request [" + offset + ", +" + length
                    + ") is past the end of the " + size + "-byte image");
        }
    }

    private interface Io<T> {
        T run(BlockNode node) throws IOException;
    }

    private <T> T io(Io<T> io) throws IOException {
        BlockNode n = enter();
        try {
            return io.run(n);
        } finally {
            exit();
        }
    }

    @Override
    public String driver() {
        return target.driver();
    }

    @Override
    public String filename() {
        return target.filename();
    }

    @Override
    public String nodeName() {
        return target.nodeName();
    }

    @Override
    public long size() throws IOException {
        return target.size();
    }

    @Override
    public boolean isReadOnly() {
        return target.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return target.clusterSize();
    }

    @Override
    public Optional<BlockNode> backing() {
        return target.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        inside(offset, dst.remaining());
        io(n -> {
            n.read(offset, dst);
            return null;
        });
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        needs(bit(BlockPermission.WRITE), "write");
        inside(offset, src.remaining());
        io(n -> {
            n.write(offset, src, flags);
            return null;
        });
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? EnumSet.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        needs(bit(BlockPermission.WRITE), "write zeroes");
        inside(offset, length);
        io(n -> {
            n.writeZeroes(offset, length, flags);
            return null;
        });
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        needs(bit(BlockPermission.WRITE), "discard");
        inside(offset, length);
        io(n -> {
            n.discard(offset, length);
            return null;
        });
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        needs(bit(BlockPermission.WRITE) | bit(BlockPermission.WRITE_UNCHANGED), "copy on read");
        io(n -> {
            n.writeUnallocated(offset, src);
            return null;
        });
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        needs(bit(BlockPermission.WRITE) | bit(BlockPermission.WRITE_UNCHANGED), "unallocate");
        io(n -> {
            n.unallocate(offset, length);
            return null;
        });
    }

    @Override
    public void flush() throws IOException {
        io(n -> {
            n.flush();
            return null;
        });
    }

    @Override
    public SerialisedRange serialise(long offset, long length) throws IOException {
        return target.serialise(offset, length);
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return io(n -> n.blockStatus(offset, maxLength));
    }

    @Override
    public BlockStatus chainStatus(long offset, long maxLength) throws IOException {
        return io(n -> n.chainStatus(offset, maxLength));
    }

    /** Nothing: the harness detaches edges when their job ends ({@link JobHarness#detach} for clients). */
    @Override
    public void close() {
    }

    @Override
    public String toString() {
        return user + " -" + role + "-> " + target.nodeName();
    }

    private static int bit(BlockPermission p) {
        return 1 << p.ordinal();
    }

    /**
     * The drain gate of a client's edge: requests count themselves in and out; a drain, begun
     * and ended by any thread and nested, holds new requests off and waits for those in flight.
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

        void close() {
            lock.lock();
            try {
                drains++;
            } finally {
                lock.unlock();
            }
        }

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

        boolean drained() {
            lock.lock();
            try {
                return drains > 0;
            } finally {
                lock.unlock();
            }
        }
    }
}
