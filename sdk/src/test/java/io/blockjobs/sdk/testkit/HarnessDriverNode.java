package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.SerialisedRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A node a registered {@link io.blockjobs.sdk.driver.BlockDriver} opened in the harness graph, as
 * the platform's {@code GraphNode} wraps a {@link DriverNode}: every request reaches the driver
 * tracked (so serialising requests and drains see it) and every write, write-zeroes and discard
 * runs the node's write hooks around it. Its children are {@link Link}s, the driver's request
 * entry points into the nodes beneath; the graph moves them as it moves any parent's link (a
 * filter put in beneath, a switch-over). A filter driver ({@link DriverNode#filteredChild()}) and
 * its filtered child are one layer of the chain: its backing is its child's.
 */
final class HarnessDriverNode implements BlockNode, ViewSource {
    private static final int WRITE = HarnessGraph.bit(io.blockjobs.sdk.block.BlockPermission.WRITE);
    private static final int UNCHANGED = HarnessGraph.bit(io.blockjobs.sdk.block.BlockPermission.WRITE_UNCHANGED);
    private final String name;
    private final String driverName;
    private final boolean readOnly;
    private final boolean monitorOwned;
    private final List<Link> children = new CopyOnWriteArrayList<>();
    private final List<WriteHook> hooks = new CopyOnWriteArrayList<>();
    private final RangeTracker requests = new RangeTracker();
    private volatile DriverNode driver;

    HarnessDriverNode(String name, String driverName, boolean readOnly, boolean monitorOwned) {
        this.name = name;
        this.driverName = driverName;
        this.readOnly = readOnly;
        this.monitorOwned = monitorOwned;
    }

    /**
     * One child link of a driver node: what {@code DriverContext.child} returned. Requests go to
     * the node the link points to now; the harness retargets it when it moves the parents of a
     * node. Writes need the write permission the graph computed for the link (from the parent's
     * users, by the child's role, and what the driver asks beyond), as the platform's edges.
     */
    static final class Link implements BlockNode {
        private final HarnessDriverNode parent;
        private final String key;
        private final ChildRole role;
        private volatile BlockNode target;
        private volatile int perm = HarnessGraph.ALL; // until the graph computes it

        Link(HarnessDriverNode parent, String key, ChildRole role, BlockNode target) {
            this.parent = parent;
            this.key = key;
            this.role = role;
            this.target = target;
        }

        HarnessDriverNode parent() {
            return parent;
        }

        String key() {
            return key;
        }

        ChildRole role() {
            return role;
        }

        BlockNode target() {
            return target;
        }

        void retarget(BlockNode node) {
            this.target = node;
        }

        void setPermissions(int mask) {
            this.perm = mask;
        }

        /** A write without the permission fails as the platform's edge fails it. */
        private void needs(int mask, String what) throws IOException {
            if ((perm & mask) == 0) {
                throw new BlockIoException(Errno.EPERM, target.nodeName() + ": " + what + " without the permission to ("
                        + "node '" + parent.nodeName() + "' uses it as '" + key + "' child)");
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
        public boolean supportsCompressedWrites() {
            return target.supportsCompressedWrites();
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            target.read(offset, dst);
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            write(offset, src, RequestFlag.NONE);
        }

        @Override
        public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
            needs(WRITE, "write");
            target.write(offset, src, flags);
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
            writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
        }

        @Override
        public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
            needs(WRITE, "write zeroes");
            target.writeZeroes(offset, length, flags);
        }

        @Override
        public void discard(long offset, long length) throws IOException {
            needs(WRITE, "discard");
            target.discard(offset, length);
        }

        @Override
        public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
            needs(WRITE | UNCHANGED, "copy on read");
            target.writeUnallocated(offset, src);
        }

        @Override
        public void unallocate(long offset, long length) throws IOException {
            needs(WRITE | UNCHANGED, "unallocate");
            target.unallocate(offset, length);
        }

        @Override
        public void flush() throws IOException {
            target.flush();
        }

        @Override
        public SerialisedRange serialise(long offset, long length) throws IOException {
            return target.serialise(offset, length);
        }

        @Override
        public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
            return target.blockStatus(offset, maxLength);
        }

        @Override
        public BlockStatus chainStatus(long offset, long maxLength) throws IOException {
            return target.chainStatus(offset, maxLength);
        }

        /** Nothing: the harness closes nodes, not their parents' links. */
        @Override
        public void close() {
        }

        @Override
        public String toString() {
            return parent.nodeName() + " -" + key + "-> " + target.nodeName();
        }
    }

    // ---- what the graph asks -------------------------------------------------------------------

    void attachDriver(DriverNode node) {
        this.driver = node;
    }

    DriverNode driverNode() {
        return driver;
    }

    Link addChild(String key, ChildRole role, BlockNode target) {
        Link l = new Link(this, key, role, target);
        children.add(l);
        return l;
    }

    void removeChild(Link link) {
        children.remove(link);
    }

    /** The links to the node's children, in the order the driver attached them. */
    List<Link> children() {
        return new ArrayList<>(children);
    }

    /** Whether the node itself was opened read-only ({@code read-only}, or inherited), whatever its children are. */
    boolean openedReadOnly() {
        return readOnly;
    }

    /** Whether {@code blockdev-add} ({@link JobHarness#open}) opened it, not a job. */
    boolean monitorOwned() {
        return monitorOwned;
    }

    /** Whether the driver forwards requests to one child it filters (not known, so false, while it opens). */
    boolean isFilter() {
        DriverNode d = driver;
        return d != null && d.filteredChild().isPresent();
    }

    /** The link to the child a filter forwards to, or null for other nodes (and while it opens). */
    Link filtered() {
        DriverNode d = driver;
        Optional<String> key = d == null ? Optional.empty() : d.filteredChild();
        return key.isEmpty() ? null : child(key.get());
    }

    /** The child link named {@code key}, or null. */
    Link child(String key) {
        for (Link l : children) {
            if (l.key().equals(key)) {
                return l;
            }
        }
        return null;
    }

    void addHook(WriteHook hook) {
        hooks.add(hook);
    }

    int requestsInFlight() {
        return requests.inFlight();
    }

    // ---- the node ------------------------------------------------------------------------------

    @Override
    public String driver() {
        return driverName;
    }

    @Override
    public String filename() {
        return driver.filename();
    }

    @Override
    public String nodeName() {
        return name;
    }

    @Override
    public long size() throws IOException {
        return driver.size();
    }

    @Override
    public boolean isReadOnly() {
        DriverNode d = driver;
        return readOnly || d != null && d.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return driver.clusterSize();
    }

    @Override
    public boolean supportsCompressedWrites() {
        DriverNode d = driver;
        return d != null && d.supportsCompressedWrites();
    }

    @Override
    public Optional<BlockNode> backing() {
        Link f = filtered();
        if (f != null) {
            return f.target().backing();
        }
        Link cow = children.stream().filter(l -> l.role() == ChildRole.COW).findFirst().orElse(null);
        DriverNode d = driver;
        return cow != null ? Optional.of(cow.target()) : d == null ? Optional.empty() : d.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        RangeTracker.Tracked t = requests.begin(offset, dst.remaining(), false);
        try {
            driver.read(offset, dst);
        } finally {
            requests.end(t);
        }
    }

    /** A filter's view is its child's; other nodes' views are what their driver reads (a request). */
    @Override
    public void readView(long offset, ByteBuffer dst) throws IOException {
        Link f = filtered();
        if (f != null) {
            ViewSource.read(f.target(), offset, dst);
        } else {
            driver.read(offset, dst);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE, offset, src.remaining(), flags);
        RangeTracker.Tracked t = requests.begin(offset, src.remaining(), false);
        try {
            hooked(request, () -> driver.write(offset, src, flags));
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        WriteRequest request = new WriteRequest(WriteRequest.Kind.WRITE_ZEROES, offset, length, flags);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            hooked(request, () -> driver.writeZeroes(offset, length, flags));
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        WriteRequest request = new WriteRequest(WriteRequest.Kind.DISCARD, offset, length, RequestFlag.NONE);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            hooked(request, () -> driver.discard(offset, length));
        } finally {
            requests.end(t);
        }
    }

    /** Copy-on-read's write leaves the data as it reads: no hooks, as the platform. */
    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        RangeTracker.Tracked t = requests.begin(offset, src.remaining(), false);
        try {
            driver.writeUnallocated(offset, src);
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            driver.unallocate(offset, length);
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void flush() throws IOException {
        driver.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return driver.blockStatus(offset, maxLength);
    }

    /** A filter's chain is its child's (one layer); other nodes walk their own backing. */
    @Override
    public BlockStatus chainStatus(long offset, long maxLength) throws IOException {
        Link f = filtered();
        return f != null ? f.target().chainStatus(offset, maxLength) : BlockNode.super.chainStatus(offset, maxLength);
    }

    @Override
    public SerialisedRange serialise(long offset, long length) throws IOException {
        RangeTracker.Tracked t = requests.begin(offset, length, true);
        return new SerialisedRange() {
            private boolean released;

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
                driver.read(o, dst);
            }

            @Override
            public void write(long o, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
                inside(o, src.remaining());
                hooked(new WriteRequest(WriteRequest.Kind.WRITE, o, src.remaining(), flags),
                        () -> driver.write(o, src, flags));
            }

            @Override
            public synchronized void close() {
                if (!released) {
                    released = true;
                    requests.end(t);
                }
            }
        };
    }

    /** Nothing: the harness closes the driver's node when it removes or deletes this one. */
    @Override
    public void close() {
    }

    @Override
    public String toString() {
        return driverName + " node " + name + (children.isEmpty() ? "" : " over " + children);
    }

    private interface Io {
        void run() throws IOException;
    }

    /** The write hooks around a request, as the platform runs them: before may fail it, after sees how it went. */
    private void hooked(WriteRequest request, Io io) throws IOException {
        for (WriteHook h : hooks) {
            h.before(request);
        }
        boolean ok = false;
        try {
            io.run();
            ok = true;
        } finally {
            for (WriteHook h : hooks) {
                h.after(request, ok);
            }
        }
    }
}
