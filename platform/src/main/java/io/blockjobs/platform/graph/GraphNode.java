package io.blockjobs.platform.graph;

import io.blockjobs.platform.image.BlkdebugEvent;
import io.blockjobs.platform.image.DebugEvents;
import io.blockjobs.platform.image.NodeLimits;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A named node of the graph and its request entry point. Every request to the node, whoever
 * sends it (an export, a job, the node's parent), passes here: it is checked against the node's
 * size and mode, tracked by range ({@link RequestTracker}), run through the node's write hooks,
 * aligned to what the driver needs and split at its largest transfer, and counted. The driver
 * ({@link DriverNode}) sees only what passed.
 *
 * <p>Nodes added by {@code blockdev-add} belong to the monitor; nodes opened on the way (inline
 * children, backing files found in headers, jobs' filters) get generated names and go when
 * their last parent goes.
 */
public final class GraphNode implements BlockNode, NodeLimits, io.blockjobs.platform.image.Resizable {
    private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(1 << 20).asReadOnlyBuffer();

    private final String name;
    private final String driverName;
    private final boolean monitorOwned;
    private volatile NodeOptions options;
    private volatile tools.jackson.databind.node.ObjectNode explicitOptions; // as opened or last reopened
    private final RequestTracker requests = new RequestTracker();
    private final BlockStats stats = new BlockStats();
    private volatile WriteHook[] hooks = new WriteHook[0]; // replaced whole: a request runs the hooks it began with
    final List<Edge> children = new CopyOnWriteArrayList<>();
    final List<Edge> parents = new CopyOnWriteArrayList<>(); // newest first, as QEMU's list
    private volatile DriverNode driver;
    private volatile Limits limits = new Limits(1, 0, 64 * 1024);
    private volatile boolean readOnly;
    private volatile boolean closed;
    private final java.util.concurrent.atomic.AtomicLong writeThreshold = new java.util.concurrent.atomic.AtomicLong();

    GraphNode(String name, String driverName, boolean monitorOwned, NodeOptions options) {
        this.name = name;
        this.driverName = driverName;
        this.monitorOwned = monitorOwned;
        this.options = options;
        this.readOnly = options.readOnly();
    }

    void attachDriver(DriverNode node) {
        this.driver = node;
        this.limits = node.limits();
        this.readOnly = readOnly || node.isReadOnly();
    }

    public String name() {
        return name;
    }

    @Override
    public String nodeName() {
        return name;
    }

    /** The driver's implementation of this node (for the graph and the platform's own drivers). */
    public DriverNode driverNode() {
        return driver;
    }

    public boolean monitorOwned() {
        return monitorOwned;
    }

    public NodeOptions options() {
        return options;
    }

    /** The node's generic options after a reopen ({@code blockdev-reopen}), on the main loop, drained. */
    void setOptions(NodeOptions options) {
        this.options = options;
    }

    /**
     * The options the node was opened with, or last reopened with (QEMU's
     * {@code explicit_options}): what a reopen compares unchangeable options against.
     */
    tools.jackson.databind.node.ObjectNode explicitOptions() {
        return explicitOptions;
    }

    void setExplicitOptions(tools.jackson.databind.node.ObjectNode options) {
        this.explicitOptions = options;
    }

    @Override
    public Limits limits() {
        return limits;
    }

    public BlockStats stats() {
        return stats;
    }

    /** The child edges, in the order the driver attached them. */
    public List<Edge> children() {
        return List.copyOf(children);
    }

    /** The edges that point to this node, newest first. */
    public List<Edge> parents() {
        return List.copyOf(parents);
    }

    /** The child edge named {@code childName}, or null. */
    public Edge child(String childName) {
        for (Edge e : children) {
            if (e.name().equals(childName)) {
                return e;
            }
        }
        return null;
    }

    /** The node of the child named {@code childName}, or null. */
    public GraphNode childNode(String childName) {
        Edge e = child(childName);
        return e == null ? null : e.child();
    }

    /** Whether this node forwards requests to one child it filters (a property of its driver). */
    public boolean isFilter() {
        return driver.filteredChild().isPresent();
    }

    /** The child a filter forwards to, or null for other nodes. */
    public Edge filteredEdge() {
        Optional<String> f = driver.filteredChild();
        return f.isEmpty() ? null : child(f.get());
    }

    /** The protocol child of a format node ({@code file}), or null. */
    public GraphNode file() {
        return childNode("file");
    }

    /** The node's backing child itself (not walked through filters), or null. */
    public GraphNode backingNode() {
        return childNode("backing");
    }

    /**
     * The next layer down the chain. A filter and the node it filters are one layer: a filter's
     * next layer is its child's. A format node's next layer is its backing child.
     */
    public GraphNode chainNext() {
        Edge f = filteredEdge();
        if (f != null) {
            return f.child().chainNext();
        }
        return backingNode();
    }

    /** The node a filter stack stands for: below every filter from here. */
    public GraphNode skipFilters() {
        GraphNode n = this;
        for (Edge f = n.filteredEdge(); f != null; f = n.filteredEdge()) {
            n = f.child();
        }
        return n;
    }

    /** Number of layers below this one. */
    public int backingDepth() {
        int depth = 0;
        for (GraphNode b = chainNext(); b != null; b = b.chainNext()) {
            depth++;
        }
        return depth;
    }

    /** Adds a hook run around every write to this node, after those already there. */
    public synchronized void addHook(WriteHook hook) {
        WriteHook[] now = java.util.Arrays.copyOf(hooks, hooks.length + 1);
        now[now.length - 1] = hook;
        hooks = now;
    }

    public synchronized void removeHook(WriteHook hook) {
        List<WriteHook> now = new ArrayList<>(List.of(hooks));
        if (now.remove(hook)) {
            hooks = now.toArray(new WriteHook[0]);
        }
    }

    @Override
    public void addWriteHook(WriteHook hook) {
        addHook(hook);
    }

    @Override
    public void removeWriteHook(WriteHook hook) {
        removeHook(hook);
    }

    /** Whether the node is read-only only because {@code auto-read-only} found its file unwritable. */
    public boolean readOnlyByFallback() {
        return readOnly && options.autoReadOnly() && !options.readOnly();
    }

    /**
     * QEMU's error when a user needs to write to this read-only node. An {@code auto-read-only}
     * node is reopened for writing when a writer comes, and that open fails as the first did.
     */
    public String writeRefusal() {
        return readOnlyByFallback() ? "Could not open '" + filename() + "': Permission denied" : "Block node is read-only";
    }

    void setReadOnly(boolean readOnly) {
        this.readOnly = readOnly;
    }

    void markClosed() {
        closed = true;
    }

    /** Requests in flight on this node now. */
    int requestsInFlight() {
        return requests.inFlight();
    }

    /** Waits until no request is in flight on this node. */
    void awaitIdle() {
        requests.awaitIdle();
    }

    /**
     * Changes the node's size, as QEMU's {@code bdrv_co_truncate}: a read-only node refuses, a
     * filter passes it to the node it filters, a driver that cannot resize refuses. The caller
     * holds the {@code resize} permission (a root edge) and drains the node.
     */
    @Override
    public void truncate(long size) throws IOException {
        checkOpen();
        if (size < 0) {
            throw new BlockIoException(Errno.EINVAL, "Image size cannot be negative");
        }
        if (readOnly) {
            throw new BlockIoException(Errno.EACCES, "Image is read-only");
        }
        Edge f = filteredEdge();
        if (driver instanceof io.blockjobs.platform.image.Resizable r) {
            r.truncate(size);
        } else if (f != null) {
            f.child().truncate(size);
        } else {
            throw new BlockIoException(Errno.ENOTSUP, "Image format driver does not support resize");
        }
    }

    /** QEMU's {@code write_threshold_offset}: 0 when none is set. */
    public long writeThreshold() {
        return writeThreshold.get();
    }

    /** Sets the write threshold (0: none), as {@code block-set-write-threshold}. */
    public void setWriteThreshold(long threshold) {
        writeThreshold.set(threshold);
    }

    /**
     * QEMU's {@code bdrv_write_threshold_check_write}: if a request ending at {@code end} passes
     * the threshold, clears it (once: concurrent writers race for it) and returns the threshold it
     * passed; otherwise returns 0.
     */
    public long passWriteThreshold(long end) {
        while (true) {
            long t = writeThreshold.get();
            if (t == 0 || Long.compareUnsigned(end, t) <= 0) { // QEMU's threshold is a uint64
                return 0;
            }
            if (writeThreshold.compareAndSet(t, 0)) {
                return t;
            }
        }
    }

    // ---- BlockNode: the entry point --------------------------------------------------------------

    @Override
    public String driver() {
        return driverName;
    }

    @Override
    public String filename() {
        return driver.filename();
    }

    @Override
    public long size() throws IOException {
        return driver.size();
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    /** As QEMU's {@code bdrv_supports_compressed_writes}: the driver's, or a filter's child's. */
    @Override
    public boolean supportsCompressedWrites() {
        DriverNode d = driver;
        if (d != null && d.supportsCompressedWrites()) {
            return true;
        }
        Edge f = filteredEdge();
        return f != null && f.child().supportsCompressedWrites();
    }

    @Override
    public int clusterSize() {
        return driver.clusterSize();
    }

    @Override
    public Optional<BlockNode> backing() {
        return Optional.ofNullable(chainNext());
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        read(offset, dst, true);
    }

    /** A read; {@code readAio}: fire {@code read_aio} as QEMU's raw does (not for qcow2's own reads). */
    void read(long offset, ByteBuffer dst, boolean readAio) throws IOException {
        int length = dst.remaining();
        check(offset, length, false, BlockStats.Kind.READ);
        if (readAio) {
            debug(BlkdebugEvent.READ_AIO);
        }
        long start = System.nanoTime();
        boolean ok = false;
        RequestTracker.Tracked t = requests.begin(offset, length, false);
        try {
            readAligned(offset, dst);
            ok = true;
        } finally {
            requests.end(t);
            stats.done(BlockStats.Kind.READ, length, start, ok);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> requested) throws IOException {
        int length = src.remaining();
        check(offset, length, true, BlockStats.Kind.WRITE);
        debug(BlkdebugEvent.WRITE_AIO);
        Set<RequestFlag> flags = honourNoFlush(requested);
        if (flags.contains(RequestFlag.WRITE_COMPRESSED) && !supportsCompressedWrites()) {
            throw new BlockIoException(io.blockjobs.sdk.block.Errno.ENOTSUP, name + ": compressed writes are not supported");
        }
        if (options.detectZeroes() != NodeOptions.DetectZeroes.OFF && isZero(src)) {
            Set<RequestFlag> zf = EnumSet.noneOf(RequestFlag.class);
            zf.addAll(flags);
            if (options.detectZeroes() == NodeOptions.DetectZeroes.UNMAP) {
                zf.add(RequestFlag.MAY_UNMAP);
            }
            src.position(src.limit());
            zeroes(offset, length, zf, BlockStats.Kind.WRITE);
            return;
        }
        boolean unaligned = !aligned(offset, length);
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE, offset, length, flags);
        long start = System.nanoTime();
        boolean ok = false;
        RequestTracker.Tracked t = unaligned ? beginPadded(offset, length) : requests.begin(offset, length, false);
        try {
            WriteHook[] ran = before(request);
            try {
                writeAligned(offset, src, flags);
                ok = true;
            } finally {
                after(ran, request, ok);
            }
        } finally {
            requests.end(t);
            stats.done(BlockStats.Kind.WRITE, length, start, ok);
            if (ok) {
                stats.wrote(offset + length);
            }
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        check(offset, length, true, BlockStats.Kind.WRITE);
        zeroes(offset, length, flags, BlockStats.Kind.WRITE);
    }

    private void zeroes(long offset, long length, Set<RequestFlag> flags, BlockStats.Kind kind) throws IOException {
        Set<RequestFlag> f = honourNoFlush(flags);
        if (!options.discardUnmap() && f.contains(RequestFlag.MAY_UNMAP)) {
            f = EnumSet.copyOf(f);
            f.remove(RequestFlag.MAY_UNMAP); // discard=ignore: zeroes keep their storage
        }
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE_ZEROES, offset, length, f);
        long start = System.nanoTime();
        boolean ok = false;
        boolean unaligned = !aligned(offset, length);
        RequestTracker.Tracked t = unaligned ? beginPadded(offset, length) : requests.begin(offset, length, false);
        try {
            WriteHook[] ran = before(request);
            try {
                zeroesAligned(offset, length, f);
                ok = true;
            } finally {
                after(ran, request, ok);
            }
        } finally {
            requests.end(t);
            stats.done(kind, length, start, ok);
            if (ok) {
                stats.wrote(offset + length);
            }
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        check(offset, length, true, BlockStats.Kind.UNMAP);
        long start = System.nanoTime();
        if (!options.discardUnmap()) {
            stats.done(BlockStats.Kind.UNMAP, length, start, true); // discard=ignore: accepted, dropped
            return;
        }
        // Discards are advisory: the unaligned head and tail are dropped, as QEMU does.
        int align = limits.requestAlignment();
        long first = ceil(offset, align);
        long last = Math.max(first, floor(offset + length, align));
        if (offset + length == size()) {
            last = offset + length;
        }
        WriteRequest request = new WriteRequest(WriteRequest.Kind.DISCARD, offset, length, RequestFlag.NONE);
        boolean ok = false;
        RequestTracker.Tracked t = requests.begin(offset, length, false);
        try {
            WriteHook[] ran = before(request);
            try {
                int max = maxChunk();
                for (long pos = first; pos < last; ) {
                    long n = Math.min(max, last - pos);
                    driver.discard(pos, n);
                    pos += n;
                }
                ok = true;
            } finally {
                after(ran, request, ok);
            }
        } finally {
            requests.end(t);
            stats.done(BlockStats.Kind.UNMAP, length, start, ok);
        }
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        int length = src.remaining();
        check(offset, length, true, BlockStats.Kind.WRITE);
        long start = System.nanoTime();
        boolean ok = false;
        RequestTracker.Tracked t = requests.begin(offset, length, false);
        try {
            debug(BlkdebugEvent.COR_WRITE);
            driver.writeUnallocated(offset, src); // leaves the data as it reads: no hooks, as QEMU's copy-on-read
            ok = true;
        } finally {
            requests.end(t);
            stats.done(BlockStats.Kind.WRITE, length, start, ok);
        }
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        check(offset, length, true, BlockStats.Kind.UNMAP);
        long start = System.nanoTime();
        boolean ok = false;
        RequestTracker.Tracked t = requests.begin(offset, length, false);
        try {
            driver.unallocate(offset, length); // the data now comes from below, unchanged
            ok = true;
        } finally {
            requests.end(t);
            stats.done(BlockStats.Kind.UNMAP, length, start, ok);
        }
    }

    @Override
    public void flush() throws IOException {
        checkOpen();
        long start = System.nanoTime();
        boolean ok = false;
        try {
            if (!options.noFlush()) {
                debug(BlkdebugEvent.FLUSH_TO_OS);
                debug(BlkdebugEvent.FLUSH_TO_DISK);
                driver.flush();
            }
            ok = true;
        } finally {
            stats.done(BlockStats.Kind.FLUSH, 0, start, ok);
        }
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        checkOpen();
        long size = size();
        if (offset < 0 || offset >= size || maxLength <= 0) {
            throw new BlockIoException(Errno.EINVAL, name + ": block status at offset " + offset
                    + " is outside the " + size + "-byte node");
        }
        return driver.blockStatus(offset, Math.min(maxLength, size - offset));
    }

    /**
     * As {@link BlockNode#chainStatus}, with QEMU's rule for a range no layer allocates: it reads
     * as zeroes at the end of a backing chain only if the bottom format could have had a backing
     * file (qcow2); a protocol that leaves data undefined ({@code null-co} without
     * {@code read-zeroes}) says what it says.
     */
    @Override
    public BlockStatus chainStatus(long offset, long maxLength) throws IOException {
        GraphNode node = this;
        int depth = 0;
        long length = maxLength;
        while (true) {
            BlockStatus status = node.blockStatus(offset, length);
            if (status.allocated()) {
                return new BlockStatus(offset, status.length(), true, status.zero(), depth);
            }
            length = status.length();
            GraphNode next = node.chainNext();
            depth++;
            if (next == null) {
                boolean zero = node.skipFilters().driver.supportsBacking() || status.zero();
                return new BlockStatus(offset, length, false, zero, depth);
            }
            node = next;
            long backingSize = node.size();
            if (offset >= backingSize) {
                return new BlockStatus(offset, length, false, true, depth);
            }
            length = Math.min(length, backingSize - offset);
        }
    }

    /**
     * How many bytes from {@code offset}, at most {@code maxLength}, share one allocation depth,
     * and that depth: QEMU's {@code bdrv_is_allocated_above(bs, NULL, false, ...)}, the
     * {@code qemu:allocation-depth} of an NBD export. The depth is 0 where no layer allocates the
     * range, 1 where this node does, 2 where the next does, and so on; each step is QEMU's
     * {@code bdrv_filter_or_cow_bs} (a filter's child, else the backing child), so a filter counts
     * as a layer of its own below its first query (which already sees its child's allocation). A
     * layer too short to reach {@code offset} allocates the range there, as zeroes.
     */
    public Allocation allocationDepth(long offset, long maxLength) throws IOException {
        BlockStatus status = blockStatus(offset, maxLength);
        int depth = 1;
        long length = status.length();
        GraphNode node = this;
        while (!status.allocated()) {
            node = node.filterOrCow();
            if (node == null) {
                return new Allocation(length, 0);
            }
            depth++;
            if (offset >= node.size()) {
                return new Allocation(length, depth);
            }
            status = node.blockStatus(offset, length);
            length = status.length();
        }
        return new Allocation(length, depth);
    }

    /** A run of {@link #allocationDepth}: {@code length} bytes at {@code depth} (0: unallocated). */
    public record Allocation(long length, int depth) {
    }

    /** QEMU's {@code bdrv_filter_or_cow_bs}: the child a filter forwards to, else the backing child. */
    public GraphNode filterOrCow() {
        Edge f = filteredEdge();
        return f != null ? f.child() : backingNode();
    }

    @Override
    public SerialisedRange serialise(long offset, long length) throws IOException {
        check(offset, length, false, BlockStats.Kind.READ);
        int align = limits.requestAlignment();
        long first = floor(offset, align);
        long end = ceil(offset + length, align);
        RequestTracker.Tracked t = requests.begin(first, end - first, true);
        return new Held(t, offset, length);
    }

    /** A serialising request's range: I/O inside it goes to the driver without waiting for itself. */
    private final class Held implements SerialisedRange {
        private final RequestTracker.Tracked tracked;
        private final long offset;
        private final long length;
        private boolean closed;

        Held(RequestTracker.Tracked tracked, long offset, long length) {
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
            debug(BlkdebugEvent.READ_AIO);
            long start = System.nanoTime();
            int n = dst.remaining();
            boolean ok = false;
            try {
                readAligned(o, dst);
                ok = true;
            } finally {
                stats.done(BlockStats.Kind.READ, n, start, ok);
            }
        }

        @Override
        public void write(long o, ByteBuffer src, Set<RequestFlag> requested) throws IOException {
            int n = src.remaining();
            inside(o, n);
            check(o, n, true, BlockStats.Kind.WRITE);
            debug(BlkdebugEvent.WRITE_AIO);
            Set<RequestFlag> flags = honourNoFlush(requested);
            WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE, o, n, flags);
            long start = System.nanoTime();
            boolean ok = false;
            try {
                WriteHook[] ran = before(request);
                try {
                    writeAligned(o, src, flags);
                    ok = true;
                } finally {
                    after(ran, request, ok);
                }
            } finally {
                stats.done(BlockStats.Kind.WRITE, n, start, ok);
            }
        }

        @Override
        public synchronized void close() {
            if (!closed) {
                closed = true;
                requests.end(tracked);
            }
        }
    }

    @Override
    public void close() throws IOException {
        // the graph closes nodes (BlockGraph.release)
    }

    @Override
    public String toString() {
        return name;
    }

    // ---- the path to the driver ----------------------------------------------------------------

    /**
     * Checks a request at the node's entry. Only negative ranges are refused here: a format
     * driver checks its own size, and its file grows as it allocates (QEMU checks sizes where a
     * user attaches, in the BlockBackend: see {@link Edge}).
     */
    private void check(long offset, long length, boolean write, BlockStats.Kind kind) throws IOException {
        checkOpen();
        if (write && readOnly) {
            stats.invalid(kind);
            throw new BlockIoException(Errno.EPERM, name + ": Block node is read-only");
        }
        if (offset < 0 || length < 0 || offset + length < 0) {
            stats.invalid(kind);
            throw new BlockIoException(Errno.EINVAL, filename() + ": invalid request [" + offset + ", +" + length + ")");
        }
    }

    /** A request refused before it ran, counted as QEMU's {@code invalid_*_operations}. */
    void countInvalid(BlockStats.Kind kind) {
        stats.invalid(kind);
    }

    private void checkOpen() throws IOException {
        if (closed) {
            throw new BlockIoException(Errno.EIO, name + ": the node was closed");
        }
    }

    /**
     * FUA is a flush after the write, and {@code cache.no-flush=on} drops flushes: QEMU emulates
     * FUA for drivers without it by a flush, which the option skips.
     */
    private Set<RequestFlag> honourNoFlush(Set<RequestFlag> flags) {
        if (!options.noFlush() || !flags.contains(RequestFlag.FUA)) {
            return flags;
        }
        Set<RequestFlag> f = EnumSet.copyOf(flags);
        f.remove(RequestFlag.FUA);
        return f;
    }

    /**
     * Runs the hooks' {@code before} and returns the hooks that ran, for {@link #after}: a hook
     * added or removed meanwhile never sees an {@code after} without its {@code before}, and
     * when one refuses, those before it see the request fail.
     */
    private WriteHook[] before(WriteRequest request) throws IOException {
        WriteHook[] now = hooks;
        for (int i = 0; i < now.length; i++) {
            try {
                now[i].before(request);
            } catch (IOException | RuntimeException e) {
                for (int j = 0; j < i; j++) {
                    now[j].after(request, false);
                }
                throw e;
            }
        }
        return now;
    }

    private static void after(WriteHook[] ran, WriteRequest request, boolean ok) {
        for (WriteHook h : ran) {
            h.after(request, ok);
        }
    }

    private boolean aligned(long offset, long length) {
        int align = limits.requestAlignment();
        return align == 1 || ((offset | length) & (align - 1)) == 0;
    }

    /** A write that pads to the alignment reads around itself: it serialises its aligned range. */
    private RequestTracker.Tracked beginPadded(long offset, long length) {
        int align = limits.requestAlignment();
        long first = floor(offset, align);
        long end = ceil(offset + length, align);
        return requests.begin(first, end - first, true);
    }

    private int maxChunk() {
        int max = limits.maxTransfer();
        return max == 0 ? 1 << 30 : max;
    }

    private void readAligned(long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        int align = limits.requestAlignment();
        if (aligned(offset, length)) {
            readSplit(offset, dst);
            return;
        }
        long first = floor(offset, align);
        long end = ceil(offset + length, align);
        ByteBuffer bounce = ByteBuffer.allocate(Math.toIntExact(end - first));
        readSplit(first, bounce);
        bounce.position((int) (offset - first)).limit((int) (offset - first) + length);
        dst.put(bounce);
    }

    private void readSplit(long offset, ByteBuffer dst) throws IOException {
        int max = maxChunk();
        if (dst.remaining() <= max) {
            driver.read(offset, dst);
            return;
        }
        long pos = offset;
        while (dst.hasRemaining()) {
            int n = Math.min(max, dst.remaining());
            ByteBuffer part = dst.slice(dst.position(), n);
            driver.read(pos, part);
            dst.position(dst.position() + n);
            pos += n;
        }
    }

    private void writeAligned(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int length = src.remaining();
        if (aligned(offset, length)) {
            writeEvents(offset, src, flags);
            return;
        }
        int align = limits.requestAlignment();
        long first = floor(offset, align);
        long end = ceil(offset + length, align);
        ByteBuffer bounce = ByteBuffer.allocate(Math.toIntExact(end - first));
        // Read the head and tail blocks the write only partly covers (read-modify-write), with
        // the events QEMU's bdrv_padding_rmw_read fires; as QEMU's, one read when they are the
        // same block or adjacent.
        boolean head = offset != first;
        boolean tail = offset + length != end;
        long span = end - first;
        boolean merged = tail && (span == align || (head && span == 2L * align));
        if (head || merged) {
            if (head) {
                debug(BlkdebugEvent.PWRITEV_RMW_HEAD);
            }
            if (merged) {
                debug(BlkdebugEvent.PWRITEV_RMW_TAIL);
            }
            readSplit(first, bounce.slice(0, merged ? (int) span : align));
            if (head) {
                debug(BlkdebugEvent.PWRITEV_RMW_AFTER_HEAD);
            }
            if (merged) {
                debug(BlkdebugEvent.PWRITEV_RMW_AFTER_TAIL);
            }
        }
        if (tail && !merged) {
            debug(BlkdebugEvent.PWRITEV_RMW_TAIL);
            readSplit(end - align, bounce.slice((int) (end - align - first), align));
            debug(BlkdebugEvent.PWRITEV_RMW_AFTER_TAIL);
        }
        bounce.position((int) (offset - first));
        bounce.put(src);
        bounce.clear();
        writeEvents(first, bounce, flags);
    }

    /** An aligned write to the driver, between QEMU's pwritev and pwritev_done events. */
    private void writeEvents(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        debug(BlkdebugEvent.PWRITEV);
        try {
            writeSplit(offset, src, flags);
        } finally {
            debug(BlkdebugEvent.PWRITEV_DONE);
        }
    }

    private void writeSplit(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int max = maxChunk();
        if (src.remaining() <= max) {
            driver.write(offset, src, flags);
            return;
        }
        long pos = offset;
        while (src.hasRemaining()) {
            int n = Math.min(max, src.remaining());
            ByteBuffer part = src.slice(src.position(), n);
            driver.write(pos, part, flags);
            src.position(src.position() + n);
            pos += n;
        }
    }

    private void zeroesAligned(long offset, long length, Set<RequestFlag> flags) throws IOException {
        int align = limits.requestAlignment();
        long first = ceil(offset, align);
        long last = floor(offset + length, align);
        if (first >= last) { // within one block: write zero buffers
            writeZeroBuffer(offset, length, flags);
            return;
        }
        if (offset < first) {
            writeZeroBuffer(offset, first - offset, flags);
        }
        int max = maxChunk();
        debug(BlkdebugEvent.PWRITEV_ZERO);
        try {
            for (long pos = first; pos < last; ) {
                long n = Math.min(max, last - pos);
                driver.writeZeroes(pos, n, flags);
                pos += n;
            }
        } finally {
            debug(BlkdebugEvent.PWRITEV_DONE);
        }
        if (last < offset + length) {
            writeZeroBuffer(last, offset + length - last, flags);
        }
    }

    private void writeZeroBuffer(long offset, long length, Set<RequestFlag> flags) throws IOException {
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            throw new BlockIoException(Errno.ENOTSUP, name + ": cannot write unaligned zeroes without a fallback");
        }
        Set<RequestFlag> plain = flags.contains(RequestFlag.FUA) ? Set.of(RequestFlag.FUA) : RequestFlag.NONE;
        for (long pos = offset; pos < offset + length; ) {
            int n = (int) Math.min(ZEROES.capacity(), offset + length - pos);
            writeAligned(pos, ZEROES.duplicate().limit(n), plain);
            pos += n;
        }
    }

    /** Tells a driver that listens (blkdebug) where the request is, as QEMU's bdrv_debug_event. */
    void debug(BlkdebugEvent event) {
        if (driver instanceof DebugEvents d) {
            d.debugEvent(event);
        }
    }

    private static boolean isZero(ByteBuffer src) {
        ByteBuffer b = src.duplicate();
        while (b.hasRemaining()) {
            int n = Math.min(b.remaining(), ZEROES.capacity());
            ByteBuffer part = b.slice(b.position(), n);
            if (part.mismatch(ZEROES.duplicate().limit(n)) != -1) {
                return false;
            }
            b.position(b.position() + n);
        }
        return true;
    }

    private static long floor(long v, int align) {
        return v & -align;
    }

    private static long ceil(long v, int align) {
        return (v + align - 1) & -align;
    }

    /** Every node below and including this one, children before parents. */
    List<GraphNode> subtree() {
        List<GraphNode> out = new ArrayList<>();
        collect(this, out);
        return out;
    }

    private static void collect(GraphNode n, List<GraphNode> out) {
        if (out.contains(n)) {
            return;
        }
        for (Edge e : n.children) {
            collect(e.child(), out);
        }
        out.add(n);
    }
}
