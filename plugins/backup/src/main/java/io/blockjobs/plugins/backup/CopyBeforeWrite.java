package io.blockjobs.plugins.backup;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import io.blockjobs.sdk.driver.OptionSpec;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * QEMU's {@code copy-before-write} filter ({@code BlockdevOptionsCbw}: {@code file}, {@code target},
 * {@code on-cbw-error}, {@code cbw-timeout}): before a write, write-zeroes or discard reaches the
 * filtered node, the old data of the clusters it touches is copied to the target, once per cluster.
 * So the target, read where copied and the node read elsewhere, is the disk as it was when the
 * filter was inserted: a backup job's source of truth, and through {@code snapshot-access} a
 * point-in-time view an NBD client can pull (fleecing).
 *
 * <p>{@code on-cbw-error}: {@code break-guest-write} (the default) fails the client's write when
 * the copy fails, and the snapshot stays whole; {@code break-snapshot} lets the write pass, and
 * the snapshot is broken from then on: its reads fail and a backup over it fails.
 */
final class CopyBeforeWrite implements BlockDriver {
    /** Open filters by node name: how a backup job and {@code snapshot-access} find theirs. */
    private static final Map<String, Node> OPEN = new ConcurrentHashMap<>();

    /** The filter node named {@code nodeName}, if one is open. */
    static Optional<Node> lookup(String nodeName) {
        return Optional.ofNullable(OPEN.get(nodeName));
    }

    @Override
    public String name() {
        return "copy-before-write";
    }

    @Override
    public List<OptionSpec> options() {
        return List.of(OptionSpec.required("file", "BlockdevRef"), OptionSpec.required("target", "BlockdevRef"),
                OptionSpec.optional("bitmap", "BlockDirtyBitmap"), OptionSpec.optional("on-cbw-error", "OnCbwError"),
                OptionSpec.optional("cbw-timeout", "uint32"), OptionSpec.optional("discard-source", "bool"));
    }

    @Override
    public DriverNode open(DriverContext ctx) throws IOException {
        if (ctx.options().has("bitmap")) {
            throw new CommandException("copy-before-write: the 'bitmap' option is not supported by blockjobs yet; "
                    + "leave it out to copy every cluster before it is overwritten");
        }
        String onError = ctx.options().optString("on-cbw-error");
        boolean breakSnapshot;
        if (onError == null || onError.equals("break-guest-write")) {
            breakSnapshot = false;
        } else if (onError.equals("break-snapshot")) {
            breakSnapshot = true;
        } else {
            throw ctx.options().invalid("on-cbw-error", "Parameter 'on-cbw-error' does not accept value '" + onError + "'");
        }
        Long timeout = ctx.options().optInteger("cbw-timeout");
        if (timeout != null && (timeout < 0 || timeout > 0xffffffffL)) {
            throw ctx.options().invalid("cbw-timeout", "Parameter 'cbw-timeout' expects uint32");
        }
        boolean discardSource = ctx.options().bool("discard-source", false);
        BlockNode file = ctx.child("file", ChildRole.FILTERED);
        BlockNode target = ctx.child("target", ChildRole.DATA);
        long size = file.size();
        if (target.size() != size) {
            throw new CommandException("Source and target image have different sizes");
        }
        // As QEMU's block_copy_calculate_cluster_size: at least 64 KiB, and no smaller than the target's.
        int cluster = Math.max(64 * 1024, target.clusterSize());
        BlockCopy copy = new BlockCopy(file, target, size, cluster);
        copy.setDiscardSource(discardSource);
        Node node = new Node(ctx.nodeName(), file, target, copy, breakSnapshot,
                timeout == null ? 0 : TimeUnit.SECONDS.toNanos(timeout), discardSource);
        OPEN.put(ctx.nodeName(), node);
        return node;
    }

    /** One open filter. */
    static final class Node implements DriverNode {
        private final String name;
        private final BlockNode file;
        private final BlockNode target;
        private final BlockCopy copy;
        private final boolean breakSnapshot;
        private final long timeoutNanos;
        private final ReentrantLock lock = new ReentrantLock();
        private final Condition readsDone = lock.newCondition();
        /** Clusters the filter copied to the target: the snapshot reads them there. */
        private final BitSet done = new BitSet();
        /** Clusters the snapshot's user may read (not discarded through the snapshot). */
        private final BitSet access = new BitSet();
        /** Snapshot reads of the filtered node in flight, as [start, end) byte ranges: writes there wait. */
        private final List<long[]> frozenReads = new ArrayList<>();
        private volatile IOException snapshotError;
        private final boolean discardSource;

