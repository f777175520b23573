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
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A filter node the harness puts above a node for a job, as the platform's graph does: it
 * forwards every request to its child and runs its write hooks around writes, write-zeroes and
 * discards; {@code copy-on-read} also writes what it reads up into its child where the data
 * comes from a layer down to {@code bottom}, never over data written there meanwhile. A filter
 * and its child are one layer of the chain: the filter's backing is its child's.
 */
final class HarnessFilter implements BlockNode, ViewSource {
    private final String name;
    private final String driver;
    private final String childName;
    private final BlockNode bottom;
    private final List<WriteHook> hooks = new CopyOnWriteArrayList<>();
    private final RangeTracker requests = new RangeTracker();
    private volatile BlockNode child;

    HarnessFilter(String name, String driver, BlockNode child, BlockNode bottom, List<WriteHook> hooks) {
        this.name = name;
        this.driver = driver;
        this.child = child;
        this.bottom = bottom;
        this.childName = driver.equals("copy-on-read") ? "file" : "backing";
        this.hooks.addAll(hooks);
    }

    boolean copyOnRead() {
        return driver.equals("copy-on-read");
    }

    /** The child's name in the filter: {@code file} or {@code backing}, as the platform names it. */
    String childName() {
        return childName;
    }

    BlockNode child() {
        return child;
    }

    void relink(BlockNode node) {
        this.child = node;
    }

    void addHook(WriteHook hook) {
        hooks.add(hook);
    }

    int requestsInFlight() {
        return requests.inFlight();
    }

    @Override
    public String driver() {
        return driver;
    }

    @Override
    public String filename() {
        return child.filename();
    }

    @Override
    public String nodeName() {
        return name;
    }

    @Override
    public long size() throws IOException {
        return child.size();
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
    public Optional<BlockNode> backing() {
        return child.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        RangeTracker.Tracked t = requests.begin(offset, dst.remaining(), false);
        try {
            if (copyOnRead()) {
                readCopyingUp(offset, dst);
            } else {
                child.read(offset, dst);
            }
        } finally {
            requests.end(t);
        }
    }

    /** QEMU's copy-on-read: ranges the child lacks but a layer down to the bottom holds are written up. */
    private void readCopyingUp(long offset, ByteBuffer dst) throws IOException {
        long pos = offset;
        long end = offset + dst.remaining();
        int layers = layersAbove();
        while (pos < end) {
            BlockStatus here = child.blockStatus(pos, end - pos);
            long n = here.length();
            boolean copy = false;
            if (!here.allocated()) {
                BlockStatus where = child.chainStatus(pos, n);
                n = where.length();
                copy = where.allocated() && where.depth() >= 1 && (layers < 0 || where.depth() <= layers);
            }
            ByteBuffer part = dst.slice(dst.position(), (int) n);
            child.read(pos, part);
            if (copy && !child.isReadOnly()) {
                child.writeUnallocated(pos, part.flip());
            }
            dst.position(dst.position() + (int) n);
            pos += n;
        }
    }

    /** Layers between the child and the bottom, the bottom included (-1: every layer). */
    private int layersAbove() {
        if (bottom == null) {
            return -1;
        }
        BlockNode target = HarnessGraph.skipFilters(bottom);
        int depth = 0;
        for (BlockNode n = child.backing().orElse(null); n != null; n = n.backing().orElse(null)) {
            depth++;
            if (HarnessGraph.skipFilters(n) == target) {
                return depth;
            }
        }
        return depth;
    }

    @Override
    public void readView(long offset, ByteBuffer dst) throws IOException {
        ViewSource.read(child, offset, dst);
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
            hooked(request, () -> child.write(offset, src, flags));
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
            hooked(request, () -> child.writeZeroes(offset, length, flags));
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        WriteRequest request = new WriteRequest(WriteRequest.Kind.DISCARD, offset, length, RequestFlag.NONE);
        RangeTracker.Tracked t = requests.begin(offset, length, false);
        try {
            hooked(request, () -> child.discard(offset, length));
        } finally {
            requests.end(t);
        }
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        child.writeUnallocated(offset, src); // leaves the data as it reads: no hooks, as the platform
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        child.unallocate(offset, length);
    }

    @Override
    public void flush() throws IOException {
        child.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return child.blockStatus(offset, maxLength);
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
                child.read(o, dst);
            }

            @Override
            public void write(long o, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
                inside(o, src.remaining());
                hooked(new WriteRequest(WriteRequest.Kind.WRITE, o, src.remaining(), flags),
                        () -> child.write(o, src, flags));
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

    @Override
    public void close() {
        // the harness removes filters; the child stays
    }

    @Override
    public String toString() {
        return driver + " filter " + name + " over " + child.nodeName();
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
