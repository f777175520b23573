package io.blockjobs.platform.image;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.function.Function;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.zip.DataFormatException;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

/**
 * The {@code qcow2} format driver (versions 2 and 3, {@code docs/interop/qcow2.txt}).
 *
 * <p>Concurrency: guest clusters are guarded by striped read-write locks. Reads and writes to
 * clusters that are already allocated take a stripe's read lock only, so they run in parallel;
 * allocating writes, write-zeroes and discards take the stripe's write lock; refcounts and the
 * L1 table change under the refcount lock. L2 tables are cached (bounded) and written back, as
 * QEMU's L2 table cache: a change waits in memory for a flush, the close, or a bound on what a
 * crash may leak ({@link #writeL2Entries}), except one that releases storage, written at once.
 *
 * <p>Crash safety: data is written before the L2 entry that points to it (and copy-on-write data
 * flushed first); a cluster is counted (durably) before it is referenced and released only after
 * the file's table no longer references it; a new L2 table is durable before the L1 entry points
 * to it. A crash loses unflushed writes, as QEMU's does, and leaks at most the clusters allocated
 * since the tables were last written back. See {@link Qcow2Refcounts}.
 *
 * <p>Persistent dirty bitmaps (the bitmaps extension) are {@link Qcow2Bitmaps}'; this node offers
 * them as {@link PersistentBitmaps}.
 */
public final class Qcow2Node implements DriverNode, PersistentBitmaps, Resizable, ReadOnlyReopen {

    static final long OFFSET_MASK = 0x00ff_ffff_ffff_fe00L;
    static final long COPIED = 1L << 63;
    static final long COMPRESSED = 1L << 62;
    static final long ZERO = 1L;
    private static final int STRIPES = 256;
    private static final int MAX_RUN = 256; // clusters merged into one host request
    private static final int TABLE_LOCKS = 64;
    /** Guard each dirty L2 table (by table offset): its changes, and one write of it at a time. */
    private final ReentrantLock[] tableLocks = newLocks(TABLE_LOCKS);
    /** Signalled when a write of a table of the slot ends. */
    private final java.util.concurrent.locks.Condition[] tableWritten = conditions(tableLocks);
    /** The L2 tables changed in memory and not yet (all) written, by table offset: see {@link #writeL2Entries}. */
    private final java.util.concurrent.ConcurrentHashMap<Long, DirtyTable> dirtyTables = new java.util.concurrent.ConcurrentHashMap<>();
    /** Clusters allocated since the dirty tables were last written back ({@link #maybeWriteBack}). */
    private final java.util.concurrent.atomic.AtomicLong unlinkedClusters = new java.util.concurrent.atomic.AtomicLong();
    /** Copy-on-write data writes done, and how many of them a flush has made durable ({@link #writeDirty}). */
    private final java.util.concurrent.atomic.AtomicLong copiesWritten = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicLong copiesFlushed = new java.util.concurrent.atomic.AtomicLong();
    static final int MAX_L1_BYTES = 32 << 20; // QEMU's QCOW_MAX_L1_SIZE

    /** Opens the backing file named in an overlay's header. */
    @FunctionalInterface
    public interface BackingOpener {
        /**
         * @param name   the backing file name as recorded in the header
         * @param format the recorded backing format, or null if none was recorded
         */
        BlockNode open(String name, String format) throws IOException;
    }

