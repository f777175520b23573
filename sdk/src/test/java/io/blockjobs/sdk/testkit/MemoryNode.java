package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

/**
 * An image in memory that behaves as a qcow2 v3 node of the platform's graph does, for plugin
 * tests: allocation per cluster (data, zero, or left to the backing node), a backing node and the
 * backing file name its header records, copy-on-write of partly written clusters, copy-on-read
 * writes that fill only unallocated clusters (each cluster checked and written atomically against
 * other writes), {@link #unallocate}, write hooks, tracked requests with real serialising ranges,
 * flushes that are counted, read-only mode, and injected failures ({@link Fault}).
 *
 * <p>The setup methods ({@link #fill}, {@link #random}, {@link #zero}) write directly: they bypass
 * read-only mode, hooks and faults. Everything else behaves as a request to the node. Sizes up to
 * a few hundred MiB are fine: only allocated clusters take memory.
 */
public final class MemoryNode implements BlockNode, ViewSource {
    /** The cluster size unless one is given: qcow2's default. */
    public static final int DEFAULT_CLUSTER_SIZE = 64 * 1024;
    private static final byte[] ZERO = new byte[0]; // marks a zero cluster (allocated, reads as zeroes)

    private final String name;
    private final long size;
    private final int clusterSize;
    private final ReentrantLock lock = new ReentrantLock();
    private final Map<Long, byte[]> clusters = new HashMap<>(); // absent: unallocated
    private final RangeTracker requests = new RangeTracker();
    private final List<WriteHook> hooks = new CopyOnWriteArrayList<>();
    private final List<Fault> faults = new CopyOnWriteArrayList<>();
    private final List<Stall> stalls = new CopyOnWriteArrayList<>();
    private final AtomicLong reads = new AtomicLong();
    private final AtomicLong writes = new AtomicLong();
    private final AtomicLong flushes = new AtomicLong();
    private final AtomicLong bytesRead = new AtomicLong();
    private final AtomicLong bytesWritten = new AtomicLong();
    private volatile boolean unflushed;
    private volatile String filename;
    private volatile BlockNode backing;
    private volatile String backingFile;
    private volatile String backingFormat;
    private volatile boolean readOnly;
    private volatile boolean closed;

    /** A node of {@code size} bytes without a backing node. */
    public MemoryNode(String name, long size) {
        this(name, size, null, DEFAULT_CLUSTER_SIZE);
    }

    /** A node of {@code size} bytes over {@code backing} (or none). */
    public MemoryNode(String name, long size, BlockNode backing) {
        this(name, size, backing, DEFAULT_CLUSTER_SIZE);
    }

    /** A node of {@code size} bytes over {@code backing} (or none), with its own cluster size. */
    public MemoryNode(String name, long size, BlockNode backing, int clusterSize) {
        if (size < 0 || clusterSize < 512) {
            throw new IllegalArgumentException("bad size " + size + " or cluster size " + clusterSize);
        }
        this.name = name;
        this.filename = name;
        this.size = size;
        this.clusterSize = clusterSize;
        setBacking(backing);
    }

    // ---- setup ---------------------------------------------------------------------------------

    /** Makes the node read-only, as QEMU opens backing files; a job reopens it for writing. */
    public MemoryNode readOnly() {
        this.readOnly = true;
        return this;
    }

    /** Sets the node's file name (its node name unless set), as backing-file strings name it. */
    public MemoryNode filename(String file) {
        this.filename = file;
        return this;
    }

    /** Fills {@code [offset, offset + length)} with {@code value}, allocating it. */
    public MemoryNode fill(long offset, long length, byte value) {
        byte[] data = new byte[(int) length];
        java.util.Arrays.fill(data, value);
        return put(offset, data);
    }

    /** Fills the range with bytes drawn from {@code seed}: data that shows where it came from. */
    public MemoryNode random(long offset, long length, long seed) {
        byte[] data = new byte[(int) length];
        new SplittableRandom(seed).nextBytes(data);
        return put(offset, data);
    }

