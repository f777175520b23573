package io.blockjobs.platform.image;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The qcow2 refcount table and blocks, and the cluster allocator built on them.
 *
 * <p>Every method runs under {@link #lock()}. Metadata is written through, in an order that a
 * process killed at any instant leaves no cluster referenced with a refcount of zero:
 * <ul>
 *   <li>a cluster's refcount is raised, and made durable, before anything points to it: data
 *       clusters and L2 tables come from a pool counted ahead in batches, written once per
 *       batch; a metadata cluster ({@link #allocateCluster}) is durable when handed out, a data
 *       run ({@link #allocateRun}) once a flush has covered {@link #refills()}, which the node
 *       waits for before it writes an L2 table (QEMU's L2 cache's dependency on its refcount
 *       cache), so that no writer waits for a refill's flush;</li>
 *   <li>a cluster is released only after the reference to it is gone;</li>
 *   <li>a new refcount block describes itself (it sits at the first cluster it covers) and is
 *       durable before the refcount table points to it; a grown table is durable before the
 *       header points to it, and the old table is released last.</li>
 * </ul>
 * A crash can leak clusters (the unused part of the pool), never corrupt.
 *
 * <p>What a crash leaks. The pool is taken from two places, and what is left of it after a crash
 * is handled differently in each:
 * <ul>
 *   <li>free clusters inside the file (holes left by discards): a pool holds at most
 *       {@link #MAX_HOLES} of them, so a crash leaks no more of them than QEMU's order of
 *       magnitude (QEMU leaks 0 to 8). These stay leaked, as QEMU's do, until
 *       {@code qemu-img check -r leaks};</li>
 *   <li>clusters past the end of the file: batches double up to {@link #poolBound} (512 clusters
 *       or 32 MiB), so that sequential writers flush rarely. The pool is handed out in ascending
 *       order and everything written goes to it, so its unused part stays past the end of the
 *       file, where {@code qemu-img check} does not count leaks, and the first refill after a
 *       read-write open (or the close) gives back whatever is counted past the end of the file
 *       and no L2 entry references (nothing valid can: {@code qemu-img check} reports a reference
 *       past the end of the file as an error). That costs a read of the L2 tables, and only when
 *       something is counted past the end. A writer that does not reclaim them (QEMU, if it
 *       opens the image first) grows the file over them, and then they are leaks.</li>
 * </ul>
 * For the unused pool to stay past the end, a refill stops before the range of a refcount block
 * that does not exist yet (creating it writes at the start of its range, which could lie past
 * pool clusters): the next refill creates it, once the pool is used up. Besides the pool, an
 * operation in flight can leak the clusters it holds (a run taken for one allocating write and
 * not yet linked, or unlinked and not yet released), and replacing the refcount table the old
 * table.
 *
 * <p>Writes. Changes to a refcount block are made in memory and written from there as whole
 * slices of the file's request alignment (so that a {@code cache.direct=on} file never has to
 * read around them), once per block for a batch of changes: a refill or a release of many
 * clusters writes each block it changed once. Entry points write what they changed before they
 * return; {@link #unref} leaves it to {@link #writeBack}.
 */
final class Qcow2Refcounts {

    private final io.blockjobs.sdk.block.BlockNode file;
    private final Qcow2Header header;
    private final String name;
    private final int clusterBits;
    private final long clusterSize;
    private final int refcountBits;
    private final int blockBits; // log2 of refcount entries per block
    private final long maxRefcount;
    private final int maxCachedBlocks;
    private final ReentrantLock lock = new ReentrantLock();

    private volatile long[] table; // replaced under the lock when it grows; read without it by blockIn
    private final Map<Long, byte[]> blocks;
    private long freeHint;
    private long highWater; // no cluster at or past this index is in use
    private boolean highWaterChecked; // against the refcounts, not only the file's length
    private boolean tailReclaimed; // what a crash left counted past the end of the file

    private final ArrayDeque<Long> pool = new ArrayDeque<>();
    /** Refills written, and how many of them a flush has made durable ({@link #refillsDurableAfter}). */
    private final java.util.concurrent.atomic.AtomicLong refills = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicLong refillsFlushed = new java.util.concurrent.atomic.AtomicLong();
    private final Map<Long, Dirty> dirty = new HashMap<>(); // changed in memory, not yet written
    private int poolBatch = 8;
    private final int maxPoolBatch;

    Qcow2Refcounts(io.blockjobs.sdk.block.BlockNode file, Qcow2Header header, long[] table) throws IOException {
        this.file = file;
        this.header = header;
        this.name = file.filename();
        this.clusterBits = header.clusterBits;
        this.clusterSize = 1L << clusterBits;
        this.refcountBits = 1 << header.refcountOrder;
        this.blockBits = clusterBits + 3 - header.refcountOrder;
        this.maxRefcount = refcountBits == 64 ? Long.MAX_VALUE : (1L << refcountBits) - 1;
        this.table = table;
        this.highWater = (file.size() + clusterSize - 1) >>> clusterBits;
        this.maxCachedBlocks = (int) Math.max(4, (8L << 20) >> clusterBits);
        this.maxPoolBatch = poolBound(clusterBits);
        this.blocks = new LinkedHashMap<>(16, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<Long, byte[]> eldest) {
                return size() > maxCachedBlocks;
            }
        };
    }

    /** Bytes {@code [from, to)} of refcount block {@code b} changed in memory and not written yet. */
    private static final class Dirty {
        final byte[] block;
        int from;
        int to;

        Dirty(byte[] block, int from, int to) {
            this.block = block;
            this.from = from;
            this.to = to;
        }
    }

    /** Clusters that follow each other on the host: {@code clusters} from host offset {@code offset}. */
    record Run(long offset, int clusters) {
    }

    /**
     * The request alignment of {@code file} (1 if it does not say): metadata written from memory
     * is written in whole slices of it, never leaving the graph a read-modify-write to do.
     */
    static int requestAlignment(io.blockjobs.sdk.block.BlockNode file) {
        if (file instanceof NodeLimits n) {
            return n.limits().requestAlignment();
        }
        if (file instanceof io.blockjobs.sdk.driver.DriverNode d) {
            return d.limits().requestAlignment();
        }
        return 1;
    }

    /** The most free clusters inside the file (holes) that a pool holds: what a crash leaks for good. */
    static final int MAX_HOLES = 16;

    /**
     * The most clusters a pool holds: at most {@link #MAX_HOLES} inside the file, the rest past
     * its end (which a crash leaves counted, for the next read-write open to reclaim).
     */
    static int poolBound(int clusterBits) {
        return (int) Math.max(MAX_HOLES, Math.min(512, (32L << 20) >> clusterBits));
    }

    /** Reads the refcount table named by the header. */
    static long[] readTable(io.blockjobs.sdk.block.BlockNode file, Qcow2Header h) throws IOException {
        long bytes = (long) h.refcountTableClusters << h.clusterBits;
        if (bytes > (64L << 20)) {
            throw new ImageException(file.filename(), "refcount table of " + h.refcountTableClusters
                    + " clusters is implausibly large");
        }
        ByteBuffer buf = ByteBuffer.allocate((int) bytes);
        file.read(h.refcountTableOffset, buf);
        long[] t = new long[(int) (bytes / 8)];
        buf.flip().asLongBuffer().get(t);
        return t;
    }

    ReentrantLock lock() {
        return lock;
    }

    /**
     * Whether a refcount block starts in host bytes {@code [start, end)}: QEMU's overlap check
     * for {@code refcount block}. Reads the table without the lock: a block added meanwhile
     * sits in a cluster just allocated, which no write is aimed at.
     */
    boolean blockIn(long start, long end) {
        for (long e : table) {
            long off = e & ~(clusterSize - 1);
            if (off != 0 && off >= start && off < end) {
                return true;
            }
        }
        return false;
    }

    /** A copy of the refcount table, for checks. */
    long[] table() {
        return table.clone();
    }

    /** The refcount of the cluster at {@code index} (0 where no block covers it). */
    long get(long index) throws IOException {
        long b = index >>> blockBits;
        if (b >= table.length || (table[(int) b] & ~(clusterSize - 1)) == 0) {
            return 0;
        }
        return readEntry(block(b), (int) (index & ((1L << blockBits) - 1)));
    }

    /** Adds {@code delta} to the refcount of the cluster at {@code index}, and writes it. */
    void adjust(long index, long delta) throws IOException {
        count(index, delta);
        writeBack();
    }

    /** Adds {@code delta} to the refcount of the cluster at {@code index} in memory, for {@link #writeBack}. */
    void count(long index, long delta) throws IOException {
        long b = index >>> blockBits;
        byte[] block = ensureBlock(b);
        int i = (int) (index & ((1L << blockBits) - 1));
        long value = readEntry(block, i) + delta;
        if (value < 0 || value > maxRefcount) {
            throw new ImageException(name, "refcount of cluster " + index + " would become " + value
                    + " (metadata inconsistent; run qemu-img check)");
        }
        writeEntry(block, i, value);
        int from = (int) ((long) i * refcountBits / 8);
        int to = from + Math.max(1, refcountBits / 8);
        Dirty d = dirty.get(b);
        if (d == null) {
            dirty.put(b, new Dirty(block, from, to));
        } else {
            d.from = Math.min(d.from, from);
            d.to = Math.max(d.to, to);
        }
        if (delta > 0 && index >= highWater) {
            highWater = index + 1;
        }
        if (value == 0 && index < freeHint) {
            freeHint = index;
        }
    }

    /**
     * Writes what was counted in memory and not written yet: for each block changed, the slice of
     * it that covers the changes, widened to the file's request alignment, in one write.
     */
    void writeBack() throws IOException {
        if (dirty.isEmpty()) {
            return;
        }
        int align = (int) Math.min(clusterSize, Math.max(1, requestAlignment(file)));
        // Ascending, so that a batch of neighbouring blocks goes out in file order.
        Long[] changed = dirty.keySet().toArray(new Long[0]);
        Arrays.sort(changed);
        for (Long b : changed) {
            Dirty d = dirty.get(b);
            int from = d.from & -align;
            int to = (int) Math.min(clusterSize, (d.to + align - 1) & -align);
            file.write(blockOffset(b) + from, ByteBuffer.wrap(d.block, from, to - from).slice());
            dirty.remove(b); // only once written: a failed write leaves it to the next writeBack
        }
    }

    /** Flushes the file, after writing what was counted in memory. */
    void flushFile() throws IOException {
        writeBack();
        long written = refills.get();
        file.flush();
        refillsFlushed.accumulateAndGet(written, Math::max);
    }

    /** Takes one cluster from the preallocated pool, for metadata; its refcount is durable. */
    long allocateCluster() throws IOException {
        if (pool.isEmpty()) {
            refillPool();
        }
        long written = refills.get();
        if (written > refillsFlushed.get()) {
            file.flush(); // metadata points to it before any L2 table write would flush
            refillsFlushed.accumulateAndGet(written, Math::max);
        }
        return pool.removeFirst() << clusterBits;
    }

    /** How many refills were written: a flush begun after reading it makes their counts durable. */
    long refills() {
        return refills.get();
    }

    /** Whether a refill up to {@code written} ({@link #refills()}) may not be durable yet. No lock needed. */
    boolean refillsPending(long written) {
        return written > refillsFlushed.get();
    }

    /** Records a flush begun after {@link #refills()} returned {@code written}. No lock needed. */
    void refillsDurableAfter(long written) {
        refillsFlushed.accumulateAndGet(written, Math::max);
    }

    /**
     * Takes at least one and at most {@code max} clusters that follow each other on the host from
     * the pool, in its ascending order, for data; their refcounts are written, and durable once a
     * flush covers {@link #refills()}. A pool used up on the way is refilled (in the same
     * ascending order, so the run usually goes on into it).
     */
    Run allocateRun(int max) throws IOException {
        if (pool.isEmpty()) {
            refillPool();
        }
        long first = pool.removeFirst();
        int n = 1;
        while (n < max) {
            if (pool.isEmpty()) {
                try {
                    refillPool();
                } catch (IOException e) {
                    break; // the run so far is counted and good; the next allocation meets the failure again
                }
            }
            if (pool.peekFirst() != first + n) {
                break;
            }
            pool.removeFirst();
            n++;
        }
        return new Run(first << clusterBits, n);
    }

    /** Releases every cluster covering {@code [offset, offset + length)}, and writes the change. */
    void free(long offset, long length) throws IOException {
        unref(offset, length);
        writeBack();
    }

    /**
     * Releases every cluster covering {@code [offset, offset + length)} in memory; the caller calls
     * {@link #writeBack} before it lets go of the lock (a crash in between leaks them, no worse).
     */
    void unref(long offset, long length) throws IOException {
        long first = offset >>> clusterBits;
        long last = (offset + length - 1) >>> clusterBits;
        for (long c = first; c <= last; c++) {
            count(c, -1);
        }
    }

    /**
     * Gives back the clusters that were allocated ahead and not used, and what a crash left
     * counted past the end of the file if no refill has reclaimed it (at close).
     */
    void releasePool() throws IOException {
        while (!pool.isEmpty()) {
            count(pool.removeFirst(), -1);
        }
        if (!tailReclaimed) {
            reclaimTail();
        }
        writeBack();
    }

    /**
     * Allocates {@code n} contiguous clusters for a metadata table (a snapshot's L1 table, the
     * snapshot table), durably counted: one comes from the pool, in its order; a longer run is
     * placed past everything in use after the pool is given back, so that the pool's clusters
     * past the end of the file do not become leaks inside it if the process dies.
     *
     * @return the host offset of the first
     */
    long allocateTable(int n) throws IOException {
        if (n == 1) {
            return allocateCluster();
        }
        releasePool();
        return allocateContiguous(n);
    }

    /**
     * Allocates {@code n} contiguous clusters past everything in use, for metadata tables; their
     * refcounts are durable when it returns. Blocks that must be created to count them are placed
     * right after them.
     *
     * @return the host offset of the first
     */
    long allocateContiguous(int n) throws IOException {
        checkHighWater();
        while (true) {
            long start = highWater;
            long[] missing = missingBlocks(start, n);
            long lastBlock = (start + n + missing.length - 1) >>> blockBits;
            if (lastBlock >= table.length) {
                growTable(lastBlock + 1); // moves highWater; then plan again
                continue;
            }
            Map<Long, byte[]> created = countNewRun(start, n + missing.length, missing);
            int j = 0;
            for (var e : created.entrySet()) {
                long at = start + n + j++;
                file.write(at << clusterBits, ByteBuffer.wrap(e.getValue()));
                table[(int) (long) e.getKey()] = at << clusterBits;
            }
            flushFile(); // blocks (and the counts in existing ones) durable before the table points to them
            for (long b : created.keySet()) {
                writeTableEntry(b);
                blocks.put(b, created.get(b));
            }
            file.flush();
            return start << clusterBits;
        }
    }

    /**
     * The blocks that are missing to count {@code [start, start + n + k)}, where {@code k} is
     * their number (they sit at the end of that range themselves).
     */
    private long[] missingBlocks(long start, long n) {
        long k = 0;
        while (true) {
            java.util.List<Long> missing = new java.util.ArrayList<>();
            for (long b = start >>> blockBits; b <= (start + n + k - 1) >>> blockBits; b++) {
                if (b >= table.length || (table[(int) b] & ~(clusterSize - 1)) == 0) {
                    missing.add(b);
                }
            }
            if (missing.size() == k) {
                return missing.stream().mapToLong(Long::longValue).toArray();
            }
            k = missing.size();
        }
    }

    /**
     * Counts clusters {@code [start, start + count)} once each: in existing blocks on disk, in
     * the {@code missing} blocks in memory (returned, in the order given, for the caller to place).
     */
    private Map<Long, byte[]> countNewRun(long start, long count, long[] missing) throws IOException {
        Map<Long, byte[]> created = new LinkedHashMap<>();
        for (long b : missing) {
            created.put(b, new byte[(int) clusterSize]);
        }
        for (long c = start; c < start + count; c++) {
            byte[] block = created.get(c >>> blockBits);
            if (block == null) {
                count(c, 1);
            } else {
                int i = (int) (c & ((1L << blockBits) - 1));
                writeEntry(block, i, readEntry(block, i) + 1);
            }
        }
        highWater = Math.max(highWater, start + count);
        return created;
    }

    /**
     * Counts the next free clusters into the (empty) pool, with one flush: up to a batch, at most
     * {@link #MAX_HOLES} of them inside the file, and none in the range of a refcount block that
     * does not exist yet unless the pool is still empty.
     */
    private void refillPool() throws IOException {
        if (!tailReclaimed) {
            reclaimTail();
        }
        long end = clustersInFile();
        int holes = 0;
        long c = Math.max(freeHint, 1);
        while (pool.size() < poolBatch) {
            if (!pool.isEmpty() && !hasBlock(c >>> blockBits)) {
                break; // the block, at the start of its range, could land past pool clusters
            }
            if (!isFree(c)) { // creates the missing block, which counts itself
                c++;
                continue;
            }
            if (pool.isEmpty()) {
                end = clustersInFile(); // a block or a table created just now may have grown the file
            }
            if (c < end && holes++ == MAX_HOLES) {
                break;
            }
            count(c, 1);
            pool.addLast(c);
            c++;
        }
        freeHint = c;
        try {
            // Written, not flushed: the flush before anything points to them is the node's
            // (before an L2 table write) or allocateCluster's, so that no allocation waits for it.
            writeBack();
            refills.incrementAndGet();
        } catch (IOException | RuntimeException e) {
            // Not written, so not to be handed out: the refill is undone in memory (on disk it
            // counts them at most: leaks, never a reference without a count).
            while (!pool.isEmpty()) {
                count(pool.removeLast(), -1);
            }
            throw e;
        }
        poolBatch = Math.min(maxPoolBatch, poolBatch * 2);
    }

    private long clustersInFile() throws IOException {
        return (file.size() + clusterSize - 1) >>> clusterBits;
    }

    private boolean hasBlock(long b) {
        return b < table.length && (table[(int) b] & ~(clusterSize - 1)) != 0;
    }

    /**
     * Gives back the clusters that a crash left counted past the end of the file (the unused end
     * of a pool): nothing in an image free of errors points past its end, and the L2 tables are
     * read to make sure (a power loss can leave an L2 entry durable and its data not; such a
     * cluster stays counted). Metadata tables cannot lie there: the image would not open.
     */
    private void reclaimTail() throws IOException {
        tailReclaimed = true;
        long end = clustersInFile();
        long last = lastCounted();
        if (last < end) {
            return;
        }
        Set<Long> referenced = referencedFrom(end);
        for (long c = end; c <= last; c++) {
            if (!hasBlock(c >>> blockBits)) {
                c = ((c >>> blockBits) + 1 << blockBits) - 1; // nothing counted in this range
            } else if (get(c) == 1 && !referenced.contains(c)) {
                count(c, -1);
            }
        }
        highWater = Math.max(end, lastCounted() + 1);
        highWaterChecked = true;
    }

    /** The clusters at or past {@code from} that an L2 entry of the active L1 table references. */
    private Set<Long> referencedFrom(long from) throws IOException {
        Set<Long> found = new HashSet<>();
        if (header.l1Size <= 0) {
            return found;
        }
        ByteBuffer l1 = ByteBuffer.allocate(header.l1Size * 8);
        file.read(header.l1TableOffset, l1);
        int csizeShift = 62 - (clusterBits - 8);
        long csizeMask = (1L << (clusterBits - 8)) - 1;
        ByteBuffer l2 = ByteBuffer.allocate((int) clusterSize);
        for (int i = 0; i < header.l1Size; i++) {
            long l2Offset = l1.getLong(i * 8) & Qcow2Node.OFFSET_MASK;
            if (l2Offset == 0) {
                continue;
            }
            file.read(l2Offset, l2.clear());
            for (int j = 0; j < clusterSize / 8; j++) {
                long e = l2.getLong(j * 8);
                if ((e & Qcow2Node.COMPRESSED) != 0) {
                    long coff = e & ((1L << csizeShift) - 1);
                    long sectors = ((e >>> csizeShift) & csizeMask) + 1;
                    for (long k = coff >>> clusterBits; k <= (coff + sectors * 512 - 1) >>> clusterBits; k++) {
                        if (k >= from) {
                            found.add(k);
                        }
                    }
                } else if ((e & Qcow2Node.OFFSET_MASK) >>> clusterBits >= from) {
                    found.add((e & Qcow2Node.OFFSET_MASK) >>> clusterBits);
                }
            }
        }
        return found;
    }

    /**
     * Raises the high-water mark over clusters counted past the end of the file (a pool left by
     * a crash, not reclaimed yet): no new run of metadata may be placed over them.
     */
    private void checkHighWater() throws IOException {
        if (!highWaterChecked) {
            highWater = Math.max(highWater, lastCounted() + 1);
            highWaterChecked = true;
        }
    }

    /** The last cluster with a refcount, or 0. */
    private long lastCounted() throws IOException {
        for (int b = table.length - 1; b >= 0; b--) {
            if (!hasBlock(b)) {
                continue;
            }
            byte[] block = block(b);
            for (int i = (1 << blockBits) - 1; i >= 0; i--) {
                if (readEntry(block, i) != 0) {
                    return ((long) b << blockBits) + i;
                }
            }
        }
        return 0;
    }

    private boolean isFree(long c) throws IOException {
        long b = c >>> blockBits;
        if (b >= table.length || (table[(int) b] & ~(clusterSize - 1)) == 0) {
            ensureBlock(b); // count before choosing: creating it may take clusters itself
        }
        return get(c) == 0;
    }

    private long blockOffset(long b) {
        return table[(int) b] & ~(clusterSize - 1);
    }

    private byte[] block(long b) throws IOException {
        byte[] block = blocks.get(b);
        if (block == null) {
            Dirty d = dirty.get(b); // evicted before it was written: memory is what counts
            if (d != null) {
                blocks.put(b, d.block);
                return d.block;
            }
            long offset = blockOffset(b);
            if ((offset & (clusterSize - 1)) != 0 || offset + clusterSize > file.size()) {
                throw new ImageException(name, "refcount block " + b + " at offset " + offset
                        + " is past the end of the file");
            }
            block = new byte[(int) clusterSize];
            file.read(offset, ByteBuffer.wrap(block));
            blocks.put(b, block);
        }
        return block;
    }

    private byte[] ensureBlock(long b) throws IOException {
        if (b >= table.length) {
            growTable(b + 1);
        }
        if ((table[(int) b] & ~(clusterSize - 1)) != 0) {
            return block(b);
        }
        // A new block sits at the first cluster it covers and counts itself.
        long self = b << blockBits;
        byte[] block = new byte[(int) clusterSize];
        writeEntry(block, 0, 1);
        file.write(self << clusterBits, ByteBuffer.wrap(block));
        file.flush();
        table[(int) b] = self << clusterBits;
        writeTableEntry(b);
        blocks.put(b, block);
        highWater = Math.max(highWater, self + 1);
        return block;
    }

    /**
     * Moves the refcount table to a larger place past everything in use, covering at least
     * {@code minEntries} blocks; blocks needed to count the new table follow it and are recorded
     * in it. The new table is durable before the header points to it; the old one is freed last.
     */
    private void growTable(long minEntries) throws IOException {
        checkHighWater();
        long perCluster = clusterSize / 8;
        long start = highWater;
        long entries = Math.max(minEntries, table.length * 2L);
        long[] missing;
        int clusters;
        while (true) {
            entries = (entries + perCluster - 1) / perCluster * perCluster;
            clusters = Math.toIntExact(entries / perCluster);
            missing = missingBlocks(start, clusters);
            long lastBlock = (start + clusters + missing.length - 1) >>> blockBits;
            if (lastBlock < entries) {
                break;
            }
            entries = lastBlock + 1;
        }
        long[] grown = Arrays.copyOf(table, Math.toIntExact(entries));
        // Blocks the old table lacks may be counted in memory only: the new table records them.
        Map<Long, byte[]> created = countNewRun(start, clusters + missing.length, missing);
        int j = 0;
        for (var e : created.entrySet()) {
            long at = start + clusters + j++;
            file.write(at << clusterBits, ByteBuffer.wrap(e.getValue()));
            grown[Math.toIntExact(e.getKey())] = at << clusterBits;
        }
        ByteBuffer buf = ByteBuffer.allocate(clusters * (int) clusterSize);
        buf.asLongBuffer().put(grown);
        file.write(start << clusterBits, buf);
        flushFile();

        long oldOffset = header.refcountTableOffset;
        int oldClusters = header.refcountTableClusters;
        ByteBuffer fields = ByteBuffer.allocate(12).putLong(0, start << clusterBits).putInt(8, clusters);
        file.write(48, fields); // refcount_table_offset and refcount_table_clusters, one write
        file.flush();
        header.refcountTableOffset = start << clusterBits;
        header.refcountTableClusters = clusters;
        table = grown;
        blocks.putAll(created);
        free(oldOffset, (long) oldClusters << clusterBits);
    }

    private long readEntry(byte[] block, int i) {
        switch (refcountBits) {
            case 1, 2, 4 -> {
                int perByte = 8 / refcountBits;
                int shift = (i % perByte) * refcountBits;
                return (block[i / perByte] >>> shift) & ((1 << refcountBits) - 1);
            }
            case 8 -> {
                return block[i] & 0xffL;
            }
            case 16 -> {
                return ((block[2 * i] & 0xffL) << 8) | (block[2 * i + 1] & 0xffL);
            }
            case 32 -> {
                return ByteBuffer.wrap(block).getInt(4 * i) & 0xffffffffL;
            }
            default -> {
                return ByteBuffer.wrap(block).getLong(8 * i);
            }
        }
    }

    private void writeEntry(byte[] block, int i, long value) {
        switch (refcountBits) {
            case 1, 2, 4 -> {
                int perByte = 8 / refcountBits;
                int shift = (i % perByte) * refcountBits;
                int mask = ((1 << refcountBits) - 1) << shift;
                block[i / perByte] = (byte) ((block[i / perByte] & ~mask) | ((int) value << shift));
            }
            case 8 -> block[i] = (byte) value;
            case 16 -> {
                block[2 * i] = (byte) (value >>> 8);
                block[2 * i + 1] = (byte) value;
            }
            case 32 -> ByteBuffer.wrap(block).putInt(4 * i, (int) value);
            default -> ByteBuffer.wrap(block).putLong(8 * i, value);
        }
    }

    /**
     * Writes the refcount table's entry for block {@code b} from memory, in the slice of the
     * table around it that the file's request alignment asks for.
     */
    private void writeTableEntry(long b) throws IOException {
        int align = (int) Math.min(clusterSize, Math.max(8, requestAlignment(file)));
        long from = b * 8 & -align;
        long to = Math.min((long) table.length * 8, (b * 8 + 8 + align - 1) & -align);
        ByteBuffer buf = ByteBuffer.allocate((int) (to - from));
        for (long k = from / 8; k < to / 8; k++) {
            buf.putLong((int) (k * 8 - from), table[(int) k]);
        }
        file.write(header.refcountTableOffset + from, buf.clear());
    }
}
