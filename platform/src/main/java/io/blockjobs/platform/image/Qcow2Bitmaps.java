package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * qcow2's bitmaps extension ({@code docs/interop/qcow2.txt}, "Bitmaps extension"), as QEMU 7.2's
 * {@code block/qcow2-bitmap.c} reads and writes it, with its checks and its messages.
 *
 * <p>On disk: the header extension gives the number of bitmaps and the bitmap directory's offset
 * and size; autoclear bit 0 says the extension is valid (a program that does not know it clears
 * the bit when it writes the image, and then every bitmap is lost). Each directory entry names a
 * bitmap table, whose entries point to clusters of bitmap data (0: all zeroes; bit 0 with no
 * offset: all ones); bit {@code i} of data byte {@code j} is granule {@code 8j + i}.
 *
 * <p>In use: as QEMU at open, a read-write open marks every consistent bitmap in use on disk
 * before the image takes a write, and {@link #load} then gives out their bits (once); a writer
 * that never loads or stores them leaves them inconsistent, never stale. {@link #store} clears the
 * flag of what it stores.
 *
 * <p>Crash safety, as QEMU: new bitmap data, tables and the directory are written and flushed
 * before the header points to them, and what they replace is freed after the header is durable,
 * so a crash leaks clusters at most. A directory is only rewritten in place (to mark bitmaps in
 * use) with autoclear bit 0 cleared around the write, so that a torn directory is never trusted.
 *
 * <p>Errors: a damaged extension, directory or bitmap table fails the image's open with an
 * {@link ImageException} carrying QEMU's message (QEMU's open fails with the same words);
 * {@link #load}, {@link #store} and {@link #remove} fail with a {@link BlockIoException} whose
 * message is QEMU's, word for word; {@link #checkCanStore} with a {@link CommandException}.
 *
 * <p>Concurrency: one operation at a time. The caller's {@link Loader}, {@link RunSink} and
 * {@link RunSource} are called without the image's metadata lock held, but while they run this
 * class may take it; they must not wait for a guest write to this image to finish.
 */
final class Qcow2Bitmaps implements PersistentBitmaps {

    private static final Logger LOG = LoggerFactory.getLogger(Qcow2Bitmaps.class);

    // qcow2.h
    static final int MAX_BITMAPS = 65535;
    static final long MAX_DIRECTORY_SIZE = 1024L * MAX_BITMAPS;
    // qcow2-bitmap.c
    static final long MAX_TABLE_SIZE = 0x8000000;
    static final long MAX_PHYS_SIZE = 0x20000000; // bytes of bitmap data
    static final int MAX_GRANULARITY_BITS = 31;
    static final int MIN_GRANULARITY_BITS = 9;
    static final int MAX_NAME_SIZE = 1023;
    static final int FLAG_IN_USE = 1;
    static final int FLAG_AUTO = 1 << 1;
    static final int RESERVED_FLAGS = 0xfffffffc; // QEMU also refuses bit 2, extra_data_compatible
    static final long TABLE_ENTRY_RESERVED_MASK = 0xff000000000001feL;
    static final long TABLE_ENTRY_OFFSET_MASK = 0x00fffffffffffe00L;
    static final long TABLE_ENTRY_ALL_ONES = 1;
    static final int TYPE_DIRTY_TRACKING = 1;
    private static final int ENTRY_HEADER_SIZE = 24;

    /** One bitmap directory entry, in memory. */
    private static final class Entry {
        final byte[] rawName; // as stored (QEMU's strlen of the name)
        final String name;
        long tableOffset;
        int tableSize; // number of 64-bit entries
        int flags;
        int granularityBits;
        ToStore source; // while a store writes it

        Entry(byte[] rawName, long tableOffset, int tableSize, int flags, int granularityBits) {
            this.rawName = rawName;
            this.name = new String(rawName, StandardCharsets.UTF_8);
            this.tableOffset = tableOffset;
            this.tableSize = tableSize;
            this.flags = flags;
            this.granularityBits = granularityBits;
        }

        Entry copy() {
            return new Entry(rawName, tableOffset, tableSize, flags, granularityBits);
        }

        boolean inUse() {
            return (flags & FLAG_IN_USE) != 0;
        }

        int size() {
            return entrySize(rawName.length, 0);
        }
    }

    /** The directory found at open. */
    record Directory(List<Entry> entries, boolean invalidated) {
        static final Directory NONE = new Directory(List.of(), false);
    }

    private final Qcow2Node node;
    private final BlockNode file;
    private final Qcow2Header header;
    private final Qcow2Refcounts refcounts;
    private final String name;
    private final int clusterBits;
    private final long clusterSize;
    private final ReentrantLock lock = new ReentrantLock();

    private List<Entry> entries; // the directory as on disk
    private volatile boolean invalidated; // an extension found invalidated, dropped at the next header write
    // Names checkCanStore accepted that are not stored yet (never one of entries), and their directory bytes:
    // counted as QEMU counts the persistent bitmaps it holds in memory.
    private final Set<String> pending = new HashSet<>();
    private long pendingDirectorySize;
    // Bitmaps consistent when the image was opened whose bits load has not given out yet. A
    // read-write open marks them in use on disk at once, as QEMU does at open, so that a writer
    // that never loads them leaves them inconsistent, never stale.
    private final Set<String> loadable = new HashSet<>();

    Qcow2Bitmaps(Qcow2Node node, BlockNode file, Qcow2Header header, Qcow2Refcounts refcounts, Directory directory) {
        this.node = node;
        this.file = file;
        this.header = header;
        this.refcounts = refcounts;
        this.name = file.filename();
        this.clusterBits = header.clusterBits;
        this.clusterSize = 1L << clusterBits;
        this.entries = new ArrayList<>(directory.entries());
        this.invalidated = directory.invalidated();
        for (Entry e : entries) {
            if (!e.inUse()) {
                loadable.add(e.name);
            }
        }
    }

    // ---- open ---------------------------------------------------------------------------------

    /**
     * Reads and checks the bitmaps extension and directory, as QEMU's {@code qcow2_read_extensions}
     * and {@code bitmap_list_load} at open. An extension that a program lacking bitmap support
     * invalidated (autoclear bit 0 clear, or any in a version 2 image) is ignored and taken out
     * of {@code h}, so that the next header write drops it.
     *
     * @throws ImageException with QEMU's message if the extension or the directory is damaged
     */
    static Directory readDirectory(BlockNode file, Qcow2Header h) throws IOException {
        Qcow2Header.BitmapsExtension ext = h.bitmaps;
        if (ext == null) {
            return Directory.NONE;
        }
        String name = file.filename();
        if (h.version < 3 || (h.autoclearFeatures & Qcow2Header.AUTOCLEAR_BITMAPS) == 0) {
            LOG.warn("{}: {}. Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.", name,
                    h.version < 3
                            ? "This qcow2 v2 image contains bitmaps, but they may have been modified by a program "
                                    + "without persistent bitmap support; so now they must all be considered inconsistent"
                            : "a program lacking bitmap support modified this file, so all bitmaps are now "
                                    + "considered inconsistent");
            h.bitmaps = null;
            return new Directory(List.of(), true);
        }
        if (ext.reserved() != 0) {
            throw new ImageException(name, "bitmaps_ext: Reserved field is not zero");
        }
        long count = Integer.toUnsignedLong(ext.count());
        if (count > MAX_BITMAPS) {
            throw new ImageException(name, "bitmaps_ext: Image has " + count
                    + " bitmaps, exceeding the QEMU supported maximum of " + MAX_BITMAPS);
        }
        if (count == 0) {
            throw new ImageException(name, "found bitmaps extension with zero bitmaps");
        }
        if ((ext.directoryOffset() & ((1L << h.clusterBits) - 1)) != 0) {
            throw new ImageException(name, "bitmaps_ext: invalid bitmap directory offset");
        }
        if (Long.compareUnsigned(ext.directorySize(), MAX_DIRECTORY_SIZE) > 0) {
            throw new ImageException(name, "bitmaps_ext: bitmap directory size (" + Long.toUnsignedString(ext.directorySize())
                    + ") exceeds the maximum supported size (" + MAX_DIRECTORY_SIZE + ")");
        }
        List<Entry> entries;
        try {
            entries = loadList(file, h, (int) count, ext.directoryOffset(), ext.directorySize());
        } catch (Refused e) {
            throw new ImageException(name, e.getMessage());
        }
        // QEMU reads the tables of consistent bitmaps at open too (load_bitmap, before it marks them
        // in use): a damaged table refuses the image rather than being marked in use unread.
        long length = bitmapLength(h);
        for (Entry e : entries) {
            if (e.inUse()) {
                continue;
            }
            long[] table;
            try {
                table = loadTable(file, h.clusterBits, e);
            } catch (BlockIoException ex) {
                throw new ImageException(name, failure("Could not read bitmap_table table from image for bitmap '"
                        + e.name + "'", ex).getMessage(), ex);
            }
            try {
                checkTableSize(table, (length + (1L << e.granularityBits) - 1) >>> e.granularityBits, h.clusterBits);
            } catch (BlockIoException ex) {
                throw new ImageException(name, failure("Could not read bitmap '" + e.name + "' from image", ex)
                        .getMessage(), ex);
            }
        }
        return new Directory(entries, false);
    }

    /** A directory or entry that QEMU refuses, with QEMU's message. */
    private static final class Refused extends Exception {
        private static final long serialVersionUID = 1L;

        Refused(String message) {
            super(message, null, false, false);
        }
    }

    /** QEMU's {@code bitmap_list_load}. */
    private static List<Entry> loadList(BlockNode file, Qcow2Header h, int count, long offset, long size)
            throws IOException, Refused {
        if (size == 0) {
            throw new Refused("Requested bitmap directory size is zero");
        }
        if (size > MAX_DIRECTORY_SIZE) {
            throw new Refused("Requested bitmap directory size is too big");
        }
        byte[] dir = new byte[(int) size];
        try {
            readPadded(file, offset, dir);
        } catch (BlockIoException e) {
            throw new Refused("Failed to read bitmap directory: " + Strerror.of(e.errno().code()));
        }
        ByteBuffer b = ByteBuffer.wrap(dir);
        List<Entry> list = new ArrayList<>();
        long length = bitmapLength(h);
        int pos = 0;
        while (pos < size) {
            if (pos + ENTRY_HEADER_SIZE > size) {
                throw new Refused("Broken bitmap directory");
            }
            if (list.size() + 1 > count) {
                throw new Refused("More bitmaps found than specified in header extension");
            }
            long tableOffset = b.getLong(pos);
            int tableSize = b.getInt(pos + 8);
            int flags = b.getInt(pos + 12);
            int type = b.get(pos + 16) & 0xff;
            int granularityBits = b.get(pos + 17) & 0xff;
            int nameSize = b.getShort(pos + 18) & 0xffff;
            long extraDataSize = Integer.toUnsignedLong(b.getInt(pos + 20));
            long entrySize = (ENTRY_HEADER_SIZE + nameSize + extraDataSize + 7) & ~7L;
            if (pos + entrySize > size) {
                throw new Refused("Broken bitmap directory");
            }
            if (extraDataSize != 0) {
                throw new Refused("Bitmap extra data is not supported");
            }
            byte[] rawName = Arrays.copyOfRange(dir, pos + ENTRY_HEADER_SIZE, pos + ENTRY_HEADER_SIZE + nameSize);
            if (!entryValid(tableOffset, tableSize, flags, type, granularityBits, nameSize, h.clusterBits, length)) {
                throw new Refused("Bitmap '" + new String(rawName, StandardCharsets.UTF_8)
                        + "' doesn't satisfy the constraints");
            }
            list.add(new Entry(nulTerminated(rawName), tableOffset, tableSize, flags, granularityBits));
            pos += (int) entrySize;
        }
        if (list.size() != count) {
            throw new Refused("Less bitmaps found than specified in header extension");
        }
        return list;
    }

    /** The name as QEMU copies it ({@code g_strndup}: up to the first NUL byte). */
    private static byte[] nulTerminated(byte[] raw) {
        for (int i = 0; i < raw.length; i++) {
            if (raw[i] == 0) {
                return Arrays.copyOf(raw, i);
            }
        }
        return raw;
    }

    /** QEMU's {@code check_dir_entry}. */
    private static boolean entryValid(long tableOffset, int tableSize, int flags, int type, int granularityBits,
            int nameSize, int clusterBits, long length) {
        long cluster = 1L << clusterBits;
        long size = Integer.toUnsignedLong(tableSize);
        if (size == 0 || tableOffset == 0 || (tableOffset & (cluster - 1)) != 0 || size > MAX_TABLE_SIZE
                || granularityBits > MAX_GRANULARITY_BITS || granularityBits < MIN_GRANULARITY_BITS
                || (flags & RESERVED_FLAGS) != 0 || nameSize > MAX_NAME_SIZE || type != TYPE_DIRTY_TRACKING) {
            return false;
        }
        long physBytes = size * cluster;
        if (physBytes > MAX_PHYS_SIZE) {
            return false;
        }
        // A consistent bitmap's table must cover the disk (an inconsistent one may be stale after a resize).
        return (flags & FLAG_IN_USE) != 0 || Long.compareUnsigned(length, (physBytes * 8) << granularityBits) <= 0;
    }

    /** The disk length QEMU sizes bitmaps by ({@code bdrv_getlength}: whole sectors). */
    private static long bitmapLength(Qcow2Header h) {
        return h.size / 512 * 512;
    }

    private static int entrySize(long nameSize, long extraDataSize) {
        return (int) ((ENTRY_HEADER_SIZE + nameSize + extraDataSize + 7) & ~7L);
    }

    /** Reads {@code dst.length} bytes at {@code offset}; what lies past the end of the file reads as zeroes. */
    private static void readPadded(BlockNode file, long offset, byte[] dst) throws IOException {
        if (offset < 0 || offset + dst.length < 0) {
            throw new BlockIoException(Errno.EINVAL, "offset " + offset + " is invalid");
        }
        long fileSize = file.size();
        int n = (int) Math.max(0, Math.min(dst.length, fileSize - offset));
        Arrays.fill(dst, n, dst.length, (byte) 0);
        if (n > 0) {
            file.read(offset, ByteBuffer.wrap(dst, 0, n));
        }
    }

    /** The directory as on disk, for the image's format-specific information. */
    List<Qcow2Node.BitmapInfo> info() {
        lock.lock();
        try {
            return entries.stream().map(e -> new Qcow2Node.BitmapInfo(e.name, 1L << e.granularityBits,
                    (e.flags & FLAG_IN_USE) != 0, (e.flags & FLAG_AUTO) != 0)).toList();
        } finally {
            lock.unlock();
        }
    }

    // ---- PersistentBitmaps ----------------------------------------------------------------------

    /**
     * Announces every bitmap in directory order; reads the bits of those that were consistent
     * when the image was opened, once each. A read-write image marked them in use at open
     * ({@link #openedReadWrite}), so they are in use on disk when this returns.
     */
    @Override
    public void load(Loader loader) throws IOException {
        lock.lock();
        try {
            node.checkOpenForBitmaps();
            long length = bitmapLength(header);
            for (Entry e : entries) {
                boolean consistent = loadable.contains(e.name);
                RunSink sink = loader.bitmap(e.name, e.granularityBits, !consistent, (e.flags & FLAG_AUTO) != 0);
                if (!consistent) {
                    continue; // its data is unusable: not read
                }
                long[] table;
                try {
                    table = loadTable(e);
                } catch (BlockIoException ex) {
                    throw failure("Could not read bitmap_table table from image for bitmap '" + e.name + "'", ex);
                }
                try {
                    loadData(e, table, length, sink);
                } catch (BlockIoException ex) {
                    throw failure("Could not read bitmap '" + e.name + "' from image", ex);
                }
            }
            for (Entry e : entries) {
                loadable.remove(e.name); // given out: the loader keeps them now
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * The image was opened, or reopened, read-write: marks every bitmap that is consistent on
     * disk in use, rewriting the directory in place, as QEMU's {@code qcow2_load_dirty_bitmaps}
     * at open and {@code qcow2_reopen_bitmaps_rw} do.
     */
    void openedReadWrite() throws IOException {
        lock.lock();
        try {
            List<Entry> marked = new ArrayList<>();
            for (Entry e : entries) {
                if (!e.inUse()) {
                    marked.add(e);
                }
            }
            if (!marked.isEmpty()) {
                markInUse(marked, "Can't update bitmap directory");
            }
        } finally {
            lock.unlock();
        }
    }

    /** Sets in-use on these entries, rewriting the directory in place. */
    private void markInUse(List<Entry> marked, String failure) throws IOException {
        List<Entry> updated = new ArrayList<>();
        for (Entry e : entries) {
            Entry c = e.copy();
            if (marked.contains(e)) {
                c.flags |= FLAG_IN_USE;
            }
            updated.add(c);
        }
        try {
            updateInPlace(updated);
        } catch (BlockIoException ex) {
            throw failure(failure, ex);
        }
        entries = updated;
    }

    @Override
    public void checkCanStore(String bitmap, int granularityBits) {
        lock.lock();
        try {
            if (find(entries, bitmap) != null) {
                throw new CommandException("Bitmap already exists: " + bitmap);
            }
            String problem = header.version < 3 ? "Cannot store dirty bitmaps in qcow2 v2 files"
                    : constraintProblem(bitmap, granularityBits);
            if (problem == null) {
                boolean again = pending.contains(bitmap);
                long count = entries.size() + pending.size() + (again ? 0 : 1);
                long directorySize = (header.bitmaps == null ? 0 : header.bitmaps.directorySize()) + pendingDirectorySize
                        + (again ? 0 : entrySize(utf8Length(bitmap), 0));
                if (count > MAX_BITMAPS) {
                    problem = "Maximum number of persistent bitmaps is already reached";
                } else if (directorySize > MAX_DIRECTORY_SIZE) {
                    problem = "Not enough space in the bitmap directory";
                }
            }
            if (problem != null) {
                throw new CommandException("Can't make bitmap '" + bitmap + "' persistent in '" + node.nodeName()
                        + "': " + problem);
            }
            if (pending.add(bitmap)) {
                pendingDirectorySize += entrySize(utf8Length(bitmap), 0);
            }
        } finally {
            lock.unlock();
        }
    }

    /** QEMU's {@code check_constraints_on_bitmap}: its message, or null if the bitmap fits. */
    private String constraintProblem(String bitmap, int granularityBits) {
        if (granularityBits > MAX_GRANULARITY_BITS) {
            return "Granularity exceeds maximum (" + (1L << MAX_GRANULARITY_BITS) + " bytes)";
        }
        if (granularityBits < MIN_GRANULARITY_BITS) {
            return "Granularity is under minimum (" + (1L << MIN_GRANULARITY_BITS) + " bytes)";
        }
        long bitmapBytes = (granules(granularityBits) + 7) / 8;
        if (bitmapBytes > MAX_PHYS_SIZE || bitmapBytes > MAX_TABLE_SIZE * clusterSize) {
            return "Too much space will be occupied by the bitmap. Use larger granularity";
        }
        if (utf8Length(bitmap) > MAX_NAME_SIZE) {
            return "Name length exceeds maximum (" + MAX_NAME_SIZE + " characters)";
        }
        return null;
    }

    @Override
    public void remove(String bitmap) throws IOException {
        lock.lock();
        try {
            node.checkOpenForBitmaps();
            forget(bitmap);
            loadable.remove(bitmap);
            Entry victim = find(entries, bitmap);
            if (victim == null) {
                return; // absence is not an error, as in QEMU
            }
            if (node.isReadOnly()) {
                throw new BlockIoException(Errno.EPERM, "No write access");
            }
            List<Entry> rest = new ArrayList<>(entries);
            rest.remove(victim);
            try {
                updateHeaderAndDirectory(rest);
            } catch (BlockIoException ex) {
                throw failure("Failed to update bitmap extension", ex);
            }
            entries = rest;
            freeBitmapClusters(victim.tableOffset, victim.tableSize);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void store(List<ToStore> bitmaps) throws IOException {
        lock.lock();
        try {
            node.checkOpenForBitmaps();
            if (bitmaps.isEmpty()) {
                return; // nothing to write: the image is not touched
            }
            if (node.isReadOnly()) {
                throw new BlockIoException(Errno.EPERM, "No write access");
            }
            if (header.version < 3) { // checkCanStore refuses them; without autoclear bits they would be lost
                throw new BlockIoException(Errno.ENOTSUP, "Cannot store dirty bitmaps in qcow2 v2 files");
            }
            List<Entry> updated = new ArrayList<>();
            for (Entry e : entries) {
                updated.add(e.copy());
            }
            List<long[]> dropTables = new ArrayList<>(); // {offset, size} of replaced tables
            long count = updated.size();
            long directorySize = header.bitmaps == null ? 0 : header.bitmaps.directorySize();
            for (ToStore b : bitmaps) {
                String problem = constraintProblem(b.name(), b.granularityBits());
                if (problem != null) {
                    throw new BlockIoException(Errno.EINVAL, "Bitmap '" + b.name()
                            + "' doesn't satisfy the constraints: " + problem);
                }
                Entry e = find(updated, b.name());
                if (e == null) {
                    if (++count > MAX_BITMAPS) {
                        throw new BlockIoException(Errno.EINVAL, "Too many persistent bitmaps");
                    }
                    byte[] raw = b.name().getBytes(StandardCharsets.UTF_8);
                    directorySize += entrySize(raw.length, 0);
                    if (directorySize > MAX_DIRECTORY_SIZE) {
                        throw new BlockIoException(Errno.EINVAL, "Bitmap directory is too large");
                    }
                    e = new Entry(raw, 0, 0, 0, 0);
                    updated.add(e);
                } else {
                    // Only a bitmap marked in use may be replaced: not one stored already, nor one listed twice.
                    if (!e.inUse()) {
                        throw new BlockIoException(Errno.EINVAL, "Bitmap '" + b.name() + "' already exists in the image");
                    }
                    dropTables.add(new long[] {e.tableOffset, e.tableSize});
                    e.tableOffset = 0;
                    e.tableSize = 0;
                }
                e.flags = b.auto() ? FLAG_AUTO : 0;
                e.granularityBits = b.granularityBits();
                e.source = b;
            }
            try {
                for (Entry e : updated) {
                    if (e.source != null) {
                        storeBitmap(e);
                    }
                }
                node.flushFile(); // data and tables durable before a directory points to them
                try {
                    updateHeaderAndDirectory(updated);
                } catch (BlockIoException ex) {
                    throw failure("Failed to update bitmap extension", ex);
                }
            } catch (IOException | RuntimeException ex) {
                for (Entry e : updated) {
                    if (e.source != null && e.tableOffset != 0) {
                        freeBitmapClusters(e.tableOffset, e.tableSize);
                    }
                }
                throw ex;
            }
            for (Entry e : updated) {
                e.source = null;
            }
            entries = updated;
            for (ToStore b : bitmaps) {
                forget(b.name());
                loadable.remove(b.name());
            }
            // The directory on disk no longer names the old tables: free them.
            for (long[] t : dropTables) {
                freeBitmapClusters(t[0], (int) t[1]);
            }
        } finally {
            lock.unlock();
        }
    }

    // ---- data -----------------------------------------------------------------------------------

    /** Bits of the disk at this granularity: QEMU's bitmap size. */
    private long granules(int granularityBits) {
        long length = bitmapLength(header);
        return (length + (1L << granularityBits) - 1) >>> granularityBits;
    }

    /** Granules one cluster of bitmap data holds. */
    private long granulesPerCluster() {
        return clusterSize * 8;
    }

    /**
     * Clusters of bitmap data for this many granules: QEMU's
     * {@code size_to_clusters(bdrv_dirty_bitmap_serialization_size(...))}, whole 64-bit words.
     */
    private long tableSizeFor(long granules) {
        return tableSizeFor(granules, clusterBits);
    }

    private static long tableSizeFor(long granules, int clusterBits) {
        long bytes = (granules + 63) / 64 * 8;
        return (bytes + (1L << clusterBits) - 1) >>> clusterBits;
    }

    /** QEMU's {@code bitmap_table_load}: the table, each entry checked. */
    private long[] loadTable(Entry e) throws IOException {
        return loadTable(file, clusterBits, e);
    }

    private static long[] loadTable(BlockNode file, int clusterBits, Entry e) throws IOException {
        byte[] raw = new byte[Math.multiplyExact(e.tableSize, 8)];
        readPadded(file, e.tableOffset, raw);
        long[] table = new long[e.tableSize];
        ByteBuffer.wrap(raw).asLongBuffer().get(table);
        for (long t : table) {
            if (!tableEntryValid(t, 1L << clusterBits)) {
                throw new BlockIoException(Errno.EINVAL, "invalid bitmap table entry");
            }
        }
        return table;
    }

    /** QEMU's {@code check_table_entry}. */
    private boolean tableEntryValid(long entry) {
        return tableEntryValid(entry, clusterSize);
    }

    private static boolean tableEntryValid(long entry, long clusterSize) {
        if ((entry & TABLE_ENTRY_RESERVED_MASK) != 0) {
            return false;
        }
        long offset = entry & TABLE_ENTRY_OFFSET_MASK;
        return offset == 0 || (entry & TABLE_ENTRY_ALL_ONES) == 0 && (offset & (clusterSize - 1)) == 0;
    }

    /** QEMU's {@code load_bitmap_data}: the set granules, run by run, one cluster in memory. */
    private void loadData(Entry e, long[] table, long length, RunSink sink) throws IOException {
        long granules = (length + (1L << e.granularityBits) - 1) >>> e.granularityBits;
        checkTableSize(table, granules, clusterBits);
        Runs runs = new Runs(sink);
        long limit = granulesPerCluster();
        byte[] buf = new byte[(int) clusterSize];
        ByteBuffer words = ByteBuffer.wrap(buf).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < table.length; i++) {
            long first = i * limit;
            long count = Math.min(granules - first, limit);
            long dataOffset = table[i] & TABLE_ENTRY_OFFSET_MASK;
            if (dataOffset == 0) {
                if ((table[i] & TABLE_ENTRY_ALL_ONES) != 0) {
                    runs.add(first, first + count);
                }
                continue;
            }
            readPadded(file, dataOffset, buf);
            scan(words, count, first, runs);
        }
        runs.finish();
    }

    /** {@code load_bitmap_data}'s check: the table has exactly the entries the disk needs. */
    private static void checkTableSize(long[] table, long granules, int clusterBits) throws BlockIoException {
        long tableSize = tableSizeFor(granules, clusterBits);
        if (tableSize != table.length || tableSize > MAX_TABLE_SIZE) {
            throw new BlockIoException(Errno.EINVAL, "bitmap table size " + table.length + " does not fit the disk");
        }
    }

    /** Finds the runs of set bits among the first {@code count} bits of a data cluster. */
    private static void scan(ByteBuffer words, long count, long base, Runs runs) throws IOException {
        int n = (int) ((count + 63) / 64);
        long runStart = -1;
        for (int w = 0; w < n; w++) {
            long word = words.getLong(w * 8);
            long at = base + w * 64L;
            if (runStart < 0 ? word == 0 : word == -1L) {
                continue;
            }
            int bit = 0;
            while (bit < 64) {
                if (runStart < 0) {
                    long rest = word >>> bit;
                    if (rest == 0) {
                        break;
                    }
                    bit += Long.numberOfTrailingZeros(rest);
                    runStart = at + bit;
                } else {
                    long rest = ~word >>> bit;
                    if (rest == 0) {
                        break;
                    }
                    bit += Long.numberOfTrailingZeros(rest);
                    runs.add(runStart, Math.min(at + bit, base + count));
                    runStart = -1;
                }
            }
        }
        if (runStart >= 0) {
            runs.add(runStart, base + count);
        }
    }

    /** Joins adjacent runs (across clusters) and drops those past the bitmap's end. */
    private static final class Runs {
        private final RunSink sink;
        private long start = -1;
        private long end;

        Runs(RunSink sink) {
            this.sink = sink;
        }

        void add(long from, long to) throws IOException {
            if (from >= to) {
                return;
            }
            if (start >= 0 && from == end) {
                end = to;
                return;
            }
            finish();
            start = from;
            end = to;
        }

        void finish() throws IOException {
            if (start >= 0) {
                sink.run(start, end - start);
                start = -1;
            }
        }
    }

    /**
     * QEMU's {@code store_bitmap}: writes the data clusters that have a set bit (all-zero ones get
     * table entry 0), then the table; sets the entry's table. Nothing is flushed here.
     */
    private void storeBitmap(Entry e) throws IOException {
        ToStore b = e.source;
        long granules = granules(b.granularityBits());
        long tableSize = tableSizeFor(granules);
        if (tableSize > MAX_TABLE_SIZE || tableSize * clusterSize > MAX_PHYS_SIZE) {
            throw new BlockIoException(Errno.EINVAL, "Bitmap '" + b.name() + "' is too big");
        }
        long[] table = new long[(int) tableSize];
        DataWriter data = new DataWriter(b.name(), table, granules);
        try {
            b.bits().forEachRun(0, granules, data);
            data.flushCluster();
        } catch (IOException | RuntimeException ex) {
            clearTable(table);
            throw ex;
        }
        int bytes = (int) tableSize * 8;
        int clusters = (int) ((bytes + clusterSize - 1) >>> clusterBits);
        ByteBuffer raw = ByteBuffer.allocate(clusters * (int) clusterSize);
        raw.asLongBuffer().put(table);
        long tableOffset = 0;
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            tableOffset = allocate(clusters, b.name());
            file.write(tableOffset, raw);
        } catch (BlockIoException ex) {
            if (tableOffset != 0) {
                refcounts.free(tableOffset, bytes);
            }
            clearTable(table);
            throw failure("Failed to write bitmap '" + b.name() + "' to file", ex);
        } finally {
            meta.unlock();
        }
        e.tableOffset = tableOffset;
        e.tableSize = (int) tableSize;
    }

    /** Fills one cluster of bitmap data at a time from the runs, and writes those with a bit set. */
    private final class DataWriter implements RunSink {
        private final String bitmap;
        private final long[] table;
        private final long granules;
        private final byte[] buf = new byte[(int) clusterSize];
        private long current = -1; // the table index buf holds
        private long last; // end of the previous run

        DataWriter(String bitmap, long[] table, long granules) {
            this.bitmap = bitmap;
            this.table = table;
            this.granules = granules;
        }

        @Override
        public void run(long first, long count) throws IOException {
            if (count <= 0 || first < last || first + count > granules) {
                throw new IllegalArgumentException("bitmap '" + bitmap + "': run [" + first + ", +" + count
                        + ") is out of order or past the bitmap's " + granules + " granules");
            }
            last = first + count;
            long limit = granulesPerCluster();
            long pos = first;
            long end = first + count;
            while (pos < end) {
                long index = pos / limit;
                if (index != current) {
                    flushCluster();
                    current = index;
                }
                long clusterEnd = Math.min(end, (index + 1) * limit);
                setBits(buf, pos - index * limit, clusterEnd - index * limit);
                pos = clusterEnd;
            }
        }

        void flushCluster() throws IOException {
            if (current < 0) {
                return;
            }
            Lock meta = refcounts.lock();
            meta.lock();
            try {
                long offset = allocate(1, bitmap);
                table[(int) current] = offset;
                try {
                    file.write(offset, ByteBuffer.wrap(buf));
                } catch (BlockIoException ex) {
                    throw failure("Failed to write bitmap '" + bitmap + "' to file", ex);
                }
            } finally {
                meta.unlock();
            }
            Arrays.fill(buf, (byte) 0);
            current = -1;
        }
    }

    /** Sets bits {@code [from, to)} of {@code buf}: bit {@code i} of byte {@code j} is granule {@code 8j + i}. */
    static void setBits(byte[] buf, long from, long to) {
        long pos = from;
        while (pos < to && (pos & 7) != 0) {
            buf[(int) (pos >>> 3)] |= (byte) (1 << (pos & 7));
            pos++;
        }
        long wholeEnd = to & ~7L;
        if (pos < wholeEnd) {
            Arrays.fill(buf, (int) (pos >>> 3), (int) (wholeEnd >>> 3), (byte) 0xff);
            pos = wholeEnd;
        }
        while (pos < to) {
            buf[(int) (pos >>> 3)] |= (byte) (1 << (pos & 7));
            pos++;
        }
    }

    /** Allocates {@code clusters} contiguous clusters; their refcounts are durable. Caller holds the metadata lock. */
    private long allocate(int clusters, String bitmap) throws IOException {
        try {
            return clusters == 1 ? refcounts.allocateCluster() : refcounts.allocateContiguous(clusters);
        } catch (BlockIoException ex) {
            throw failure("Failed to allocate clusters for bitmap '" + bitmap + "'", ex);
        }
    }

    /** QEMU's {@code clear_bitmap_table}: frees the data clusters a table names (punching them out). */
    private void clearTable(long[] table) throws IOException {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            for (int i = 0; i < table.length; i++) {
                long offset = table[i] & TABLE_ENTRY_OFFSET_MASK;
                if (offset == 0) {
                    continue;
                }
                if (refcounts.get(offset >>> clusterBits) == 1) {
                    file.discard(offset, clusterSize); // QCOW2_DISCARD_ALWAYS
                }
                refcounts.free(offset, clusterSize);
                table[i] = 0;
            }
        } finally {
            meta.unlock();
        }
    }

    /**
     * QEMU's {@code free_bitmap_clusters}: frees a stored bitmap's data clusters and table, once
     * nothing on disk names them. What cannot be read or freed is left allocated (leaked), and the
     * operation still succeeds, as in QEMU.
     */
    private void freeBitmapClusters(long tableOffset, int tableSize) {
        try {
            freeBitmapClustersOrFail(tableOffset, tableSize);
        } catch (IOException ex) {
            LOG.warn("{}: clusters of the bitmap table at offset {} could not be freed and are leaked: {}", name,
                    tableOffset, ex.getMessage());
        }
    }

    private void freeBitmapClustersOrFail(long tableOffset, int tableSize) throws IOException {
        if (tableOffset == 0 || tableSize == 0) {
            return;
        }
        long[] table;
        try {
            byte[] raw = new byte[tableSize * 8];
            readPadded(file, tableOffset, raw);
            table = new long[tableSize];
            ByteBuffer.wrap(raw).asLongBuffer().get(table);
            for (long t : table) {
                if (!tableEntryValid(t)) {
                    LOG.warn("{}: bitmap table at offset {} is damaged; its clusters are left allocated", name, tableOffset);
                    return;
                }
            }
        } catch (BlockIoException ex) {
            LOG.warn("{}: bitmap table at offset {} cannot be read ({}); its clusters are left allocated", name,
                    tableOffset, ex.getMessage());
            return;
        }
        clearTable(table);
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            refcounts.free(tableOffset, tableSize * 8L);
        } finally {
            meta.unlock();
        }
    }

    // ---- directory and header -------------------------------------------------------------------

    /** The directory's bytes, each entry checked as QEMU's {@code bitmap_list_store} does. */
    private byte[] encode(List<Entry> list) throws BlockIoException {
        long size = 0;
        for (Entry e : list) {
            size += e.size();
        }
        if (size == 0 || size > MAX_DIRECTORY_SIZE) {
            throw new BlockIoException(Errno.EINVAL, "bitmap directory of " + size + " bytes");
        }
        ByteBuffer b = ByteBuffer.allocate((int) size);
        long length = bitmapLength(header);
        for (Entry e : list) {
            if (!entryValid(e.tableOffset, e.tableSize, e.flags, TYPE_DIRTY_TRACKING, e.granularityBits,
                    e.rawName.length, clusterBits, length)) {
                throw new BlockIoException(Errno.EINVAL, "bitmap '" + e.name + "' does not satisfy the constraints");
            }
            int start = b.position();
            b.putLong(e.tableOffset).putInt(e.tableSize).putInt(e.flags)
                    .put((byte) TYPE_DIRTY_TRACKING).put((byte) e.granularityBits)
                    .putShort((short) e.rawName.length).putInt(0).put(e.rawName);
            b.position(start + e.size());
        }
        return b.array();
    }

    /**
     * QEMU's {@code update_ext_header_and_dir}: writes the list as a new directory (durable), points
     * the header at it (durable), then frees the old directory. An empty list drops the extension
     * and autoclear bit 0.
     */
    private void updateHeaderAndDirectory(List<Entry> list) throws IOException {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            Qcow2Header.BitmapsExtension old = header.bitmaps;
            long oldAutoclear = header.autoclearFeatures;
            long newOffset = 0;
            long newSize = 0;
            try {
                if (!list.isEmpty()) {
                    if (list.size() > MAX_BITMAPS) {
                        throw new BlockIoException(Errno.EINVAL, "too many bitmaps");
                    }
                    byte[] dir = encode(list);
                    newSize = dir.length;
                    int clusters = (int) ((newSize + clusterSize - 1) >>> clusterBits);
                    newOffset = clusters == 1 ? refcounts.allocateCluster() : refcounts.allocateContiguous(clusters);
                    ByteBuffer padded = ByteBuffer.allocate(clusters * (int) clusterSize).put(dir).clear();
                    file.write(newOffset, padded);
                    file.flush(); // the directory is durable before the header points to it
                    header.bitmaps = new Qcow2Header.BitmapsExtension(list.size(), 0, newSize, newOffset);
                    header.autoclearFeatures |= Qcow2Header.AUTOCLEAR_BITMAPS;
                } else {
                    header.bitmaps = null;
                    header.autoclearFeatures &= ~Qcow2Header.AUTOCLEAR_BITMAPS;
                }
                node.writeHeader(); // flushed
                invalidated = false;
            } catch (IOException | RuntimeException ex) {
                header.bitmaps = old;
                header.autoclearFeatures = oldAutoclear;
                if (newOffset != 0) {
                    refcounts.free(newOffset, newSize);
                }
                throw ex;
            }
            if (old != null && old.directorySize() > 0) {
                refcounts.free(old.directoryOffset(), old.directorySize());
            }
        } finally {
            meta.unlock();
        }
    }

    /**
     * QEMU's {@code update_ext_header_and_dir_in_place}: rewrites the directory where it is (the
     * same entries, flags changed) with autoclear bit 0 clear on disk meanwhile.
     */
    private void updateInPlace(List<Entry> list) throws IOException {
        Lock meta = refcounts.lock();
        meta.lock();
        try {
            Qcow2Header.BitmapsExtension ext = header.bitmaps;
            if ((header.autoclearFeatures & Qcow2Header.AUTOCLEAR_BITMAPS) == 0 || ext == null || list.isEmpty()
                    || list.size() != ext.count()) {
                throw new BlockIoException(Errno.EINVAL, "bitmap directory does not match the header");
            }
            byte[] dir = encode(list);
            if (dir.length != ext.directorySize() || ext.directoryOffset() == 0) {
                throw new BlockIoException(Errno.EINVAL, "bitmap directory changed size");
            }
            header.autoclearFeatures &= ~Qcow2Header.AUTOCLEAR_BITMAPS;
            node.writeHeader(); // a torn directory write is never trusted
            file.write(ext.directoryOffset(), ByteBuffer.wrap(dir));
            file.flush();
            header.autoclearFeatures |= Qcow2Header.AUTOCLEAR_BITMAPS;
            node.writeHeader();
        } finally {
            meta.unlock();
        }
    }

    // ---- helpers --------------------------------------------------------------------------------

    /** Whether the header must be rewritten at a read-write open to drop an invalidated extension. */
    boolean invalidated() {
        return invalidated;
    }

    private void forget(String bitmap) {
        if (pending.remove(bitmap)) {
            pendingDirectorySize -= entrySize(utf8Length(bitmap), 0);
        }
    }

    private static Entry find(List<Entry> list, String bitmap) {
        for (Entry e : list) {
            if (e.name.equals(bitmap)) {
                return e;
            }
        }
        return null;
    }

    private static int utf8Length(String s) {
        return s.getBytes(StandardCharsets.UTF_8).length;
    }

    /** QEMU's {@code error_setg_errno}: the message, a colon and the errno's text. */
    private static BlockIoException failure(String message, BlockIoException cause) {
        return new BlockIoException(cause.errno(), message + ": " + Strerror.of(cause.errno().code()), cause);
    }
}