        Node(String name, BlockNode file, BlockNode target, BlockCopy copy, boolean breakSnapshot, long timeoutNanos,
             boolean discardSource) {
            this.discardSource = discardSource;
            this.name = name;
            this.file = file;
            this.target = target;
            this.copy = copy;
            this.breakSnapshot = breakSnapshot;
            this.timeoutNanos = timeoutNanos;
            access.set(0, clusters());
        }

        private int clusters() {
            return (int) ((copy.size() + copy.clusterSize() - 1) / copy.clusterSize());
        }

        BlockCopy blockCopy() {
            return copy;
        }

        BlockNode target() {
            return target;
        }

        /** The first copy-before-write failure under {@code break-snapshot}, or null: the snapshot is broken. */
        IOException snapshotError() {
            return snapshotError;
        }

        // ---- the filter: copy before write ----------------------------------------------------------

        private void copyBeforeWrite(long offset, long length) throws IOException {
            if (snapshotError != null || length <= 0) {
                return;
            }
            long cluster = copy.clusterSize();
            long start = offset / cluster * cluster;
            long end = Math.min((offset + length + cluster - 1) / cluster * cluster,
                    (long) clusters() * cluster);
            try {
                if (timeoutNanos > 0) {
                    copyWithTimeout(start, end);
                } else {
                    copy.copyBeforeWrite(start, end - start);
                }
            } catch (IOException e) {
                if (!breakSnapshot) {
                    throw e;
                }
                lock.lock();
                try {
                    if (snapshotError == null) {
                        snapshotError = e;
                    }
                } finally {
                    lock.unlock();
                }
            }
            lock.lock();
            try {
                if (snapshotError == null) {
                    done.set((int) (start / cluster), (int) (end / cluster));
                }
                // A snapshot read of the old data may still be reading it here: let it finish first.
                while (overlapsFrozenRead(start, end)) {
                    readsDone.awaitUninterruptibly();
                }
            } finally {
                lock.unlock();
            }
        }

        /** {@code cbw-timeout}: a copy that takes longer fails the request; it still runs to its end. */
        private void copyWithTimeout(long start, long end) throws IOException {
            FutureTask<Void> task = new FutureTask<>(() -> {
                copy.copyBeforeWrite(start, end - start);
                return null;
            });
            Thread.ofVirtual().name("cbw-" + name).start(task);
            try {
                task.get(timeoutNanos, TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                throw new BlockIoException(Errno.ETIMEDOUT, name + ": copy-before-write timed out");
            } catch (ExecutionException e) {
                if (e.getCause() instanceof IOException io) {
                    throw io;
                }
                throw new IOException(e.getCause().toString(), e.getCause());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new BlockIoException(Errno.ECANCELED, name + ": interrupted");
            }
        }

        private boolean overlapsFrozenRead(long start, long end) {
            for (long[] r : frozenReads) {
                if (r[0] < end && start < r[1]) {
                    return true;
                }
            }
            return false;
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            copyBeforeWrite(offset, src.remaining());
            file.write(offset, src);
        }

        @Override
        public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
            copyBeforeWrite(offset, src.remaining());
            file.write(offset, src, flags);
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
            copyBeforeWrite(offset, length); // the old data is saved under write-zeroes too
            file.writeZeroes(offset, length, mayUnmap);
        }

        @Override
        public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
            copyBeforeWrite(offset, length);
            file.writeZeroes(offset, length, flags);
        }

        @Override
        public void discard(long offset, long length) throws IOException {
            copyBeforeWrite(offset, length);
            file.discard(offset, length);
        }

        // ---- the snapshot, for snapshot-access --------------------------------------------------------