    /** Writes {@code data} at {@code offset}, allocating it. */
    public MemoryNode put(long offset, byte[] data) {
        try {
            checkRange(offset, data.length);
            writeData(offset, ByteBuffer.wrap(data));
        } catch (IOException e) {
            throw new IllegalArgumentException(e.getMessage(), e);
        }
        return this;
    }

    /** Makes the whole clusters of the range zero clusters (allocated, reading as zeroes). */
    public MemoryNode zero(long offset, long length) {
        lock.lock();
        try {
            for (long c = offset / clusterSize; c < ceilDiv(offset + length, clusterSize); c++) {
                clusters.put(c, ZERO);
            }
        } finally {
            lock.unlock();
        }
        return this;
    }

    /** Makes {@code node} the backing node, and its file name and driver what the header records. */
    public MemoryNode setBacking(BlockNode node) {
        this.backing = node;
        this.backingFile = node == null ? null : node.filename();
        this.backingFormat = node == null ? null : node.driver();
        return this;
    }

    /** Adds a hook run around every write, write-zeroes and discard, after those already there. */
    public void addHook(WriteHook hook) {
        hooks.add(hook);
    }

    /** Removes a hook. */
    public void removeHook(WriteHook hook) {
        hooks.remove(hook);
    }

    // ---- faults --------------------------------------------------------------------------------

    /** Makes every read that covers {@code offset} fail with {@code errno}. */
    public Fault failReads(long offset, Errno errno) {
        return addFault(Fault.Kind.READ, offset, errno, false);
    }

    /** Makes the next read that covers {@code offset} fail with {@code errno}. */
    public Fault failReadOnce(long offset, Errno errno) {
        return addFault(Fault.Kind.READ, offset, errno, true);
    }

    /** Makes every request that changes data at {@code offset} fail with {@code errno}. */
    public Fault failWrites(long offset, Errno errno) {
        return addFault(Fault.Kind.WRITE, offset, errno, false);
    }

    /** Makes the next request that changes data at {@code offset} fail with {@code errno} (ENOSPC...). */
    public Fault failWriteOnce(long offset, Errno errno) {
        return addFault(Fault.Kind.WRITE, offset, errno, true);
    }

    /** Makes reads covering {@code offset} fail with an I/O error (-1: no more failures). */
    public MemoryNode failReadsAt(long offset) {
        if (offset < 0) {
            clearFaults();
        } else {
            failReads(offset, Errno.EIO);
        }
        return this;
    }

    /**
     * Holds the next read that covers {@code offset} in flight, after it has read its data, until
     * the returned stall is released: a test's write can land exactly while the read is out.
     */
    public Stall stallRead(long offset) {
        Stall s = new Stall(offset);
        stalls.add(s);
        return s;
    }

    /** Removes every injected fault. */
    public void clearFaults() {
        faults.forEach(Fault::remove);
        faults.clear();
    }

    private Fault addFault(Fault.Kind kind, long offset, Errno errno, boolean once) {
        Fault f = new Fault(name, kind, offset, errno, once);
        faults.add(f);
        return f;
    }

    // ---- inspection ----------------------------------------------------------------------------

    /** What the whole node reads now, through its backing chain (no request is made: no faults). */
    public byte[] view() {
        return view(0, size);
    }

    /** What {@code [offset, offset + length)} reads now, through the backing chain. */
    public byte[] view(long offset, long length) {
        ByteBuffer dst = ByteBuffer.allocate((int) length);
        try {
            readView(offset, dst);
        } catch (IOException e) {
            throw new IllegalStateException(e.getMessage(), e);
        }
        return dst.array();
    }

    /** Whether this layer holds the cluster at {@code offset} (data or zeroes). */
    public boolean isAllocated(long offset) {
        lock.lock();
        try {
            return clusters.containsKey(offset / clusterSize);
        } finally {
            lock.unlock();
        }
    }