    /**
     * Told when the image's metadata is found corrupt at run time, as QEMU's
     * {@code qcow2_signal_corruption} sends {@code BLOCK_IMAGE_CORRUPTED}; the image layer knows
     * no events, so the daemon listens here.
     */
    @FunctionalInterface
    public interface CorruptionListener {
        /**
         * @param message QEMU's words for what was found
         * @param offset  the host offset concerned, or -1 for none
         * @param size    the bytes concerned, or -1 for none
         * @param fatal   whether the image is now marked corrupt and refuses every request
         */
        void corrupted(String message, long offset, long size, boolean fatal);
    }

    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Qcow2Node.class);

    private enum Kind { UNALLOCATED, ZERO_PLAIN, ZERO_ALLOC, NORMAL, COMPRESSED }

    private final BlockNode file;
    private final String name;
    private final Qcow2Header header;
    private volatile boolean readOnly;
    private final int clusterBits;
    private final int clusterSize;
    private final int l2Bits;
    private volatile AtomicLongArray l1; // written under the refcount lock; replaced when it grows
    private final Cache<Long, AtomicLongArray> l2Cache;
    private final Function<Long, AtomicLongArray> l2Loader = this::loadL2;
    /** The clusters allocated before the dirty L2 tables are written back: {@link #writeBackWindow(int)}. */
    private final long writeBackWindow;
    /** The dirty L2 tables (a quarter of the cache's) after which they are written back. */
    private final int maxDirtyTables;
    private final Qcow2Refcounts refcounts;
    private final Qcow2Bitmaps bitmaps;
    private volatile String nodeName;
    private final ReentrantReadWriteLock[] stripes = new ReentrantReadWriteLock[STRIPES];
    private final int csizeShift;
    private final long csizeMask;
    private final long coffsetMask;
    private volatile BlockNode backing;
    private volatile long knownFileEnd;
    private volatile boolean closed;
    private boolean ownsChildren = true;
    private volatile CorruptionListener corruptionListener = (message, offset, size, fatal) -> { };
    private final Object corruptionLock = new Object();
    private boolean signaledCorruption; // under corruptionLock
    /** Set by a fatal corruption: QEMU then drops the node's driver and every request fails. */
    private volatile boolean unusable;
    /** The internal snapshots (the snapshot table); replaced whole under every lock. */
    private volatile List<Qcow2Snapshots.Entry> snapshots;
    /** Bytes the snapshot table spans on disk (freed when it is rewritten). */
    private long snapshotTableBytes;
    /** L2 tables, zeroed and counted, whose L1 entry failed to be written; under the refcount lock. */
    private final java.util.Map<Integer, Long> unlinkedTables = new java.util.HashMap<>();

    private Qcow2Node(BlockNode file, Qcow2Header header, boolean readOnly, AtomicLongArray l1, long[] refcountTable,
            Qcow2Bitmaps.Directory bitmapDirectory) throws IOException {
        this.file = file;
        this.name = file.filename();
        this.nodeName = name;
        this.header = header;
        this.readOnly = readOnly;
        this.clusterBits = header.clusterBits;
        this.clusterSize = 1 << clusterBits;
        this.l2Bits = clusterBits - 3;
        this.l1 = l1;
        this.refcounts = new Qcow2Refcounts(file, header, refcountTable);
        this.bitmaps = new Qcow2Bitmaps(this, file, header, refcounts, bitmapDirectory);
        this.csizeShift = 62 - (clusterBits - 8);
        this.csizeMask = (1L << (clusterBits - 8)) - 1;
        this.coffsetMask = (1L << csizeShift) - 1;
        long wholeDisk = (long) l1.length() << clusterBits;
        long cacheBytes = Math.max(4L * clusterSize, Math.min(32L << 20, wholeDisk));
        this.l2Cache = Caffeine.newBuilder()
                .maximumWeight(cacheBytes)
                .weigher((Long k, AtomicLongArray t) -> t.length() * 8)
                .executor(Runnable::run)
                .build();
        this.writeBackWindow = writeBackWindow(clusterBits);
        this.maxDirtyTables = (int) Math.max(4, cacheBytes / clusterSize / 4);
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new ReentrantReadWriteLock();
        }
        this.knownFileEnd = file.size();
    }

    /**
     * Opens a qcow2 image on {@code file}; the node then owns {@code file} and the backing node.
     *
     * @throws ImageException if the image is damaged or uses a feature this driver lacks
     */
    public static Qcow2Node open(BlockNode file, boolean readWrite, BackingOpener backingOpener) throws IOException {
        return open(file, readWrite, backingOpener, true);
    }

    /**
     * Opens a qcow2 image on {@code file}. With {@code ownsChildren} false the node leaves its
     * file and backing nodes open when it closes: their owner (the block graph) closes them.
     * {@code backingOpener} may return null for an image whose backing is left out.
     */
    public static Qcow2Node open(BlockNode file, boolean readWrite, BackingOpener backingOpener, boolean ownsChildren)
            throws IOException {
        String name = file.filename();
        long fileSize = file.size();
        ByteBuffer first = ByteBuffer.allocate((int) Math.min(fileSize, 2 << 20));
        file.read(0, first);
        first.flip();
        Qcow2Header h = Qcow2Header.parse(name, first);
        checkFeatures(name, h, readWrite);
        long[] l1 = readL1(file, h, fileSize);
        long[] refcountTable = readRefcountTable(file, h, fileSize);
        checkOverlaps(name, h, l1, refcountTable, fileSize);
        Qcow2Bitmaps.Directory bitmapDirectory = Qcow2Bitmaps.readDirectory(file, h);
        Qcow2Snapshots.Table snapshotTable = Qcow2Snapshots.read(file, h);

        Qcow2Node node = new Qcow2Node(file, h, !readWrite, new AtomicLongArray(l1), refcountTable, bitmapDirectory);
        node.ownsChildren = ownsChildren;
        node.snapshots = List.copyOf(snapshotTable.entries());
        node.snapshotTableBytes = snapshotTable.bytes();
        if (h.backingFile != null) {
            try {
                node.backing = backingOpener.open(h.backingFile, h.backingFormat);
            } catch (IOException e) {
                node.closeQuietlyAfterFailedOpen();
                throw new ImageException(name, "could not open backing file '" + h.backingFile + "': " + e.getMessage(), e);
            }
        }
        if (readWrite) {
            try {
                if (node.headerNeedsUpdateForWriting()) {
                    node.writeHeader();
                }
                node.bitmaps.openedReadWrite();
            } catch (IOException | RuntimeException e) {
                node.closeQuietlyAfterFailedOpen();
                BlockNode b = node.backing;
                if (ownsChildren && b != null) {
                    try {
                        b.close();
                    } catch (IOException | RuntimeException suppressed) {
                        e.addSuppressed(suppressed);
                    }
                }
                throw e;
            }
        }
        return node;
    }

    /**
     * Before this driver writes: clears the autoclear bits it does not maintain (the spec's rule,
     * QEMU's {@code QCOW2_AUTOCLEAR_MASK}), and says whether the header must be rewritten for that
     * or to drop a bitmaps extension an older program invalidated.
     */
    private boolean headerNeedsUpdateForWriting() {
        long unknown = header.autoclearFeatures & ~Qcow2Header.AUTOCLEAR_KNOWN;
        header.autoclearFeatures &= Qcow2Header.AUTOCLEAR_KNOWN;
        return unknown != 0 || bitmaps.invalidated();
    }

    private static void checkFeatures(String name, Qcow2Header h, boolean readWrite) throws ImageException {
        if (h.cryptMethod != 0) {
            throw new ImageException(name, "encrypted qcow2 images are not supported");
        }
        long unknown = h.incompatibleFeatures & ~Qcow2Header.INCOMPAT_KNOWN;
        if (unknown != 0) {
            throw new ImageException(name, "unsupported incompatible feature bits 0x" + Long.toHexString(unknown)
                    + ": the image needs a newer driver");
        }
        if ((h.incompatibleFeatures & Qcow2Header.INCOMPAT_DATA_FILE) != 0) {
            throw new ImageException(name, "external data files are not supported");
        }
        if ((h.incompatibleFeatures & Qcow2Header.INCOMPAT_EXTL2) != 0) {
            throw new ImageException(name, "extended L2 entries (subclusters) are not supported; "
                    + "convert with qemu-img convert -O qcow2 -o extended_l2=off");
        }
        if ((h.incompatibleFeatures & Qcow2Header.INCOMPAT_COMPRESSION) != 0 && h.compressionType != 0) {
            throw new ImageException(name, "compression type " + h.compressionType + " (zstd) is not supported, only zlib");
        }
        if (readWrite && (h.incompatibleFeatures & Qcow2Header.INCOMPAT_CORRUPT) != 0) {
            throw new ImageException(name, "image is marked corrupt; it can be opened read-only, "
                    + "or repaired with qemu-img check -r all");
        }
        if (readWrite && (h.incompatibleFeatures & Qcow2Header.INCOMPAT_DIRTY) != 0) {
            throw new ImageException(name, "image was not closed cleanly (lazy refcounts); "
                    + "repair it with qemu-img check -r all before writing");
        }
        if ((h.autoclearFeatures & Qcow2Header.AUTOCLEAR_DATA_FILE_RAW) != 0) {
            throw new ImageException(name, "data-file-raw requires a data file"); // as QEMU: there is none
        }
        if (h.version == 2 && h.refcountOrder != 4) {
            throw new ImageException(name, "version 2 images must have 16-bit refcounts");
        }
    }

    private static long[] readL1(BlockNode file, Qcow2Header h, long fileSize) throws IOException {
        String name = file.filename();
        if (h.l1Size < 0 || h.l1TableOffset < 0) {
            throw new ImageException(name, "invalid L1 table (size " + h.l1Size + ", offset " + h.l1TableOffset + ")");
        }
        long perL1 = 1L << (h.clusterBits + h.clusterBits - 3); // bytes of disk per L1 entry
        long needed = (h.size + perL1 - 1) / perL1;
        if (h.l1Size < needed) {
            throw new ImageException(name, "L1 table has " + h.l1Size + " entries, too few for the virtual size "
                    + h.size + " (needs " + needed + ")");
        }
        if ((long) h.l1Size * 8 > MAX_L1_BYTES) {
            throw new ImageException(name, "L1 table of " + h.l1Size + " entries is too large");
        }
        long cluster = 1L << h.clusterBits;
        if (h.l1Size > 0 && ((h.l1TableOffset & (cluster - 1)) != 0
                || h.l1TableOffset + (long) h.l1Size * 8 > fileSize)) {
            throw new ImageException(name, "L1 table at offset " + h.l1TableOffset
                    + " is unaligned or past the end of the file (" + fileSize + " bytes)");
        }
        ByteBuffer buf = ByteBuffer.allocate(h.l1Size * 8);
        file.read(h.l1TableOffset, buf);
        long[] l1 = new long[h.l1Size];
        buf.flip().asLongBuffer().get(l1);
        for (int i = 0; i < l1.length; i++) {
            long off = l1[i] & OFFSET_MASK;
            if (off == 0) {
                continue;
            }
            if ((off & (cluster - 1)) != 0) {
                throw new ImageException(name, "L1 entry " + i + " points to an unaligned L2 table offset " + off);
            }
            if (off + cluster > fileSize) {
                throw new ImageException(name, "L1 entry " + i + " points past the end of the file (L2 table at offset "
                        + off + ", file size " + fileSize + ")");
            }
        }
        return l1;
    }

    private static long[] readRefcountTable(BlockNode file, Qcow2Header h, long fileSize) throws IOException {
        long cluster = 1L << h.clusterBits;
        if (h.refcountTableClusters <= 0 || h.refcountTableOffset <= 0 || (h.refcountTableOffset & (cluster - 1)) != 0
                || h.refcountTableOffset + h.refcountTableClusters * cluster > fileSize) {
            throw new ImageException(file.filename(), "refcount table at offset " + h.refcountTableOffset + " ("
                    + h.refcountTableClusters + " clusters) is empty, unaligned or past the end of the file");
        }
        return Qcow2Refcounts.readTable(file, h);
    }

    /** Refuses images whose metadata structures overlap each other: a sign of corruption. */
    private static void checkOverlaps(String name, Qcow2Header h, long[] l1, long[] rt, long fileSize)
            throws ImageException {
        record Area(String what, long start, long end) {
        }
        long cluster = 1L << h.clusterBits;
        List<Area> areas = new ArrayList<>();
        areas.add(new Area("header", 0, cluster));
        if (h.l1Size > 0) {
            areas.add(new Area("L1 table", h.l1TableOffset, roundUp(h.l1TableOffset + h.l1Size * 8L, cluster)));
        }
        areas.add(new Area("refcount table", h.refcountTableOffset,
                h.refcountTableOffset + h.refcountTableClusters * cluster));
        for (int i = 0; i < rt.length; i++) {
            long off = rt[i] & ~(cluster - 1);
            if (off != 0) {
                if (off + cluster > fileSize) {
                    throw new ImageException(name, "refcount block " + i + " at offset " + off
                            + " is past the end of the file (" + fileSize + " bytes)");
                }
                areas.add(new Area("refcount block " + i, off, off + cluster));
            }
        }
        for (int i = 0; i < l1.length; i++) {
            long off = l1[i] & OFFSET_MASK;
            if (off != 0) {
                areas.add(new Area("L2 table " + i, off, off + cluster));
            }
        }
        areas.sort(Comparator.comparingLong(Area::start));
        for (int i = 1; i < areas.size(); i++) {
            Area a = areas.get(i - 1);
            Area b = areas.get(i);
            if (b.start() < a.end()) {
                throw new ImageException(name, "metadata overlap: " + b.what() + " at offset " + b.start()
                        + " overlaps " + a.what() + " at offset " + a.start() + " (image is corrupt)");
            }
        }
    }

    /**
     * The clusters allocated after which the dirty L2 tables are written back, so the most a
     * crash between flushes leaks besides the pool's: 8 MiB of them, within 16 and 128 (a 1 MiB
     * mirror copy is 16 clusters of 64 KiB: its tables are written once per 8 copies).
     */
    static long writeBackWindow(int clusterBits) {
        return Math.max(16, Math.min(128, (8L << 20) >> clusterBits));
    }

    private static long roundUp(long v, long to) {
        return (v + to - 1) / to * to;
    }

    // ---- BlockNode --------------------------------------------------------------------------

    @Override
    public String driver() {
        return "qcow2";
    }

    @Override
    public String filename() {
        return name;
    }

    @Override
    public long size() {
        return header.size;
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
    public Limits limits() {
        return new Limits(1, 0, clusterSize);
    }

    /** The protocol node beneath this image. */
    public BlockNode file() {
        return file;
    }

    /** 2 or 3. */
    public int version() {
        return header.version;
    }

    /**
     * What QEMU's {@code qcow2_get_specific_info} reports ({@code ImageInfoSpecificQCow2}):
     * version 2 or 3, the lazy-refcounts and corrupt bits, the refcount width, and the
     * persistent bitmaps as the directory on disk holds them.
     */
    public record SpecificInfo(int version, boolean lazyRefcounts, boolean corrupt, int refcountBits,
                               List<BitmapInfo> bitmaps) {
    }

    /** A bitmap of the directory on disk: its name, granularity and flags ({@code in-use}, {@code auto}). */
    public record BitmapInfo(String name, long granularity, boolean inUse, boolean auto) {
    }

    /** This image's {@link SpecificInfo}, now. */
    public SpecificInfo specificInfo() {
        return new SpecificInfo(header.version, (header.compatibleFeatures & Qcow2Header.COMPAT_LAZY_REFCOUNTS) != 0,
                (header.incompatibleFeatures & Qcow2Header.INCOMPAT_CORRUPT) != 0, 1 << header.refcountOrder,
                bitmaps.info());
    }

    /** The backing file name recorded in the header, or null. */
    public String backingFileName() {
        return header.backingFile;
    }

    /** The backing format recorded in the header, or null. */
    public String backingFormat() {
        return header.backingFormat;
    }

    /**
     * The node's name in the graph once {@link #setNodeName} gave it, else its file name; QEMU's
     * bitmap messages name the node by it ({@code bdrv_get_device_or_node_name}).
     */
    @Override
    public String nodeName() {
        return nodeName;
    }

    /** Sets the node's name in the graph ({@link #nodeName()}). */
    public void setNodeName(String nodeName) {
        this.nodeName = nodeName;
    }

    // ---- PersistentBitmaps ------------------------------------------------------------------

    @Override
    public void load(Loader loader) throws IOException {
        bitmaps.load(loader);
    }

    @Override
    public void checkCanStore(String bitmap, int granularityBits) {
        bitmaps.checkCanStore(bitmap, granularityBits);
    }

    @Override
    public void remove(String bitmap) throws IOException {
        bitmaps.remove(bitmap);
    }

    @Override
    public void store(List<ToStore> toStore) throws IOException {
        bitmaps.store(toStore);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        checkRequest(offset, dst.remaining(), false);
        long pos = offset;
        while (dst.hasRemaining()) {
            long idx = pos >>> clusterBits;
            int inOff = (int) (pos & (clusterSize - 1));
            int n = (int) Math.min(dst.remaining(), clusterSize - inOff);
            ReentrantReadWriteLock.ReadLock lock = stripe(idx).readLock();
            lock.lock();
            List<Lock> extra = null;
            try {
                long e = l2Entry(idx);
                switch (kind(e)) {
                    case NORMAL -> {
                        long host = hostForRead(idx, e);
                        // Merge clusters that follow contiguously on the host, if their locks are free.
                        while (n < dst.remaining() && (n + inOff) >>> clusterBits < MAX_RUN) {
                            long next = idx + ((inOff + n) >>> clusterBits);
                            long ne = l2Entry(next);
                            if (kind(ne) != Kind.NORMAL || (ne & OFFSET_MASK) != host + (next - idx) * clusterSize) {
                                break;
                            }
                            Lock l = stripe(next).readLock();
                            if (!l.tryLock()) {
                                break;
                            }
                            if (extra == null) {
                                extra = new ArrayList<>();
                            }
                            extra.add(l);
                            if (l2Entry(next) != ne) {
                                break;
                            }
                            hostForRead(next, ne);
                            n += (int) Math.min(dst.remaining() - n, clusterSize);
                        }
                        DebugEvents.fire(file, BlkdebugEvent.READ_AIO);
                        file.read(host + inOff, slice(dst, n));
                    }
                    case ZERO_PLAIN -> fillZeroes(dst, n);
                    case ZERO_ALLOC -> {
                        hostForRead(idx, e); // QEMU checks a preallocated zero cluster's offset too
                        fillZeroes(dst, n);
                    }
                    case COMPRESSED -> {
                        byte[] data = decompress(idx, e);
                        dst.put(data, inOff, n);
                    }
                    case UNALLOCATED -> {
                        lock.unlock();
                        lock = null;
                        while (n < dst.remaining() && (n + inOff) >>> clusterBits < MAX_RUN
                                && kind(l2Entry(idx + ((inOff + n) >>> clusterBits))) == Kind.UNALLOCATED) {
                            n += (int) Math.min(dst.remaining() - n, clusterSize);
                        }
                        readBacking(pos, slice(dst, n));
                    }
                }
            } finally {
                if (lock != null) {
                    lock.unlock();
                }
                if (extra != null) {
                    extra.forEach(Lock::unlock);
                }
            }
            pos += n;
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        checkRequest(offset, src.remaining(), true);
        long pos = offset;
        while (src.hasRemaining()) {
            long idx = pos >>> clusterBits;
            int inOff = (int) (pos & (clusterSize - 1));
            int n = (int) Math.min(src.remaining(), clusterSize - inOff);
            n = writeCluster(idx, inOff, n, src);
            pos += n;
        }
        maybeWriteBack();
    }

    /**
     * Writes from {@code src}, {@code n} bytes into cluster {@code idx} and on into the clusters
     * after it as long as they make one run on the host (allocated ones that follow each other,
     * or ones that all need a cluster: see {@link #allocatingWrite}); returns bytes written.
     */
    private int writeCluster(long idx, int inOff, int n, ByteBuffer src) throws IOException {
        ReentrantReadWriteLock lock = stripe(idx);
        lock.readLock().lock();
        List<Lock> extra = null;
        try {
            long e = l2Entry(idx);
            if (kind(e) == Kind.NORMAL && (e & COPIED) != 0) {
                long host = hostForWrite(idx, e, (idx << clusterBits) + inOff);
                while (n < src.remaining() && (n + inOff) >>> clusterBits < MAX_RUN) {
                    long next = idx + ((inOff + n) >>> clusterBits);
                    long ne = l2Entry(next);
                    if (kind(ne) != Kind.NORMAL || (ne & COPIED) == 0
                            || (ne & OFFSET_MASK) != host + (next - idx) * clusterSize) {
                        break;
                    }
                    Lock l = stripe(next).readLock();
                    if (!l.tryLock()) {
                        break;
                    }
                    if (extra == null) {
                        extra = new ArrayList<>();
                    }
                    extra.add(l);
                    if (l2Entry(next) != ne) {
                        break;
                    }
                    n += (int) Math.min(src.remaining() - n, clusterSize);
                }
                checkOverlap(host + inOff, n);
                file.write(host + inOff, slice(src, n));
                return n;
            }
        } finally {
            lock.readLock().unlock();
            if (extra != null) {
                extra.forEach(Lock::unlock);
            }
        }
        return allocatingWrite(idx, inOff, src, false);
    }

    /**
     * Writes from {@code src} at {@code inOff} of cluster {@code idx}, giving it its own cluster if
     * it needs one, and with it the clusters after it in the same L2 table that need one too (up
     * to {@link #MAX_RUN}, as far as {@code src} reaches and their locks are free): as QEMU's
     * {@code qcow2_alloc_host_offset}, they get one run of clusters that follow each other on the
     * host, their data one write (a partial first or last cluster filled with what it holds now),
     * and their L2 entries one write, after the data. With {@code onlyUnallocated} (a copy-on-read
     * write) only unallocated clusters are written: a guest write since wins. Returns the bytes of
     * {@code src} it consumed.
     *
     * <p>Locks: the first cluster's stripe is taken (waiting), the others only if free at once
     * ({@code tryLock}), so two runs never wait for each other; a stripe met twice is reentrant.
     */
    private int allocatingWrite(long idx, int inOff, ByteBuffer src, boolean onlyUnallocated) throws IOException {
        int firstBytes = (int) Math.min(src.remaining(), clusterSize - inOff);
        List<Lock> held = new ArrayList<>();
        Lock first = stripe(idx).writeLock();
        first.lock();
        held.add(first);
        try {
            long e = l2Entry(idx);
            Kind kind = kind(e);
            if (onlyUnallocated && kind != Kind.UNALLOCATED) { // a guest write since wins
                src.position(src.position() + firstBytes);
                return firstBytes;
            }
            if (kind == Kind.NORMAL && (e & COPIED) != 0) { // allocated meanwhile
                long host = hostForWrite(idx, e, (idx << clusterBits) + inOff);
                checkOverlap(host + inOff, firstBytes);
                file.write(host + inOff, slice(src, firstBytes));
                return firstBytes;
            }
            int l1Index = (int) (idx >>> l2Bits);
            int inTable = (int) (idx & ((1L << l2Bits) - 1));
            long l2 = ensureL2Table(l1Index); // first, so that tables sit before their data
            if (kind == Kind.ZERO_ALLOC && (e & COPIED) != 0) { // a zero cluster with its own storage: reuse it
                long host = hostForWrite(idx, e, (idx << clusterBits) + inOff);
                checkOverlap(host + inOff, firstBytes);
                writeRunData(idx, inOff, slice(src, firstBytes), host, new long[] {e}, 1);
                writeL2Entries(l2, inTable, new long[] {host | COPIED}, false);
                return firstBytes;
            }
            long wanted = ((long) inOff + src.remaining() + clusterSize - 1) >>> clusterBits;
            int max = (int) Math.min(Math.min(MAX_RUN, (1L << l2Bits) - inTable), wanted);
            long[] old = new long[max];
            old[0] = e;
            int k = 1;
            while (k < max) {
                Lock l = stripe(idx + k).writeLock();
                if (!l.tryLock()) {
                    break;
                }
                held.add(l);
                long ne = l2Entry(idx + k);
                if (!needsCluster(ne, onlyUnallocated)) {
                    break;
                }
                old[k++] = ne;
            }
            Qcow2Refcounts.Run run = allocateRun(k);
            k = run.clusters();
            long host = run.offset();
            int bytes = (int) Math.min(src.remaining(), ((long) k << clusterBits) - inOff);
            try {
                checkOverlap(host + inOff, bytes); // a cluster counted free while metadata uses it (QEMU checks too)
                writeRunData(idx, inOff, slice(src, bytes), host, old, k);
            } catch (IOException | RuntimeException ex) {
                giveBack(run, ex); // nothing points to the run yet: a failed write must not leak it
                throw ex;
            }
            noteFileEnd(host + ((long) k << clusterBits));
            long[] entries = new long[k];
            for (int j = 0; j < k; j++) {
                entries[j] = (host + ((long) j << clusterBits)) | COPIED;
            }
            boolean releases = anyHoldsStorage(old, k);
            writeL2Entries(l2, inTable, entries, releases);
            if (releases) {
                releaseOld(old, k);
            } else {
                unlinkedClusters.addAndGet(k);
            }
            return bytes;
        } finally {
            for (Lock l : held) {
                l.unlock();
            }
        }
    }

    /** Whether a write to a cluster with entry {@code e} gives it a new cluster. */
    private boolean needsCluster(long e, boolean onlyUnallocated) {
        Kind kind = kind(e);
        if (onlyUnallocated) {
            return kind == Kind.UNALLOCATED;
        }
        return (e & COPIED) == 0 || kind != Kind.NORMAL && kind != Kind.ZERO_ALLOC; // else it has its own
    }

    /**
     * Writes {@code data}, which starts at {@code inOff} of cluster {@code idx}, into the {@code k}
     * clusters from {@code host} in one write; a first or last cluster it covers only in part is
     * filled with the contents it has now (entries {@code old}).
     */
    private void writeRunData(long idx, int inOff, ByteBuffer data, long host, long[] old, int k) throws IOException {
        int end = inOff + data.remaining();
        int total = k << clusterBits;
        if (inOff == 0 && end == total) {
            file.write(host, data);
            return;
        }
        ByteBuffer buf = ByteBuffer.allocate(total);
        if (inOff != 0 || k == 1) {
            readOldCluster(idx, old[0], kind(old[0]), buf.slice(0, clusterSize));
        }
        if (end != total && k > 1) {
            int last = k - 1;
            readOldCluster(idx + last, old[last], kind(old[last]), buf.slice(last << clusterBits, clusterSize));
        }
        buf.put(inOff, data, data.position(), data.remaining());
        data.position(data.limit());
        file.write(host, buf);
        copiesWritten.incrementAndGet(); // before the entry that relies on it is set
    }

    /** The contents cluster {@code idx} has now, for copy-on-write. */
    private void readOldCluster(long idx, long e, Kind kind, ByteBuffer buf) throws IOException {
        switch (kind) {
            case NORMAL -> {
                DebugEvents.fire(file, BlkdebugEvent.COW_READ);
                file.read(hostForRead(idx, e), buf.duplicate());
            }
            case COMPRESSED -> buf.put(0, decompress(idx, e));
            case UNALLOCATED -> {
                long guest = idx << clusterBits;
                ByteBuffer part = buf.duplicate();
                part.limit((int) Math.min(clusterSize, header.size - guest));
                readBacking(guest, part);
            }
            case ZERO_PLAIN, ZERO_ALLOC -> { } // already zero
        }
    }

    @Override
    public void write(long offset, ByteBuffer src, java.util.Set<RequestFlag> flags) throws IOException {
        if (flags.contains(RequestFlag.WRITE_COMPRESSED)) {
            writeCompressed(offset, src);
        } else {
            write(offset, src);
        }
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    @Override
    public boolean supportsCompressedWrites() {
        return true;
    }

    // ---- compressed writes --------------------------------------------------------------------

    /** The host cluster compressed clusters are packed into now, or -1; under the refcounts' lock. */
    private long packCluster = -1;
    /** The next free byte in it, on a sector boundary. */
    private long packNext;
    /** Compressed clusters placed in it so far. */
    private int packUsed;

    /**
     * QEMU's {@code qcow2_co_pwritev_compressed_part}: each whole cluster (or the last, partial
     * one, padded with zeroes) is deflated, as QEMU's zlib compression, and stored in as few
     * sectors as it needs, packed with others into shared host clusters. A cluster that does not
     * shrink, or that is allocated already (QEMU fails those; here nothing is lost), is written
     * as usual.
     */
    private void writeCompressed(long offset, ByteBuffer src) throws IOException {
        checkRequest(offset, src.remaining(), true);
        if ((offset & (clusterSize - 1)) != 0
                || (src.remaining() & (clusterSize - 1)) != 0 && offset + src.remaining() != header.size) {
            throw new io.blockjobs.sdk.block.BlockIoException(Errno.EINVAL, name
                    + ": compressed writes must cover whole clusters (offset " + offset + ", " + src.remaining() + " bytes)");
        }
        byte[] cluster = new byte[clusterSize];
        byte[] out = new byte[clusterSize];
        Deflater deflater = new Deflater(Deflater.DEFAULT_COMPRESSION, true); // one zlib stream, reset per cluster
        try {
            writeCompressed(offset, src, cluster, out, deflater);
        } finally {
            deflater.end();
        }
        maybeWriteBack();
    }

    private void writeCompressed(long offset, ByteBuffer src, byte[] cluster, byte[] out, Deflater deflater)
            throws IOException {
        while (src.hasRemaining()) {
            long idx = offset >>> clusterBits;
            int n = (int) Math.min(src.remaining(), clusterSize);
            ByteBuffer piece = slice(src, n);
            piece.duplicate().get(cluster, 0, n);
            java.util.Arrays.fill(cluster, n, clusterSize, (byte) 0);
            int size = deflate(deflater, cluster, out);
            if (size < 0 || !writeCompressedCluster(idx, out, size)) {
                write(offset, piece.duplicate());
            }
            offset += n;
        }
    }

    /**
     * Raw deflate, readable with the 4 KiB window QEMU inflates with ({@code -12} window bits):
     * java.util.zip cannot limit the window, so the dictionary is reset every 4 KiB
     * ({@code FULL_FLUSH}) and no match reaches further back. Returns the size, or -1 if the
     * result would not be smaller than a cluster less a sector.
     */
    private int deflate(Deflater d, byte[] in, byte[] out) {
        d.reset();
        int limit = clusterSize - 512; // at least a sector saved, or it is not worth it
        int written = 0;
        for (int pos = 0; pos < clusterSize; pos += 4096) {
            boolean last = pos + 4096 >= clusterSize;
            d.setInput(in, pos, Math.min(4096, clusterSize - pos));
            if (last) {
                d.finish();
            }
            while (true) {
                int room = limit - written;
                if (room <= 0) {
                    return -1;
                }
                int n = d.deflate(out, written, room, last ? Deflater.NO_FLUSH : Deflater.FULL_FLUSH);
                written += n;
                if (last ? d.finished() : n < room) {
                    break; // finished, or this 4 KiB flushed out whole
                }
            }
        }
        return written;
    }

    /** Stores one compressed cluster; false if it is allocated already and must be written as usual. */
    private boolean writeCompressedCluster(long idx, byte[] data, int size) throws IOException {
        int sectors = (size + 511) / 512;
        Lock lock = stripe(idx).writeLock();
        lock.lock();
        try {
            long e = l2Entry(idx);
            Kind kind = kind(e);
            if (kind != Kind.UNALLOCATED && kind != Kind.ZERO_PLAIN) {
                return false;
            }
            int l1Index = (int) (idx >>> l2Bits);
            int inTable = (int) (idx & ((1L << l2Bits) - 1));
            long l2 = ensureL2Table(l1Index);
            long host = placeCompressed(sectors);
            ByteBuffer padded = ByteBuffer.allocate(sectors * 512);
            padded.put(data, 0, size).clear();
            try {
                file.write(host, padded);
            } catch (IOException | RuntimeException ex) {
                unplaceCompressed(host, ex); // nothing points to the sectors yet
                throw ex;
            }
            noteFileEnd(host + (long) sectors * 512);
            writeL2Entries(l2, inTable, new long[] {host | COMPRESSED | ((long) (sectors - 1) << csizeShift)}, false);
            unlinkedClusters.incrementAndGet();
            return true;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Sectors for a compressed cluster: in the host cluster being packed if they fit, else in a
     * new one. A new host cluster's refcount is raised at once, durably, to the most compressed
     * clusters it can hold, so that no entry ever points to more than its count; what was not
     * used is given back when the next one starts or the image closes (a crash leaks it, at most).
     */
    private long placeCompressed(int sectors) throws IOException {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            long bytes = (long) sectors * 512;
            if (packCluster >= 0 && packNext + bytes <= packCluster + clusterSize) {
                long at = packNext;
                packNext += bytes;
                packUsed++;
                return at;
            }
            finishPack();
            long host = refcounts.allocateCluster();
            int reserve = clusterSize / 512;
            long index = host >>> clusterBits;
            try {
                refcounts.adjust(index, reserve - 1);
                refcounts.flushFile();
            } catch (IOException | RuntimeException e) {
                try { // nothing points to it: all of its count goes
                    refcounts.adjust(index, -refcounts.get(index));
                } catch (IOException | RuntimeException again) {
                    e.addSuppressed(again);
                }
                throw e;
            }
            packCluster = host;
            packNext = host + bytes;
            packUsed = 1;
            return host;
        } finally {
            meta.unlock();
        }
    }

    /**
     * Gives back sectors at {@code host} that {@link #placeCompressed} handed out and that nothing
     * will point to (their write failed): one use less of their host cluster, from the pack's
     * count while it is still being packed, else from its refcount. A failure to do so is added
     * to {@code cause} (a leak, as after a crash).
     */
    private void unplaceCompressed(long host, Throwable cause) {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            long cluster = host & ~((long) clusterSize - 1);
            if (cluster == packCluster) {
                packUsed--;
            } else {
                refcounts.adjust(cluster >>> clusterBits, -1);
            }
        } catch (IOException | RuntimeException e) {
            cause.addSuppressed(e);
        } finally {
            meta.unlock();
        }
    }

    /** Gives back the refcount a packed host cluster did not use; the refcounts' lock is held. */
    private void finishPack() throws IOException {
        if (packCluster < 0) {
            return;
        }
        int reserve = clusterSize / 512;
        long host = packCluster;
        packCluster = -1;
        refcounts.adjust(host >>> clusterBits, packUsed - reserve);
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        checkRequest(offset, src.remaining(), true);
        long pos = offset;
        while (src.hasRemaining()) {
            long idx = pos >>> clusterBits;
            int inOff = (int) (pos & (clusterSize - 1));
            pos += allocatingWrite(idx, inOff, src, true); // skips clusters a guest write allocated since
        }
        maybeWriteBack();
    }

    /**
     * QEMU's {@code qcow2_co_truncate} without preallocation. Growing writes a larger L1 table
     * first if the new size needs one (durable before the header points to it), then the header;
     * if the backing file is longer than the old size, the new area is then zeroed so that the
     * backing file's data does not show through (QEMU's {@code BDRV_REQ_ZERO_WRITE} in
     * {@code bdrv_co_truncate}). Shrinking drops the clusters past the new end first, then
     * writes the header. The caller drains the node.
     */
    @Override
    public void truncate(long newSize) throws IOException {
        checkOpen();
        if (readOnly) {
            throw new BlockIoException(Errno.EACCES, "Image is read-only");
        }
        if ((newSize & 511) != 0) {
            throw new BlockIoException(Errno.EINVAL, "The new size must be a multiple of 512");
        }
        long oldSize = header.size;
        if (newSize == oldSize) {
            return;
        }
        if (!snapshots.isEmpty() && header.version < 3) { // v2 does not record a snapshot's size
            throw new BlockIoException(Errno.ENOTSUP, "Can't resize a v2 image which has snapshots");
        }
        Lock meta = refcounts.lock();
        if (newSize < oldSize) {
            long keep = roundUp(newSize, clusterSize);
            if (keep < oldSize) {
                replaceWholeClusters(keep, oldSize - keep, e -> 0);
            }
            meta.lock();
            try {
                header.size = newSize;
                writeHeader();
            } finally {
                meta.unlock();
            }
            return;
        }
        long perL1 = 1L << (clusterBits + l2Bits);
        long neededL1 = (newSize + perL1 - 1) / perL1;
        meta.lock();
        try {
            if (neededL1 > l1.length()) {
                growL1(neededL1);
            }
            header.size = newSize;
            try {
                writeHeader();
            } catch (IOException | RuntimeException e) {
                header.size = oldSize;
                throw e;
            }
        } finally {
            meta.unlock();
        }
        BlockNode b = backing;
        if (b != null && b.size() > oldSize) {
            writeZeroes(oldSize, newSize - oldSize, false);
        }
    }

    /**
     * Moves the L1 table to {@code entries} entries in new clusters: the new table is durable,
     * then the header points to it, then the old clusters are released (QEMU's
     * {@code qcow2_grow_l1_table} with an exact size). Caller holds the refcount lock.
     */
    private void growL1(long entries) throws IOException {
        if (entries * 8 > MAX_L1_BYTES) {
            throw new BlockIoException(Errno.EFBIG, "Failed to grow the L1 table: File too large");
        }
        AtomicLongArray old = l1;
        int n = (int) entries;
        int clusters = (int) ((entries * 8 + clusterSize - 1) >>> clusterBits);
        long at = refcounts.allocateContiguous(clusters);
        ByteBuffer table = ByteBuffer.allocate(clusters << clusterBits);
        AtomicLongArray grown = new AtomicLongArray(n);
        for (int i = 0; i < old.length(); i++) {
            grown.set(i, old.get(i));
            table.putLong(i * 8, old.get(i));
        }
        long oldOffset = header.l1TableOffset;
        int oldEntries = header.l1Size;
        try {
            file.write(at, table);
            file.flush();
            noteFileEnd(at + ((long) clusters << clusterBits));
            header.l1TableOffset = at;
            header.l1Size = n;
            writeHeader();
        } catch (IOException | RuntimeException e) {
            header.l1TableOffset = oldOffset;
            header.l1Size = oldEntries;
            giveBack(new Qcow2Refcounts.Run(at, clusters), e);
            throw e;
        }
        l1 = grown;
        if (oldEntries > 0) {
            refcounts.free(oldOffset, oldEntries * 8L);
        }
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        replaceWholeClusters(offset, length, e -> 0); // reads come from the backing file again
    }

    /**
     * Reopens the image read-only (QEMU's reopen): what close would write (the pending
     * allocation, the refcount pool) is written and flushed first; persistent bitmaps are the
     * bitmap layer's, stored before this.
     */
    @Override
    public void reopenReadOnly() throws IOException {
        checkOpen();
        if (readOnly) {
            return;
        }
        writeBackTables();
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            finishPack();
            refcounts.releasePool();
            file.flush();
            readOnly = true;
        } finally {
            meta.unlock();
        }
        if (file instanceof ReadOnlyReopen standalone) {
            standalone.reopenReadOnly(); // in the graph, the graph reopens the file node after
        }
    }

    /** Reopens a read-only image for writing (QEMU's reopen, as commit does with its base). */
    public void reopenReadWrite() throws IOException {
        checkOpen();
        if (!readOnly) {
            return;
        }
        checkFeatures(name, header, true);
        if (file instanceof DriverNode standalone) {
            standalone.reopenReadWrite(); // in the graph, the graph reopens the file node first
        }
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            readOnly = false;
            if (headerNeedsUpdateForWriting()) {
                writeHeader();
            }
        } finally {
            meta.unlock();
        }
        bitmaps.openedReadWrite();
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        checkRequest(offset, length, true);
        zeroRange(offset, length, mayUnmap);
    }

    /**
     * With {@link RequestFlag#NO_FALLBACK} only whole clusters of a version 3 image are zeroed (by
     * their L2 entries); anything else fails with {@link Errno#ENOTSUP}, having done nothing.
     */
    @Override
    public void writeZeroes(long offset, long length, java.util.Set<RequestFlag> flags) throws IOException {
        checkRequest(offset, length, true);
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            boolean whole = (offset & (clusterSize - 1)) == 0
                    && ((offset + length) & (clusterSize - 1)) == 0 || offset + length == header.size;
            if (header.version < 3 || !whole) {
                throw new ImageException(Errno.ENOTSUP, name, "fast zero is not supported");
            }
        }
        zeroRange(offset, length, flags.contains(RequestFlag.MAY_UNMAP));
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    private void zeroRange(long offset, long length, boolean mayUnmap) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            long idx = pos >>> clusterBits;
            int inOff = (int) (pos & (clusterSize - 1));
            int n = (int) Math.min(end - pos, clusterSize - inOff);
            boolean whole = n == clusterSize || (inOff == 0 && pos + n == header.size);
            if (header.version >= 3 && whole) {
                long wholeEnd = end == header.size ? end + clusterSize - 1 & -clusterSize : end & -clusterSize;
                long perTable = 1L << l2Bits;
                long run = zeroUnallocated(idx, Math.min(perTable - (idx & (perTable - 1)), (wholeEnd - pos) >>> clusterBits));
                if (run > 0) {
                    pos = Math.min(end, (idx + run) << clusterBits);
                    continue;
                }
                zeroCluster(idx, mayUnmap);
            } else if (!readsAsZero(idx)) {
                // The shared zeroes reach 1 MiB; a larger part of a cluster (2 MiB clusters) has its own.
                ByteBuffer zero = n <= FileNode.ZEROES.capacity()
                        ? FileNode.ZEROES.duplicate().limit(n) : ByteBuffer.allocate(n);
                writeCluster(idx, inOff, n, zero);
            }
            pos += n;
        }
        maybeWriteBack();
    }

    private boolean readsAsZero(long idx) throws IOException {
        long e = l2Entry(idx);
        Kind kind = kind(e);
        return kind == Kind.ZERO_PLAIN || kind == Kind.ZERO_ALLOC || kind == Kind.UNALLOCATED && backing == null;
    }

    /**
     * Makes unallocated clusters from {@code idx} zero clusters, as QEMU's write-zeroes does
     * even without a backing file: up to {@code max} of them in one L2 table, with one write of
     * their entries. Returns how many it made (0 if the first is not unallocated); stops early
     * at a cluster that is allocated or whose lock another request holds.
     */
    private long zeroUnallocated(long idx, long max) throws IOException {
        List<Lock> held = new ArrayList<>();
        Lock first = stripe(idx).writeLock();
        first.lock();
        held.add(first);
        try {
            if (kind(l2Entry(idx)) != Kind.UNALLOCATED) {
                return 0;
            }
            int n = 1;
            while (n < max) {
                Lock l = stripe(idx + n).writeLock();
                if (!l.tryLock()) {
                    break;
                }
                held.add(l);
                if (kind(l2Entry(idx + n)) != Kind.UNALLOCATED) {
                    break;
                }
                n++;
            }
            int i = (int) (idx & ((1L << l2Bits) - 1));
            int l1Index = (int) (idx >>> l2Bits);
            long l2 = ensureL2Table(l1Index);
            long[] entries = new long[n];
            java.util.Arrays.fill(entries, ZERO);
            writeL2Entries(l2, i, entries, false);
            return n;
        } finally {
            for (Lock l : held) {
                l.unlock();
            }
        }
    }

    private void zeroCluster(long idx, boolean mayUnmap) throws IOException {
        Lock lock = stripe(idx).writeLock();
        lock.lock();
        try {
            long e = l2Entry(idx);
            Kind kind = kind(e);
            long updated;
            if (kind == Kind.ZERO_PLAIN) {
                return;
            } else if (!mayUnmap && (kind == Kind.NORMAL || kind == Kind.ZERO_ALLOC) && (e & COPIED) != 0) {
                updated = (e & OFFSET_MASK) | COPIED | ZERO; // keep the allocation
            } else {
                updated = ZERO;
            }
            if (updated != e) {
                setL2Entry(idx, updated, e);
                releaseOld(e, updated & OFFSET_MASK);
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        replaceWholeClusters(offset, length, e -> {
            Kind kind = kind(e);
            if (header.version < 3) {
                return 0; // reads from the backing file again
            }
            return kind == Kind.ZERO_PLAIN || kind == Kind.UNALLOCATED && backing == null ? e : ZERO;
        });
    }

    /**
     * Gives each whole cluster of the range the entry {@code replace} maps its entry to, and
     * releases what the old entry held (QEMU's discard rounds inwards the same way).
     */
    private void replaceWholeClusters(long offset, long length, java.util.function.LongUnaryOperator replace)
            throws IOException {
        checkRequest(offset, length, true);
        long end = offset + length;
        long first = (offset + clusterSize - 1) >>> clusterBits;
        long last = end == header.size ? (end + clusterSize - 1) >>> clusterBits : end >>> clusterBits;
        for (long idx = first; idx < last; idx++) {
            Lock lock = stripe(idx).writeLock();
            lock.lock();
            try {
                long e = l2Entry(idx);
                long updated = replace.applyAsLong(e);
                if (updated != e) {
                    setL2Entry(idx, updated, e);
                    releaseOld(e, -1);
                }
            } finally {
                lock.unlock();
            }
        }
    }

    @Override
    public void flush() throws IOException {
        if (unusable && !closed) {
            return; // QEMU: a node whose driver was dropped has nothing to flush, and says so with success
        }
        checkOpen();
        if (!readOnly) {
            writeBackTables();
            file.flush();
        }
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        checkOpen();
        if (offset < 0 || offset >= header.size || maxLength <= 0) {
            throw new ImageException(name, "block status at offset " + offset + " is outside the "
                    + header.size + "-byte image");
        }
        long end = Math.min(header.size, offset + maxLength);
        long idx = offset >>> clusterBits;
        int state = state(l2Entry(idx));
        long pos = (idx + 1) << clusterBits;
        long perTable = 1L << l2Bits;
        while (pos < end) {
            long c = pos >>> clusterBits;
            if ((l1.get((int) (c >>> l2Bits)) & OFFSET_MASK) == 0) { // a whole table unallocated
                if (state != 0) {
                    break;
                }
                pos = ((c >>> l2Bits) + 1) * perTable << clusterBits;
                continue;
            }
            if (state(l2Entry(c)) != state) {
                break;
            }
            pos += clusterSize;
        }
        long length = Math.min(pos, end) - offset;
        return switch (state) {
            case 0 -> new BlockStatus(offset, length, false, backing == null, 1);
            case 1 -> new BlockStatus(offset, length, true, false, 0);
            default -> new BlockStatus(offset, length, true, true, 0);
        };
    }

    /** 0: not allocated here; 1: data; 2: zeroes. */
    private int state(long e) {
        return switch (kind(e)) {
            case UNALLOCATED -> 0;
            case NORMAL, COMPRESSED -> 1;
            case ZERO_PLAIN, ZERO_ALLOC -> 2;
        };
    }

    /**
     * Points the image at another backing file (or none): rewrites the header durably, then
     * switches reads to {@code newBacking}. The caller closes the old backing node.
     */
    public void replaceBacking(BlockNode newBacking, String backingName, String backingFormat) throws IOException {
        changeBackingFile(backingName, backingFormat);
        backing = newBacking;
    }

    @Override
    public boolean supportsBacking() {
        return true;
    }

    @Override
    public void setBacking(BlockNode newBacking) {
        backing = newBacking;
    }

    @Override
    public void changeBackingFile(String backingName, String backingFormat) throws IOException {
        checkOpen();
        if (readOnly) {
            throw new ImageException(Errno.EPERM, name, "is open read-only; cannot change its backing file");
        }
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            header.backingFile = backingName;
            header.backingFormat = backingName == null ? null : backingFormat;
            writeHeader();
        } finally {
            meta.unlock();
        }
    }

    // ---- internal snapshots -------------------------------------------------------------------

    /**
     * An internal snapshot as the snapshot table records it (QEMU's {@code QEMUSnapshotInfo});
     * {@code icount} is -1 where none was recorded.
     */
    public record InternalSnapshot(String id, String name, long vmStateSize, long dateSec, long dateNsec,
                                   long vmClockNsec, long icount) {
    }

    /** The internal snapshots, in the table's order. */
    public List<InternalSnapshot> snapshots() {
        return snapshots.stream().map(Qcow2Node::info).toList();
    }

    private static InternalSnapshot info(Qcow2Snapshots.Entry e) {
        return new InternalSnapshot(e.id(), e.name(), e.vmStateSize(), e.dateSec(), e.dateNsec(), e.vmClockNsec(),
                e.icount());
    }

    /**
     * The snapshot QEMU's {@code bdrv_snapshot_find_by_id_and_name} finds: by both {@code id} and
     * {@code name}, or by the one given (null: not given).
     */
    public Optional<InternalSnapshot> findSnapshot(String id, String name) {
        List<Qcow2Snapshots.Entry> list = snapshots;
        int i = Qcow2Snapshots.find(list, id, name);
        return i < 0 ? Optional.empty() : Optional.of(info(list.get(i)));
    }

    /**
     * Takes an internal snapshot of the image as it is now (QEMU's {@code qcow2_snapshot_create},
     * without VM state), with the next free numeric id. In order, each step durable before the
     * next: a copy of the L1 table; every L2 table and data cluster the active L1 table reaches
     * counted once more; {@code COPIED} cleared in the active tables (so that the next write to
     * any of them copies first); the new snapshot table, then the header that points to it. A
     * crash or failure before the header leaves leaked clusters, no snapshot.
     */
    public InternalSnapshot createSnapshot(String name, long dateSec, long dateNsec, long vmClockNsec)
            throws IOException {
        checkOpen();
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, Errno.EPERM.message());
        }
        lockEverything();
        try {
            writeBackTables(); // the tables are rewritten from the file's and memory's view alike
            List<Qcow2Snapshots.Entry> list = snapshots;
            if (list.size() >= Qcow2Snapshots.MAX_SNAPSHOTS) {
                throw new BlockIoException(Errno.EFBIG, Errno.EFBIG.message());
            }
            if (header.refcountOrder == 0) { // 1-bit refcounts cannot count a second reference (QEMU: EINVAL too)
                throw new BlockIoException(Errno.EINVAL, Errno.EINVAL.message());
            }
            finishPack(); // a packed cluster's spare count goes back first
            String id = Qcow2Snapshots.newId(list);
            int n = l1.length();
            long l1Copy = 0;
            int clusters = (int) (((long) n * 8 + clusterSize - 1) >>> clusterBits);
            if (n > 0) {
                l1Copy = refcounts.allocateTable(clusters);
                ByteBuffer copy = ByteBuffer.allocate(clusters << clusterBits);
                for (int i = 0; i < n; i++) {
                    copy.putLong(i * 8, l1.get(i));
                }
                try {
                    file.write(l1Copy, copy);
                } catch (IOException | RuntimeException e) {
                    giveBack(new Qcow2Refcounts.Run(l1Copy, clusters), e);
                    throw e;
                }
                noteFileEnd(l1Copy + ((long) clusters << clusterBits));
            }
            try {
                countActive(); // durable before the tables drop COPIED and the snapshot table points to the copy
            } catch (IOException | RuntimeException e) {
                if (n > 0) { // the counts are back as they were: nothing points to the copy
                    giveBack(new Qcow2Refcounts.Run(l1Copy, clusters), e);
                }
                throw e;
            }
            try {
                setActiveCopiedFlags(false);
            } finally {
                l2Cache.invalidateAll(); // the tables on disk are the truth now, whatever failed
            }
            Qcow2Snapshots.Entry sn = new Qcow2Snapshots.Entry(l1Copy, n, id, name, dateSec, dateNsec, vmClockNsec,
                    0, header.size, -1, new byte[0]);
            List<Qcow2Snapshots.Entry> grown = new ArrayList<>(list);
            grown.add(sn);
            writeSnapshotTable(grown);
            return info(sn);
        } finally {
            unlockEverything();
        }
    }

    /**
     * Deletes an internal snapshot (QEMU's {@code qcow2_snapshot_delete}): found as
     * {@link #findSnapshot}; the snapshot table without it is written first, then what its L1
     * table reaches is counted once less (clusters that reach 0 are discarded), its L1 table is
     * freed, and {@code COPIED} is set again in the active tables wherever a count is back to 1.
     * A crash after the table is written leaks what was not released yet. The messages are QEMU's.
     */
    public InternalSnapshot deleteSnapshot(String id, String name) throws IOException {
        checkOpen();
        lockEverything();
        try {
            writeBackTables(); // the tables are rewritten from the file's and memory's view alike
            List<Qcow2Snapshots.Entry> list = snapshots;
            int index = Qcow2Snapshots.find(list, id, name);
            if (index < 0) {
                throw new BlockIoException(Errno.EINVAL, "Can't find the snapshot");
            }
            Qcow2Snapshots.Entry sn = list.get(index);
            // QEMU's qcow2_validate_table of the snapshot's L1 table, before anything changes.
            if (sn.l1Size() < 0 || (long) sn.l1Size() * 8 > MAX_L1_BYTES) {
                throw new BlockIoException(Errno.EFBIG, "Snapshot L1 table too large");
            }
            if (sn.l1Size() > 0 && ((sn.l1Offset() & (clusterSize - 1)) != 0 || sn.l1Offset() <= 0
                    || sn.l1Offset() + sn.l1Size() * 8L > file.size())) {
                throw new BlockIoException(Errno.EINVAL, "Snapshot L1 table offset invalid");
            }
            if (readOnly) {
                throw new BlockIoException(Errno.EPERM, "Failed to remove snapshot from snapshot list: "
                        + Errno.EPERM.message());
            }
            List<Qcow2Snapshots.Entry> rest = new ArrayList<>(list);
            rest.remove(index);
            try {
                finishPack();
                writeSnapshotTable(rest);
            } catch (IOException e) {
                throw new BlockIoException(Errno.of(e), "Failed to remove snapshot from snapshot list: "
                        + Errno.of(e).message(), e);
            }
            try {
                releaseSnapshot(sn);
            } catch (IOException e) {
                throw new BlockIoException(Errno.of(e), "Failed to free the cluster and L1 table: "
                        + Errno.of(e).message(), e);
            }
            try {
                setActiveCopiedFlags(true);
            } catch (IOException e) {
                throw new BlockIoException(Errno.of(e), "Failed to update snapshot status in disk: "
                        + Errno.of(e).message(), e);
            } finally {
                l2Cache.invalidateAll();
            }
            return info(sn);
        } finally {
            unlockEverything();
        }
    }

    /** Every stripe, then the refcount lock: no request runs while the snapshot tables change. */
    private void lockEverything() {
        for (ReentrantReadWriteLock s : stripes) {
            s.writeLock().lock();
        }
        refcounts.lock().lock();
    }

    private void unlockEverything() {
        refcounts.lock().unlock();
        for (int i = STRIPES - 1; i >= 0; i--) {
            stripes[i].writeLock().unlock();
        }
    }

    /**
     * Counts once more every L2 table of the active L1 table and every cluster their entries
     * reference (QEMU's {@code qcow2_update_snapshot_refcount} with addend 1), then writes and
     * flushes the refcounts. If a count cannot be raised, those raised are lowered again.
     */
    private void countActive() throws IOException {
        long[] done = {0};
        try {
            forEachReference(l1Snapshot(), (index, delta) -> {
                refcounts.count(index, 1);
                done[0]++;
            }, null);
        } catch (IOException | RuntimeException e) {
            long[] undo = {done[0]};
            try {
                forEachReference(l1Snapshot(), (index, delta) -> {
                    if (undo[0]-- > 0) {
                        refcounts.count(index, -1);
                    }
                }, null);
                refcounts.writeBack();
            } catch (IOException | RuntimeException again) {
                e.addSuppressed(again);
            }
            throw e;
        }
        refcounts.flushFile();
    }

    /** A reference the L1/L2 walk meets: the host cluster {@code index}. */
    @FunctionalInterface
    private interface RefVisitor {
        void visit(long index, long unused) throws IOException;
    }

    private long[] l1Snapshot() {
        long[] t = new long[l1.length()];
        for (int i = 0; i < t.length; i++) {
            t[i] = l1.get(i);
        }
        return t;
    }

    /**
     * Visits every host cluster that L1 table {@code table} reaches: each L2 table's data clusters
     * (a compressed one's every host cluster), then the table itself. L2 tables are read from
     * {@code tables} if given (a snapshot's, from disk), else through the cache.
     */
    private void forEachReference(long[] table, RefVisitor visit, ByteBuffer fromDisk) throws IOException {
        for (long l1e : table) {
            long l2 = l1e & OFFSET_MASK;
            if (l2 == 0) {
                continue;
            }
            long[] entries = readTable(l2, fromDisk);
            for (long e : entries) {
                Kind kind = kind(e);
                if (kind == Kind.COMPRESSED) {
                    long coff = e & coffsetMask;
                    long sectors = ((e >>> csizeShift) & csizeMask) + 1;
                    long first = (coff & ~511L) >>> clusterBits;
                    long last = ((coff & ~511L) + sectors * 512 - 1) >>> clusterBits;
                    for (long c = first; c <= last; c++) {
                        visit.visit(c, 0);
                    }
                } else if (kind == Kind.NORMAL || kind == Kind.ZERO_ALLOC) {
                    visit.visit((e & OFFSET_MASK) >>> clusterBits, 0);
                }
            }
            visit.visit(l2 >>> clusterBits, 0);
        }
    }

    private long[] readTable(long l2, ByteBuffer fromDisk) throws IOException {
        long[] entries = new long[clusterSize / 8];
        if (fromDisk == null) {
            AtomicLongArray t = l2Table(l2);
            for (int j = 0; j < entries.length; j++) {
                entries[j] = t.get(j);
            }
        } else {
            if ((l2 & (clusterSize - 1)) != 0 || l2 + clusterSize > file.size()) {
                throw new ImageException(name, "snapshot L2 table at offset " + l2 + " is unaligned or past the end "
                        + "of the file (image is corrupt)");
            }
            file.read(l2, fromDisk.clear());
            fromDisk.flip().asLongBuffer().get(entries);
        }
        return entries;
    }

    /**
     * Sets or clears {@code COPIED} in the active L1 and L2 tables: with {@code restore}, as QEMU's
     * {@code qcow2_update_snapshot_refcount} with addend 0 (set where the refcount is 1, cleared
     * elsewhere); without, cleared everywhere. Tables that change are written whole, L2 tables
     * before the L1 table, each group flushed. Memory follows the L1 table; the caller drops the
     * L2 cache.
     */
    private void setActiveCopiedFlags(boolean restore) throws IOException {
        long[] table = l1Snapshot();
        long[] updatedL1 = table.clone();
        ByteBuffer buf = ByteBuffer.allocate(clusterSize);
        boolean anyTable = false;
        for (int i = 0; i < table.length; i++) {
            long l2 = table[i] & OFFSET_MASK;
            if (l2 == 0) {
                continue;
            }
            long[] entries = readTable(l2, null);
            boolean changed = false;
            for (int j = 0; j < entries.length; j++) {
                long e = entries[j];
                Kind kind = kind(e);
                if (kind != Kind.NORMAL && kind != Kind.ZERO_ALLOC) {
                    continue;
                }
                boolean own = restore && refcounts.get((e & OFFSET_MASK) >>> clusterBits) == 1;
                long v = own ? e | COPIED : e & ~COPIED;
                if (v != e) {
                    entries[j] = v;
                    changed = true;
                }
            }
            if (changed) {
                buf.clear().asLongBuffer().put(entries);
                file.write(l2, buf.clear());
                anyTable = true;
            }
            boolean own = restore && refcounts.get(l2 >>> clusterBits) == 1;
            updatedL1[i] = own ? table[i] | COPIED : table[i] & ~COPIED;
        }
        if (anyTable) {
            file.flush(); // the L2 tables before the L1 table that points to them
        }
        if (!java.util.Arrays.equals(table, updatedL1)) {
            int align = Math.min(clusterSize, Math.max(8, Qcow2Refcounts.requestAlignment(file)));
            int bytes = (table.length * 8 + align - 1) & -align;
            ByteBuffer t = ByteBuffer.allocate(bytes); // past the table's end, zeroes (as writeL1Entry)
            t.asLongBuffer().put(updatedL1);
            file.write(header.l1TableOffset, t);
            for (int i = 0; i < updatedL1.length; i++) {
                l1.set(i, updatedL1[i]);
            }
            file.flush();
        }
    }

    /**
     * Counts once less what a deleted snapshot's L1 table reaches and frees that L1 table; host
     * clusters whose count reaches 0 are discarded, after the counts are written.
     */
    private void releaseSnapshot(Qcow2Snapshots.Entry sn) throws IOException {
        if (sn.l1Size() == 0) {
            return;
        }
        ByteBuffer raw = ByteBuffer.allocate(sn.l1Size() * 8);
        file.read(sn.l1Offset(), raw);
        long[] table = new long[sn.l1Size()];
        raw.flip().asLongBuffer().get(table);
        List<long[]> freed = new ArrayList<>(); // runs [first, end) of clusters now free
        forEachReference(table, (index, unused) -> {
            refcounts.count(index, -1);
            if (refcounts.get(index) == 0) {
                long[] last = freed.isEmpty() ? null : freed.get(freed.size() - 1);
                if (last != null && last[1] == index) {
                    last[1]++;
                } else {
                    freed.add(new long[] {index, index + 1});
                }
            }
        }, ByteBuffer.allocate(clusterSize));
        refcounts.unref(sn.l1Offset(), sn.l1Size() * 8L);
        refcounts.flushFile();
        for (long[] run : freed) {
            if (refcounts.get(run[0]) == 0) { // still free: nothing was allocated meanwhile (the lock is held)
                file.discard(run[0] << clusterBits, (run[1] - run[0]) << clusterBits);
            }
        }
    }

    /**
     * Writes {@code list} as the snapshot table in new clusters (none for an empty table), durable
     * before the header points to it; then frees the old table (QEMU's {@code qcow2_write_snapshots}).
     * If the header write fails the new table stays counted (it may be in use): a leak at most.
     */
    private void writeSnapshotTable(List<Qcow2Snapshots.Entry> list) throws IOException {
        ByteBuffer encoded = Qcow2Snapshots.encode(list);
        long bytes = encoded.remaining();
        if (bytes > Qcow2Snapshots.MAX_TABLE_BYTES) {
            throw new BlockIoException(Errno.EFBIG, Errno.EFBIG.message());
        }
        long at = 0;
        if (!list.isEmpty()) {
            int clusters = (int) ((bytes + clusterSize - 1) >>> clusterBits);
            at = refcounts.allocateTable(clusters);
            ByteBuffer padded = ByteBuffer.allocate(clusters << clusterBits).put(encoded).clear();
            try {
                file.write(at, padded);
                file.flush();
            } catch (IOException | RuntimeException e) {
                giveBack(new Qcow2Refcounts.Run(at, clusters), e);
                throw e;
            }
            noteFileEnd(at + ((long) clusters << clusterBits));
        }
        long oldOffset = header.snapshotsOffset;
        int oldCount = header.snapshotCount;
        long oldBytes = snapshotTableBytes;
        header.snapshotCount = list.size();
        header.snapshotsOffset = at;
        try {
            writeHeader();
        } catch (IOException | RuntimeException e) {
            header.snapshotCount = oldCount;
            header.snapshotsOffset = oldOffset;
            throw e;
        }
        snapshots = List.copyOf(list);
        snapshotTableBytes = bytes;
        if (oldCount > 0 && oldBytes > 0) {
            refcounts.free(oldOffset, oldBytes);
        }
    }

    private void closeQuietlyAfterFailedOpen() {
        closed = true; // the caller closes the file it gave us
    }

    /** Uses {@code newBacking} for reads below this image without touching the header (QEMU's graph change). */
    public void setBackingNode(BlockNode newBacking) {
        backing = newBacking;
    }

    @Override
    public void close() throws IOException {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (!readOnly && !unusable) { // QEMU does not close a driver it dropped: nothing more is written
                writeBackTables(); // first: releasing the pool may read the tables from the file
                Lock meta = refcounts.lock();
                meta.lock();
                try {
                    finishPack();
                    refcounts.releasePool();
                } finally {
                    meta.unlock();
                }
                file.flush();
            }
        } finally {
            if (ownsChildren) {
                try {
                    file.close();
                } finally {
                    BlockNode b = backing;
                    if (b != null) {
                        b.close();
                    }
                }
            }
        }
    }

    // ---- metadata ---------------------------------------------------------------------------

    private static Kind kindOf(long e, boolean hasZeroFlag) {
        if ((e & COMPRESSED) != 0) {
            return Kind.COMPRESSED;
        }
        long off = e & OFFSET_MASK;
        if (hasZeroFlag && (e & ZERO) != 0) {
            return off == 0 ? Kind.ZERO_PLAIN : Kind.ZERO_ALLOC;
        }
        return off == 0 ? Kind.UNALLOCATED : Kind.NORMAL;
    }

    private Kind kind(long e) {
        return kindOf(e, header.version >= 3);
    }

    private ReentrantReadWriteLock stripe(long idx) {
        return stripes[(int) (idx ^ (idx >>> 8)) & (STRIPES - 1)];
    }

    private long l2Entry(long idx) throws IOException {
        long l2 = l1.get((int) (idx >>> l2Bits)) & OFFSET_MASK;
        if (l2 == 0) {
            return 0;
        }
        return l2Table(l2).get((int) (idx & ((1L << l2Bits) - 1)));
    }

    private AtomicLongArray loadL2(long offset) {
        DirtyTable d = dirtyTables.get(offset);
        if (d != null) {
            return d.table; // dropped from the cache while dirty: the file lacks what it holds
        }
        try {
            ByteBuffer buf = ByteBuffer.allocate(clusterSize);
            file.read(offset, buf);
            long[] t = new long[clusterSize / 8];
            buf.flip().asLongBuffer().get(t);
            return new AtomicLongArray(t);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * The host offset of a cluster a read (or a copy-on-write) uses, checked as QEMU's
     * {@code qcow2_get_host_offset} does (an unaligned offset is a fatal corruption), and
     * against the file's end.
     */
    private long hostForRead(long idx, long e) throws IOException {
        long host = e & OFFSET_MASK;
        if ((host & (clusterSize - 1)) != 0) {
            long l2 = l1.get((int) (idx >>> l2Bits)) & OFFSET_MASK;
            throw corruption(true, -1, -1, "Cluster allocation offset " + hex(host) + " unaligned (L2 offset: "
                    + hex(l2) + ", L2 index: " + hex(idx & ((1L << l2Bits) - 1)) + ")");
        }
        return checkedAgainstFile(idx, host);
    }

    /**
     * The host offset of an allocated cluster a write goes to in place, checked as QEMU's
     * {@code handle_copied} does; {@code guest} is where the write starts.
     */
    private long hostForWrite(long idx, long e, long guest) throws IOException {
        long host = e & OFFSET_MASK;
        if ((host & (clusterSize - 1)) != 0) {
            throw corruption(true, -1, -1, ((e & ZERO) != 0 && header.version >= 3 ? "Preallocated zero" : "Data")
                    + " cluster offset " + hex(host) + " unaligned (guest offset: " + hex(guest) + ")");
        }
        return checkedAgainstFile(idx, host);
    }

    private long checkedAgainstFile(long idx, long host) throws IOException {
        if (host + clusterSize > knownFileEnd) {
            knownFileEnd = file.size();
            if (host + clusterSize > knownFileEnd) {
                throw new ImageException(name, "L2 entry for guest offset " + (idx << clusterBits)
                        + " points past the end of the file (host offset " + host + ", file size "
                        + knownFileEnd + ")");
            }
        }
        return host;
    }

    /**
     * QEMU's {@code qcow2_pre_write_overlap_check} with its default checks ({@code cached}):
     * a data write that would land on metadata is a fatal corruption (an L2 entry points there)
     * and fails before it reaches the file.
     */
    private void checkOverlap(long offset, long size) throws IOException {
        String what = metadataOverlap(offset, size);
        if (what != null) {
            throw corruption(true, offset, size, "Preventing invalid write on metadata (overlaps with " + what + ")");
        }
    }

    /**
     * The first metadata structure host bytes {@code [offset, +size)}, widened to clusters,
     * overlap, in QEMU's order and words ({@code qcow2_check_metadata_overlap},
     * {@code metadata_ol_names}), or null: the checks of its default ({@code cached}), so
     * inactive L2 tables are not looked at.
     */
    private String metadataOverlap(long offset, long size) {
        long start = offset & -(long) clusterSize;
        long end = roundUp(offset + size, clusterSize);
        if (start < clusterSize) {
            return "qcow2_header";
        }
        if (header.l1Size > 0 && start < header.l1TableOffset + header.l1Size * 8L && header.l1TableOffset < end) {
            return "active L1 table";
        }
        long rt = header.refcountTableOffset;
        if (start < rt + header.refcountTableClusters * clusterSize && rt < end) {
            return "refcount table";
        }
        List<Qcow2Snapshots.Entry> snaps = snapshots;
        if (!snaps.isEmpty()) {
            if (overlaps(start, end, header.snapshotsOffset, snapshotTableBytes)) {
                return "snapshot table";
            }
            for (Qcow2Snapshots.Entry sn : snaps) {
                if (overlaps(start, end, sn.l1Offset(), sn.l1Size() * 8L)) {
                    return "inactive L1 table";
                }
            }
        }
        AtomicLongArray table = l1;
        for (int i = 0; i < table.length(); i++) {
            long l2 = table.get(i) & OFFSET_MASK;
            if (l2 != 0 && l2 >= start && l2 < end) {
                return "active L2 table";
            }
        }
        if (refcounts.blockIn(start, end)) {
            return "refcount block";
        }
        return null;
    }

    /** Whether clusters {@code [start, end)} meet the bytes {@code [offset, +length)}. */
    private static boolean overlaps(long start, long end, long offset, long length) {
        return length > 0 && start < offset + length && offset < end;
    }

    /** C's {@code %#x}: {@code 0} for zero, else {@code 0x} and the digits. */
    private static String hex(long v) {
        return v == 0 ? "0" : "0x" + Long.toHexString(v);
    }

    /** Sets who is told of corruption found at run time (one listener; the graph's owner). */
    public void setCorruptionListener(CorruptionListener listener) {
        this.corruptionListener = listener;
    }

    /**
     * QEMU's {@code qcow2_signal_corruption}: tells the listener once (later non-fatal findings
     * are not told; a fatal one after a non-fatal one is), and for a fatal one on a writable
     * image marks the image corrupt in its header and refuses every request from then on
     * ({@link Errno#ENOMEDIUM}). On a read-only image nothing is fatal. Returns the error the
     * request that found it fails with.
     */
    private ImageException corruption(boolean fatal, long offset, long size, String message) {
        synchronized (corruptionLock) {
            boolean reallyFatal = fatal && !readOnly;
            if (!signaledCorruption || reallyFatal && (header.incompatibleFeatures & Qcow2Header.INCOMPAT_CORRUPT) == 0) {
                if (reallyFatal) {
                    LOG.error("qcow2: Marking image as corrupt: {}; further corruption events will be suppressed", message);
                } else {
                    LOG.error("qcow2: Image is corrupt: {}; further non-fatal corruption events will be suppressed",
                            message);
                }
                try {
                    corruptionListener.corrupted(message, offset, size, reallyFatal);
                } catch (RuntimeException e) {
                    LOG.warn("{}: corruption listener failed", name, e);
                }
                if (reallyFatal) {
                    unusable = true;
                    markCorrupt();
                }
                signaledCorruption = true;
            }
        }
        return new ImageException(name, message);
    }

    /** QEMU's {@code qcow2_mark_corrupt}: the incompatible bit, on disk; a failure is only logged, as there. */
    private void markCorrupt() {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            header.incompatibleFeatures |= Qcow2Header.INCOMPAT_CORRUPT;
            writeHeader();
        } catch (IOException | RuntimeException e) {
            LOG.warn("{}: could not mark the image corrupt: {}", name, e.getMessage());
        } finally {
            meta.unlock();
        }
    }

    private void noteFileEnd(long end) {
        if (end > knownFileEnd) {
            knownFileEnd = end;
        }
    }

    /**
     * Sets one L2 entry, allocating the L2 table if needed, replacing {@code old}: written at once
     * if what {@code old} held is released next, else left to {@link #writeBackTables}. Caller
     * holds the stripe's write lock.
     */
    private void setL2Entry(long idx, long value, long old) throws IOException {
        int l1Index = (int) (idx >>> l2Bits);
        int i = (int) (idx & ((1L << l2Bits) - 1));
        long l2 = ensureL2Table(l1Index);
        writeL2Entries(l2, i, new long[] {value}, holdsStorage(old));
    }

    /**
     * Sets entries {@code first, first + 1, ...} of the L2 table at {@code l2} to {@code values}.
     * Caller holds the stripe locks of the clusters, and has written whatever data they point to.
     *
     * <p>Write-back, as QEMU's L2 table cache: the cached table changes at once and stays pinned
     * in {@link #dirtyTables} until the file has it; {@link #flush}, {@link #close}, operations
     * that rewrite tables, and {@link #maybeWriteBack} (a bound on what a crash can leak) write it.
     * With {@code durable}, it is written before this returns: a caller that releases what the
     * old entries held must not let the refcount drop reach the file while the file's table still
     * points there. Concurrent callers share a table's writes (one in flight at a time, each
     * carrying every change made before it started).
     *
     * <p>A failed write fails the durable callers it carried; the entries stay changed in memory
     * (their data is written) and dirty, for the next write to retry.
     */
    private void writeL2Entries(long l2, int first, long[] values, boolean durable) throws IOException {
        int slot = slotOf(l2);
        ReentrantLock lock = tableLocks[slot];
        lock.lock();
        try {
            DirtyTable d = dirtyTables.get(l2);
            if (d == null) {
                AtomicLongArray table = l2Table(l2);
                l2Cache.put(l2, table); // a reader that reloaded it meanwhile now finds this one
                d = new DirtyTable(table);
                dirtyTables.put(l2, d);
            }
            for (int j = 0; j < values.length; j++) {
                d.table.set(first + j, values[j]);
            }
            d.from = Math.min(d.from, first);
            d.to = Math.max(d.to, first + values.length);
            long change = ++d.changes;
            if (durable) {
                awaitWritten(slot, l2, d, change);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Returns once change {@code change} of dirty table {@code d} is in the file, leading a write
     * when none is in flight; throws if a write that carried it failed. Caller holds the table lock.
     */
    private void awaitWritten(int slot, long l2, DirtyTable d, long change) throws IOException {
        long attemptsBefore = d.attempts;
        while (d.written < change) {
            if (d.failedAttempt > attemptsBefore && d.failedUpTo >= change) {
                Throwable e = d.error;
                if (e instanceof IOException io) {
                    throw io;
                } else if (e instanceof RuntimeException re) {
                    throw re;
                }
                throw new IOException(name + ": writing L2 table entries failed: " + e, e);
            }
            if (d.writing) {
                tableWritten[slot].awaitUninterruptibly();
            } else {
                writeDirty(slot, l2, d);
            }
        }
    }

    /**
     * Writes the dirty entries of {@code d} from memory (the slice that covers them, widened to
     * the file's request alignment, so that the file never reads around it), with the table's
     * lock let go during the write itself: changes made meanwhile wait for the next write.
     */
    private void writeDirty(int slot, long l2, DirtyTable d) {
        d.writing = true;
        long upTo = d.changes;
        int dirtyFrom = d.from;
        int dirtyTo = d.to;
        d.from = Integer.MAX_VALUE;
        d.to = 0;
        Throwable failure = null;
        try {
            int align = Math.min(clusterSize, Math.max(8, Qcow2Refcounts.requestAlignment(file)));
            int from = dirtyFrom * 8 & -align;
            int to = Math.min(clusterSize, (dirtyTo * 8 + align - 1) & -align);
            ByteBuffer buf = ByteBuffer.allocate(to - from);
            for (int j = from >> 3; j < to >> 3; j++) {
                buf.putLong((j << 3) - from, d.table.get(j));
            }
            tableLocks[slot].unlock();
            try {
                flushDependencies();
                file.write(l2 + from, buf);
            } finally {
                tableLocks[slot].lock();
            }
        } catch (Throwable e) { // an Error too: no caller may take its entries for written
            failure = e;
        } finally {
            d.writing = false;
            d.attempts++;
            if (failure == null) {
                d.written = upTo;
            } else {
                d.error = failure;
                d.failedAttempt = d.attempts;
                d.failedUpTo = upTo;
                d.from = Math.min(d.from, dirtyFrom);
                d.to = Math.max(d.to, dirtyTo);
            }
            if (d.to == 0 && d.written == d.changes) {
                dirtyTables.remove(l2); // the file has it all: the cache may drop it again
            }
            tableWritten[slot].signalAll();
        }
    }

    /**
     * Flushes the file if copy-on-write data or refcount pool refills were written since the last
     * such flush, as QEMU's {@code qcow2_cache_depends_on_flush} and its L2 cache's dependency on
     * the refcount cache: a table must not reach the disk before the old contents its new entries
     * rely on, nor before the counts of the clusters they point to. Called after the table's
     * entries were copied from memory: every copy and refill they rely on was counted before its
     * entry was set.
     */
    private void flushDependencies() throws IOException {
        long copies = copiesWritten.get();
        long refills = refcounts.refills();
        if (copies > copiesFlushed.get() || refcounts.refillsPending(refills)) {
            file.flush();
            copiesFlushed.accumulateAndGet(copies, Math::max);
            refcounts.refillsDurableAfter(refills);
        }
    }

    /** Writes every dirty L2 table to the file (not flushed). Throws the first failure after trying every table. */
    private void writeBackTables() throws IOException {
        unlinkedClusters.set(0); // what is allocated from here on counts towards the next one
        if (dirtyTables.isEmpty()) {
            return;
        }
        Long[] tables = dirtyTables.keySet().toArray(new Long[0]);
        java.util.Arrays.sort(tables); // in file order
        IOException failed = null;
        for (Long l2 : tables) {
            int slot = slotOf(l2);
            tableLocks[slot].lock();
            try {
                DirtyTable d = dirtyTables.get(l2);
                if (d != null) {
                    awaitWritten(slot, l2, d, d.changes);
                }
            } catch (IOException e) {
                if (failed == null) {
                    failed = e;
                } else if (failed != e) {
                    failed.addSuppressed(e);
                }
            } finally {
                tableLocks[slot].unlock();
            }
        }
        if (failed != null) {
            throw failed;
        }
    }

    /**
     * Writes the dirty tables back once the clusters allocated since the last write-back reach
     * {@link #writeBackWindow} or the dirty tables {@link #maxDirtyTables}: a process killed
     * before a flush then leaks no more than that (the clusters are counted, and nothing on disk
     * points to them yet), and the pinned tables stay bounded. Caller holds no stripe lock.
     */
    private void maybeWriteBack() throws IOException {
        if (unlinkedClusters.get() >= writeBackWindow && unlinkedClusters.getAndSet(0) >= writeBackWindow
                || dirtyTables.size() > maxDirtyTables) {
            writeBackTables();
        }
    }

    /** Whether a replaced entry held storage to release (so that its replacement is written at once). */
    private boolean holdsStorage(long e) {
        Kind kind = kind(e);
        return kind != Kind.UNALLOCATED && kind != Kind.ZERO_PLAIN;
    }

    /** Whether any of the first {@code n} entries of {@code old} held storage. */
    private boolean anyHoldsStorage(long[] old, int n) {
        for (int i = 0; i < n; i++) {
            if (holdsStorage(old[i])) {
                return true;
            }
        }
        return false;
    }

    private int slotOf(long l2) {
        return (int) (l2 >>> clusterBits) & (TABLE_LOCKS - 1);
    }

    /** An L2 table changed in memory and not yet (all) in the file; under its table lock. */
    private static final class DirtyTable {
        /** The cached table, which readers find here while the cache may have dropped it. */
        final AtomicLongArray table;
        /** Entries {@code [from, to)} changed since the last write started ({@code to == 0}: none). */
        int from = Integer.MAX_VALUE;
        int to;
        /** Changes made, and how many of them the file has: every one up to {@code written}. */
        long changes;
        long written;
        /** Whether a write of the table is in flight. */
        boolean writing;
        /** Writes ended; the last one that failed (its number), what it carried and why. */
        long attempts;
        long failedAttempt;
        long failedUpTo;
        Throwable error;

        DirtyTable(AtomicLongArray table) {
            this.table = table;
        }
    }

    private AtomicLongArray l2Table(long l2) throws IOException {
        DirtyTable d = dirtyTables.get(l2);
        if (d != null) {
            return d.table;
        }
        try {
            return l2Cache.get(l2, l2Loader);
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
    }

    /**
     * The L2 table of L1 entry {@code l1Index}, ready to be changed: allocated if there is none,
     * and this image's own (see {@link #unshareL2Table}) if a snapshot shares it.
     */
    private long ensureL2Table(int l1Index) throws IOException {
        long current = l1.get(l1Index);
        long l2 = current & OFFSET_MASK;
        if (l2 != 0 && (current & COPIED) != 0) {
            return l2;
        }
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            current = l1.get(l1Index);
            l2 = current & OFFSET_MASK;
            if (l2 != 0) {
                return (current & COPIED) != 0 ? l2 : unshareL2Table(l1Index, l2);
            }
            Long unlinked = unlinkedTables.remove(l1Index);
            if (unlinked != null) {
                l2 = unlinked; // zeroed and durable already
            } else {
                l2 = refcounts.allocateCluster();
                try {
                    file.writeZeroes(l2, clusterSize, false);
                    file.flush(); // the table is durable before the L1 entry points to it
                } catch (IOException | RuntimeException e) {
                    // Nothing points to it: a write retried on a full disk must not leak a table each time.
                    giveBack(new Qcow2Refcounts.Run(l2, 1), e);
                    throw e;
                }
                noteFileEnd(l2 + clusterSize);
            }
            long entry = l2 | COPIED;
            try {
                writeL1Entry(l1Index, entry);
            } catch (IOException | RuntimeException e) {
                // The entry may have reached the disk, so the table stays counted: the next try reuses it.
                unlinkedTables.put(l1Index, l2);
                throw e;
            }
            l2Cache.put(l2, new AtomicLongArray(clusterSize / 8));
            l1.set(l1Index, entry);
            return l2;
        } finally {
            meta.unlock();
        }
    }

    /**
     * Copy-on-write of an L2 table that an internal snapshot shares (its L1 entry lacks
     * {@code COPIED}), QEMU's {@code get_cluster_table}/{@code l2_allocate}: the copy is durable,
     * then the L1 entry points to it, then the old table's refcount drops. The data clusters keep
     * their counts (a snapshot counted each once more for each table path that reaches it), and
     * the copy's entries lose {@code COPIED}: they are still shared. A table counted once only
     * lacked the flag, which is set. Caller holds the refcount lock.
     */
    private long unshareL2Table(int l1Index, long l2) throws IOException {
        if (refcounts.get(l2 >>> clusterBits) == 1) {
            writeL1Entry(l1Index, l2 | COPIED);
            l1.set(l1Index, l2 | COPIED);
            return l2;
        }
        AtomicLongArray shared = l2Table(l2);
        long[] entries = new long[clusterSize / 8];
        ByteBuffer buf = ByteBuffer.allocate(clusterSize);
        for (int j = 0; j < entries.length; j++) {
            entries[j] = shared.get(j) & ~COPIED;
            buf.putLong(j * 8, entries[j]);
        }
        long copy = refcounts.allocateCluster();
        try {
            file.write(copy, buf);
            file.flush(); // the copy is durable before the L1 entry points to it
        } catch (IOException | RuntimeException e) {
            giveBack(new Qcow2Refcounts.Run(copy, 1), e);
            throw e;
        }
        noteFileEnd(copy + clusterSize);
        writeL1Entry(l1Index, copy | COPIED); // a failure leaves the copy counted: a leak at most
        l2Cache.put(copy, new AtomicLongArray(entries));
        l1.set(l1Index, copy | COPIED);
        refcounts.adjust(l2 >>> clusterBits, -1);
        return copy;
    }

    /**
     * Writes L1 entry {@code l1Index} as {@code entry}, in the slice of the table around it that
     * the file's request alignment asks for, the others from memory (entries past the table's end,
     * in its last cluster, as zeroes, as QEMU writes them). Caller holds the refcount lock.
     */
    private void writeL1Entry(int l1Index, long entry) throws IOException {
        int align = Math.min(clusterSize, Math.max(8, Qcow2Refcounts.requestAlignment(file)));
        long from = l1Index * 8L & -align;
        long to = (l1Index * 8L + 8 + align - 1) & -align;
        ByteBuffer buf = ByteBuffer.allocate((int) (to - from));
        for (long j = from >> 3; j < to >> 3; j++) {
            long v = j == l1Index ? entry : j < l1.length() ? l1.get((int) j) : 0;
            buf.putLong((int) ((j << 3) - from), v);
        }
        file.write(header.l1TableOffset + from, buf.clear());
    }

    /** Takes a run of up to {@code max} clusters that follow each other on the host (at least one). */
    private Qcow2Refcounts.Run allocateRun(int max) throws IOException {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            return refcounts.allocateRun(max);
        } finally {
            meta.unlock();
        }
    }

    /**
     * Releases a run whose write failed before any L2 entry pointed to it; a failure to release
     * it is added to {@code cause} (the run then leaks, as after a crash).
     */
    private void giveBack(Qcow2Refcounts.Run run, Throwable cause) {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            refcounts.free(run.offset(), (long) run.clusters() << clusterBits);
        } catch (IOException | RuntimeException e) {
            cause.addSuppressed(e);
        } finally {
            meta.unlock();
        }
    }

    /** Releases the host storage of an entry that was replaced, except {@code kept}. */
    private void releaseOld(long e, long kept) throws IOException {
        releaseOld(new long[] {e}, 1, kept);
    }

    /** Releases the host storage of the first {@code n} entries of {@code old}, which were replaced by new clusters. */
    private void releaseOld(long[] old, int n) throws IOException {
        releaseOld(old, n, -1);
    }

    /**
     * Releases the host storage of entries that were replaced, except {@code kept}, under one
     * refcount lock, writing the refcount blocks once.
     */
    private void releaseOld(long[] old, int n, long kept) throws IOException {
        if (!anyHoldsStorage(old, n)) {
            return;
        }
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            try {
                for (int i = 0; i < n; i++) {
                    long e = old[i];
                    if (!holdsStorage(e)) {
                        continue;
                    }
                    Kind kind = kind(e);
                    if (kind == Kind.COMPRESSED) {
                        long coff = e & coffsetMask;
                        long sectors = ((e >>> csizeShift) & csizeMask) + 1;
                        refcounts.unref(coff & ~511L, sectors * 512);
                    } else {
                        long host = e & OFFSET_MASK;
                        if (host != kept) {
                            if (refcounts.get(host >>> clusterBits) == 1 && metadataOverlap(host, clusterSize) == null) {
                                // Nothing points here any more and nobody can take it before the free below;
                                // a damaged entry that pointed into metadata must not punch it out.
                                file.discard(host, clusterSize);
                            }
                            refcounts.unref(host, clusterSize);
                        }
                    }
                }
            } finally {
                refcounts.writeBack();
            }
        } finally {
            meta.unlock();
        }
    }

    private byte[] decompress(long idx, long e) throws IOException {
        long coff = e & coffsetMask;
        long sectors = ((e >>> csizeShift) & csizeMask) + 1;
        int length = (int) (sectors * 512 - (coff & 511));
        byte[] in = new byte[length];
        DebugEvents.fire(file, BlkdebugEvent.READ_COMPRESSED);
        file.read(coff, ByteBuffer.wrap(in));
        byte[] out = new byte[clusterSize];
        Inflater inflater = new Inflater(true); // raw deflate, as QEMU writes it
        try {
            inflater.setInput(in);
            int got = 0;
            while (got < clusterSize) {
                int n = inflater.inflate(out, got, clusterSize - got);
                if (n == 0 && (inflater.finished() || inflater.needsInput() || inflater.needsDictionary())) {
                    break;
                }
                got += n;
            }
            if (got != clusterSize) {
                throw new ImageException(name, "compressed cluster at guest offset " + (idx << clusterBits)
                        + " decompresses to " + got + " bytes instead of " + clusterSize + " (image is corrupt)");
            }
            return out;
        } catch (DataFormatException ex) {
            throw new ImageException(name, "compressed cluster at guest offset " + (idx << clusterBits)
                    + " is damaged: " + ex.getMessage());
        } finally {
            inflater.end();
        }
    }

    private void readBacking(long offset, ByteBuffer dst) throws IOException {
        BlockNode b = backing;
        if (b == null) {
            fillZeroes(dst, dst.remaining());
            return;
        }
        long backingSize = b.size();
        if (offset < backingSize) {
            ByteBuffer part = dst.slice();
            part.limit((int) Math.min(part.remaining(), backingSize - offset));
            b.read(offset, part);
            dst.position(dst.position() + part.limit());
        }
        fillZeroes(dst, dst.remaining()); // the overlay is larger than its backing file
    }

    /** Writes the header and its extensions, and flushes. Caller holds the refcount lock. */
    void writeHeader() throws IOException {
        ByteBuffer encoded = header.encode(name);
        file.write(0, encoded);
        file.flush();
    }

    /** Flushes the file beneath (for {@link Qcow2Bitmaps}' write ordering). */
    void flushFile() throws IOException {
        file.flush();
    }

    private void checkOpen() throws IOException {
        if (closed) {
            throw new ImageException(name, "is closed");
        }
        if (unusable) {
            throw new BlockIoException(Errno.ENOMEDIUM, Errno.ENOMEDIUM.message());
        }
    }

    void checkOpenForBitmaps() throws IOException {
        checkOpen();
    }

    private void checkRequest(long offset, long length, boolean write) throws IOException {
        checkOpen();
        if (write && readOnly) {
            throw new ImageException(Errno.EPERM, name, "is open read-only");
        }
        if (offset < 0 || length < 0 || offset + length > header.size) {
            throw new ImageException(Errno.EINVAL, name, "request [" + offset + ", +" + length
                    + ") is past the end of the " + header.size + "-byte image");
        }
    }

    private static java.util.concurrent.locks.Condition[] conditions(ReentrantLock[] locks) {
        java.util.concurrent.locks.Condition[] c = new java.util.concurrent.locks.Condition[locks.length];
        for (int i = 0; i < locks.length; i++) {
            c[i] = locks[i].newCondition();
        }
        return c;
    }

    private static ReentrantLock[] newLocks(int n) {
        ReentrantLock[] locks = new ReentrantLock[n];
        for (int i = 0; i < n; i++) {
            locks[i] = new ReentrantLock();
        }
        return locks;
    }

    private static ByteBuffer slice(ByteBuffer buf, int n) {
        ByteBuffer s = buf.slice(buf.position(), n);
        buf.position(buf.position() + n);
        return s;
    }

    private static void fillZeroes(ByteBuffer dst, int n) {
        int end = dst.position() + n;
        ByteBuffer zero = FileNode.ZEROES.duplicate();
        while (dst.position() < end) {
            zero.clear().limit(Math.min(zero.capacity(), end - dst.position()));
            dst.put(zero);
        }
    }

    @Override
    public String toString() {
        return "qcow2:" + name;
    }
}