        /**
         * Reads the disk as it was when the filter was inserted: from the target where the filter
         * copied the old data, else from the node, holding writes there off meanwhile.
         */
        void snapshotRead(long offset, ByteBuffer dst) throws IOException {
            long cluster = copy.clusterSize();
            long pos = offset;
            long end = offset + dst.remaining();
            while (pos < end) {
                long[] frozen = null;
                boolean fromTarget;
                long n;
                lock.lock();
                try {
                    checkSnapshot(pos, end);
                    int c = (int) (pos / cluster);
                    fromTarget = done.get(c);
                    int e = fromTarget ? done.nextClearBit(c) : Math.min(done.nextSetBit(c) < 0 ? Integer.MAX_VALUE
                            : done.nextSetBit(c), clusters());
                    n = Math.min(end, e * cluster) - pos;
                    if (!fromTarget) {
                        frozen = new long[] {pos, pos + n};
                        frozenReads.add(frozen);
                    }
                } finally {
                    lock.unlock();
                }
                ByteBuffer part = dst.duplicate();
                part.limit(part.position() + (int) n);
                try {
                    (fromTarget ? target : file).read(pos, part);
                } finally {
                    if (frozen != null) {
                        lock.lock();
                        try {
                            frozenReads.remove(frozen);
                            readsDone.signalAll();
                        } finally {
                            lock.unlock();
                        }
                    }
                }
                dst.position(dst.position() + (int) n);
                pos += n;
            }
        }

        /** The snapshot's block status: of the target where the filter copied, else of the node's chain. */
        BlockStatus snapshotStatus(long offset, long maxLength) throws IOException {
            long cluster = copy.clusterSize();
            boolean fromTarget;
            long n;
            lock.lock();
            try {
                long end = Math.min(copy.size(), offset + maxLength);
                checkSnapshot(offset, Math.min(end, offset + cluster));
                int c = (int) (offset / cluster);
                fromTarget = done.get(c);
                int e = fromTarget ? done.nextClearBit(c) : (done.nextSetBit(c) < 0 ? clusters() : done.nextSetBit(c));
                int a = access.nextClearBit(c);
                n = Math.min(end, Math.min(e, a) * cluster) - offset;
            } finally {
                lock.unlock();
            }
            BlockStatus s = (fromTarget ? target : file).chainStatus(offset, n);
            return new BlockStatus(offset, s.length(), true, s.zero(), 0);
        }

        /** The snapshot's user no longer needs the range: it is not copied any more, nor readable. */
        void snapshotDiscard(long offset, long length) throws IOException {
            long cluster = copy.clusterSize();
            lock.lock();
            try {
                int first = (int) ((offset + cluster - 1) / cluster);
                int end = offset + length >= copy.size() ? clusters() : (int) ((offset + length) / cluster);
                if (first < end) {
                    access.clear(first, end);
                }
            } finally {
                lock.unlock();
            }
            copy.reset(offset, length);
            target.discard(offset, length);
        }

        private void checkSnapshot(long start, long end) throws IOException {
            if (snapshotError != null) {
                throw new BlockIoException(Errno.EACCES, name + ": the snapshot is broken: " + snapshotError.getMessage());
            }
            long cluster = copy.clusterSize();
            int c = (int) (start / cluster);
            int e = (int) Math.min(clusters(), (end + cluster - 1) / cluster);
            int hole = access.nextClearBit(c);
            if (hole < e) {
                throw new BlockIoException(Errno.EACCES, name + ": the snapshot's range at " + start + " was discarded");
            }
        }

        // ---- forwarding -----------------------------------------------------------------------------

        @Override
        public Optional<String> filteredChild() {
            return Optional.of("file");
        }

        /** {@code discard-source}: the filter discards from its file what it copied, so it writes it. */
        @Override
        public Set<io.blockjobs.sdk.block.BlockPermission> extraChildPermissions(String childName) {
            return discardSource && childName.equals("file")
                    ? Set.of(io.blockjobs.sdk.block.BlockPermission.WRITE) : Set.of();
        }

        @Override
        public Limits limits() {
            return new Limits(1, 0, file.clusterSize());
        }

        @Override
        public String driver() {
            return "copy-before-write";
        }

        @Override
        public String filename() {
            return file.filename();
        }

        @Override
        public long size() throws IOException {
            return file.size();
        }

        @Override
        public boolean isReadOnly() {
            return file.isReadOnly();
        }

        @Override
        public int clusterSize() {
            return file.clusterSize();
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            file.read(offset, dst);
        }

        @Override
        public void flush() throws IOException {
            file.flush();
        }

        @Override
        public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
            return file.blockStatus(offset, maxLength);
        }

        @Override
        public void reopenReadWrite() {
            // nothing of its own: the graph reopens the child
        }

        @Override
        public void close() {
            OPEN.remove(name, this);
        }
    }
}