    /** Bytes this layer holds itself (allocated clusters, zero clusters included). */
    public long allocatedBytes() {
        lock.lock();
        try {
            long total = 0;
            for (long c : clusters.keySet()) {
                total += Math.min(clusterSize, size - c * clusterSize);
            }
            return total;
        } finally {
            lock.unlock();
        }
    }

    /** The backing file name the header records, or null. */
    public String backingFile() {
        return backingFile;
    }

    /** The backing format the header records, or null. */
    public String backingFormat() {
        return backingFormat;
    }

    /** How many reads this node served. */
    public int reads() {
        return (int) reads.get();
    }

    /** How many requests changed data (writes, zeroes, discards, copy-on-read, unallocate). */
    public int writes() {
        return (int) writes.get();
    }

    /** Bytes read by requests. */
    public long bytesRead() {
        return bytesRead.get();
    }

    /** Bytes changed by requests. */
    public long bytesWritten() {
        return bytesWritten.get();
    }

    /** How many flushes reached the node. */
    public int flushes() {
        return (int) flushes.get();
    }

    /** Whether data was changed since the last flush: it would not survive a crash. */
    public boolean hasUnflushedWrites() {
        return unflushed;
    }

    /** Requests in flight on the node now. */
    public int requestsInFlight() {
        return requests.inFlight();
    }

    // ---- for the harness -----------------------------------------------------------------------

    /** Reopens the node read-write (QEMU's reopen). */
    void reopenReadWrite() {
        readOnly = false;
    }

    /** Points the backing link elsewhere without changing the header (a filter moved in between). */
    void relink(BlockNode node) {
        this.backing = node;
    }

    /** Rewrites the backing file name and format in the header, as a format driver does. */
    void changeBackingFile(String file, String format) throws IOException {
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, name + ": is open read-only; cannot change its backing file");
        }
        this.backingFile = file;
        this.backingFormat = file == null ? null : format;
        flush(); // the header is written durably
    }

    /** The backing node itself (a filter, maybe). */
    BlockNode backingNode() {
        return backing;
    }

    // ---- BlockNode -----------------------------------------------------------------------------

    @Override
    public String driver() {
        return "memory";
    }

    @Override
    public String filename() {
        return filename;
    }

    @Override
    public String nodeName() {
        return name;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    @Override
    public int clusterSize() {
        return clusterSize;
    }

    @Override
    public Optional<BlockNode> backing() {
        return Optional.ofNullable(backing);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        checkOpen();
        checkRange(offset, length);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            doRead(offset, dst);
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int length = src.remaining();
        checkWritable();
        checkRange(offset, length);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            doWrite(offset, src, flags);
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    /**
     * Zeroes the range: whole clusters become zero clusters, partial ones are written with zero
     * bytes. With {@link RequestFlag#NO_FALLBACK} only whole clusters can be zeroed (the end of
     * the node counts as a cluster boundary); anything else fails with {@link Errno#ENOTSUP},
     * having done nothing, as qcow2's fast zeroes.
     */
    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        checkWritable();
        checkRange(offset, length);
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            boolean whole = offset % clusterSize == 0 && ((offset + length) % clusterSize == 0 || offset + length == size);
            if (!whole) {
                throw new BlockIoException(Errno.ENOTSUP, name + ": fast zero is not supported");
            }
        }
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE_ZEROES, offset, length, flags);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            before(request);
            boolean ok = false;
            try {
                fault(Fault.Kind.WRITE, offset, length);
                zeroRange(offset, length);
                count(writes, bytesWritten, length);
                if (flags.contains(RequestFlag.FUA)) {
                    flush();
                }
                ok = true;
            } finally {
                after(request, ok);
            }
        } finally {
            requests.end(t);
        }
    }

    /**
     * Discards the whole clusters of the range (the unaligned head and tail are dropped, as QEMU
     * does): they read as zeroes afterwards, as qcow2 v3 records them.
     */
    @Override
    public void discard(long offset, long length) throws IOException {
        checkWritable();
        checkRange(offset, length);
        WriteRequest request = new WriteRequest(WriteRequest.Kind.DISCARD, offset, length, RequestFlag.NONE);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            before(request);
            boolean ok = false;
            try {
                fault(Fault.Kind.WRITE, offset, length);
                lock.lock();
                try {
                    for (long c = firstWhole(offset); c < lastWhole(offset + length); c++) {
                        byte[] state = clusters.get(c);
                        if (state != null || backing != null) {
                            clusters.put(c, ZERO);
                        }
                    }
                    unflushed = true;
                } finally {
                    lock.unlock();
                }
                writes.incrementAndGet();
                ok = true;
            } finally {
                after(request, ok);
            }
        } finally {
            requests.end(t);
        }
    }

    /**
     * Copy-on-read: writes {@code src} only into the clusters of the range this layer does not
     * hold yet, each checked and written under the node's lock, so data copied up never overwrites
     * a write that came in meanwhile. No write hooks run (the data does not change), as QEMU's.
     */
    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        int length = src.remaining();
        checkWritable();
        checkRange(offset, length);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            fault(Fault.Kind.WRITE, offset, length);
            long pos = offset;
            while (src.hasRemaining()) {
                long c = pos / clusterSize;
                int inCluster = (int) (pos - c * clusterSize);
                int n = Math.min(src.remaining(), clusterLength(c) - inCluster);
                ByteBuffer piece = src.slice(src.position(), n);
                src.position(src.position() + n);
                byte[] merged = n == clusterLength(c) ? null : cowBase(c);
                lock.lock();
                try {
                    if (!clusters.containsKey(c)) { // a write since wins
                        byte[] data = merged != null ? merged : new byte[clusterLength(c)];
                        piece.get(data, inCluster, n);
                        clusters.put(c, data);
                        unflushed = true;
                    }
                } finally {
                    lock.unlock();
                }
                pos += n;
            }
            count(writes, bytesWritten, length);
        } finally {
            requests.end(t);
        }
    }

    /** Makes the whole clusters of the range read from the backing node again. */
    @Override
    public void unallocate(long offset, long length) throws IOException {
        checkWritable();
        checkRange(offset, length);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            fault(Fault.Kind.WRITE, offset, length);
            lock.lock();
            try {
                for (long c = firstWhole(offset); c < lastWhole(offset + length); c++) {
                    clusters.remove(c);
                }
                unflushed = true;
            } finally {
                lock.unlock();
            }
            writes.incrementAndGet();
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void flush() throws IOException {
        checkOpen();
        flushes.incrementAndGet();
        unflushed = false;
    }

    /** A real serialising range: waits for overlapping requests, holds new ones off until closed. */
    @Override
    public SerialisedRange serialise(long offset, long length) throws IOException {
        checkOpen();
        checkRange(offset, length);
        RangeTracker.Tracked t = requests.begin(offset, length, true);
        return new Held(t, offset, length);
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        checkOpen();
        if (offset < 0 || offset >= size || maxLength <= 0) {
            throw new BlockIoException(Errno.EINVAL, name + ": block status at offset " + offset
                    + " is outside the " + size + "-byte node");
        }
        long end = Math.min(size, offset + maxLength);
        lock.lock();
        try {
            long c = offset / clusterSize;
            byte[] first = clusters.get(c);
            long pos = (c + 1) * clusterSize;
            while (pos < end && sameState(first, clusters.get(pos / clusterSize))) {
                pos += clusterSize;
            }
            boolean allocated = first != null;
            boolean zero = first == ZERO || first == null && backing == null;
            return new BlockStatus(offset, Math.min(pos, end) - offset, allocated, zero, allocated ? 0 : 1);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void close() {
        closed = true;
    }

    @Override
    public String toString() {
        return "MemoryNode[" + name + ", " + size + " bytes" + (backing != null ? ", over " + backing.nodeName() : "")
                + (readOnly ? ", read-only" : "") + "]";
    }

    // ---- the driver ----------------------------------------------------------------------------

    private void doRead(long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        fault(Fault.Kind.READ, offset, length);
        readRange(offset, dst, false);
        count(reads, bytesRead, length);
        for (Stall s : stalls) {
            if (s.offset() >= offset && s.offset() < offset + Math.max(length, 1) && stalls.remove(s)) {
                s.hold();
            }
        }
    }

    private void doWrite(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int length = src.remaining();
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE, offset, length, flags);
        before(request);
        boolean ok = false;
        try {
            fault(Fault.Kind.WRITE, offset, length);
            writeData(offset, src);
            count(writes, bytesWritten, length);
            if (flags.contains(RequestFlag.FUA)) {
                flush();
            }
            ok = true;
        } finally {
            after(request, ok);
        }
    }

    @Override
    public void readView(long offset, ByteBuffer dst) throws IOException {
        readRange(offset, dst, true);
    }

    /** Reads runs of clusters in one state; unallocated runs come from the backing node. */
    private void readRange(long offset, ByteBuffer dst, boolean view) throws IOException {
        long end = offset + dst.remaining();
        long pos = offset;
        while (pos < end) {
            long c = pos / clusterSize;
            int inCluster = (int) (pos - c * clusterSize);
            int n = (int) Math.min(end - pos, clusterLength(c) - inCluster);
            boolean fromBacking;
            lock.lock();
            try {
                byte[] state = clusters.get(c);
                fromBacking = state == null;
                if (state == ZERO || state == null && backing == null) {
                    dst.put(new byte[n]);
                } else if (state != null) {
                    dst.put(state, inCluster, n);
                }
            } finally {
                lock.unlock();
            }
            if (fromBacking && backing != null) {
                // extend over the following unallocated clusters: one read of the backing node
                long runEnd = pos + n;
                lock.lock();
                try {
                    while (runEnd < end && !clusters.containsKey(runEnd / clusterSize)) {
                        runEnd = Math.min(end, runEnd + clusterSize);
                    }
                } finally {
                    lock.unlock();
                }
                int run = (int) (runEnd - pos);
                ByteBuffer part = dst.slice(dst.position(), run);
                readBacking(pos, part, view);
                dst.position(dst.position() + run);
                n = run;
            }
            pos += n;
        }
    }

    /** Reads from the backing node; past its end the node reads zeroes. */
    private void readBacking(long offset, ByteBuffer dst, boolean view) throws IOException {
        BlockNode b = backing;
        long backingSize = b.size();
        int inside = (int) Math.max(0, Math.min(dst.remaining(), backingSize - offset));
        if (inside > 0) {
            ByteBuffer part = dst.slice(dst.position(), inside);
            if (view) {
                ViewSource.read(b, offset, part);
            } else {
                b.read(offset, part);
            }
        }
        dst.put(dst.position() + inside, new byte[dst.remaining() - inside]);
        dst.position(dst.limit());
    }

    /** Writes data cluster by cluster; a partly written unallocated cluster copies its rest first. */
    private void writeData(long offset, ByteBuffer src) throws IOException {
        long pos = offset;
        while (src.hasRemaining()) {
            long c = pos / clusterSize;
            int inCluster = (int) (pos - c * clusterSize);
            int clusterLength = clusterLength(c);
            int n = Math.min(src.remaining(), clusterLength - inCluster);
            ByteBuffer piece = src.slice(src.position(), n);
            src.position(src.position() + n);
            byte[] cow = null;
            while (true) {
                lock.lock();
                try {
                    byte[] state = clusters.get(c);
                    byte[] data = null;
                    if (n == clusterLength || state == ZERO) {
                        data = new byte[clusterLength];
                    } else if (state != null) {
                        data = state;
                    } else if (cow != null) {
                        data = cow;
                    }
                    if (data != null) {
                        piece.get(data, inCluster, n);
                        clusters.put(c, data);
                        unflushed = true;
                        break;
                    }
                } finally {
                    lock.unlock();
                }
                cow = cowBase(c); // outside the lock: the backing node may be busy; check again after
            }
            pos += n;
        }
    }

    private void zeroRange(long offset, long length) throws IOException {
        long end = offset + length;
        long pos = offset;
        while (pos < end) {
            long c = pos / clusterSize;
            int inCluster = (int) (pos - c * clusterSize);
            int n = (int) Math.min(end - pos, clusterLength(c) - inCluster);
            if (n == clusterLength(c)) {
                lock.lock();
                try {
                    clusters.put(c, ZERO);
                    unflushed = true;
                } finally {
                    lock.unlock();
                }
            } else {
                writeData(pos, ByteBuffer.allocate(n));
            }
            pos += n;
        }
    }

    /** What cluster {@code c} reads as now, as a new array: the base of a copy-on-write. */
    private byte[] cowBase(long c) throws IOException {
        long start = c * clusterSize;
        ByteBuffer data = ByteBuffer.allocate(clusterLength(c));
        lock.lock();
        byte[] state;
        try {
            state = clusters.get(c);
        } finally {
            lock.unlock();
        }
        if (state == null && backing != null) {
            readBacking(start, data, false); // qcow2 reads the backing file for the rest of the cluster
        } else if (state != null && state != ZERO) {
            data.put(state);
        }
        return data.array();
    }

    private int clusterLength(long c) {
        return (int) Math.min(clusterSize, size - c * clusterSize);
    }

    private long firstWhole(long offset) {
        return ceilDiv(offset, clusterSize);
    }

    private long lastWhole(long end) {
        return end == size ? ceilDiv(end, clusterSize) : end / clusterSize;
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    private static boolean sameState(byte[] a, byte[] b) {
        return a == null ? b == null : a == ZERO ? b == ZERO : b != null && b != ZERO;
    }

    private void before(WriteRequest request) throws IOException {
        for (WriteHook h : hooks) {
            h.before(request);
        }
    }

    private void after(WriteRequest request, boolean ok) {
        for (WriteHook h : hooks) {
            h.after(request, ok);
        }
    }

    private void fault(Fault.Kind kind, long offset, long length) throws BlockIoException {
        for (Fault f : faults) {
            f.check(kind, offset, length);
        }
    }

    private static void count(AtomicLong requestsCount, AtomicLong bytes, long length) {
        requestsCount.incrementAndGet();
        bytes.addAndGet(length);
    }

    private void checkOpen() throws IOException {
        if (closed) {
            throw new BlockIoException(Errno.EIO, name + ": the node was closed");
        }
    }

    private void checkWritable() throws IOException {
        checkOpen();
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, name + ": Block node is read-only");
        }
    }

    private void checkRange(long offset, long length) throws IOException {
        if (offset < 0 || length < 0 || offset > size - length) {
            throw new BlockIoException(Errno.EINVAL, name + ": request [" + offset + ", +" + length
                    + ") is past the end of the " + size + "-byte image");
        }
    }

    /** A serialising request's range: I/O inside it does not wait for the range itself. */
    private final class Held implements SerialisedRange {
        private final RangeTracker.Tracked tracked;
        private final long offset;
        private final long length;
        private boolean released;

        Held(RangeTracker.Tracked tracked, long offset, long length) {
            this.tracked = tracked;
            this.offset = offset;
            this.length = length;
        }

        @Override
        public long offset() {
            return offset;
        }

        @Override
        public long length() {
            return length;
        }

        private void inside(long o, long n) throws IOException {
            if (o < offset || o + n > offset + length) {
                throw new BlockIoException(Errno.EINVAL, name + ": request [" + o + ", +" + n
                        + ") is outside the serialised range [" + offset + ", +" + length + ")");
            }
        }

        @Override
        public void read(long o, ByteBuffer dst) throws IOException {
            inside(o, dst.remaining());
            checkOpen();
            doRead(o, dst);
        }

        @Override
        public void write(long o, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
            inside(o, src.remaining());
            checkWritable();
            doWrite(o, src, flags == null ? EnumSet.noneOf(RequestFlag.class) : flags);
        }

        @Override
        public synchronized void close() {
            if (!released) {
                released = true;
                requests.end(tracked);
            }
        }
    }
}
