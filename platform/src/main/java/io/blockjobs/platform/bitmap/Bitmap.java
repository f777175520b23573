package io.blockjobs.platform.bitmap;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.error.CommandException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Optional;

/**
 * One dirty bitmap of a node, as QEMU's {@code BdrvDirtyBitmap}: granules set by the node's
 * writes while enabled; a name (or none: a job's own), persistence, and the states QMP shows
 * ({@code recording}, {@code busy}, {@code inconsistent}). Every method holds the node's bitmap
 * lock ({@link NodeBitmaps}), as QEMU's {@code dirty_bitmap_mutex}.
 */
public final class Bitmap implements DirtyBitmap {
    /** QEMU's {@code BDRV_BITMAP_MAX_NAME_SIZE}. */
    public static final int MAX_NAME_SIZE = 1023;

    private final NodeBitmaps owner;
    private final int granularityBits;
    private final long size;
    private final GranuleSet bits;
    private String name;
    private boolean disabled;
    private boolean busy;
    private boolean claimed; // by a job (JobSetup.useBitmap): busy for everyone else
    private boolean persistent;
    private boolean inconsistent;
    private boolean readonly;
    private Bitmap successor;

    Bitmap(NodeBitmaps owner, String name, int granularityBits, long size) {
        this.owner = owner;
        this.name = name;
        this.granularityBits = granularityBits;
        this.size = size;
        this.bits = new GranuleSet(granules(size, granularityBits));
    }

    private static long granules(long size, int granularityBits) {
        return (size + (1L << granularityBits) - 1) >>> granularityBits;
    }

    // ---- what QMP shows ---------------------------------------------------------------------

    @Override
    public Optional<String> name() {
        synchronized (owner) {
            return Optional.ofNullable(name);
        }
    }

    /** The name, or null for an anonymous bitmap. */
    String nameOrNull() {
        return name;
    }

    @Override
    public long granularity() {
        return 1L << granularityBits;
    }

    /** log2 of the granularity. */
    public int granularityBits() {
        return granularityBits;
    }

    @Override
    public long size() {
        return size;
    }

    /** The node the bitmap belongs to. */
    public String nodeName() {
        return owner.nodeName();
    }

    @Override
    public long count() {
        synchronized (owner) {
            return bits.cardinality() << granularityBits;
        }
    }

    @Override
    public boolean recording() {
        synchronized (owner) {
            return !disabled || successor != null && !successor.disabled;
        }
    }

    /** Whether this bitmap itself records writes (QEMU's {@code bdrv_dirty_bitmap_enabled}). */
    public boolean enabled() {
        synchronized (owner) {
            return !disabled;
        }
    }

    /** In use by an operation or a job: QMP may not change it (QEMU's {@code busy}). */
    public boolean busy() {
        synchronized (owner) {
            return busy || claimed;
        }
    }

    /** Busy with an operation of its own (a successor, an export), not only claimed by a job. */
    boolean operationBusy() {
        return busy;
    }

    public boolean persistent() {
        synchronized (owner) {
            return persistent;
        }
    }

    public boolean inconsistent() {
        synchronized (owner) {
            return inconsistent;
        }
    }

    public boolean readonly() {
        synchronized (owner) {
            return readonly;
        }
    }

    /** Heap held by the bits, in bytes (compacted first). */
    public long sizeInBytes() {
        synchronized (owner) {
            bits.compact();
            return bits.sizeInBytes();
        }
    }

    // ---- QEMU's checks ----------------------------------------------------------------------

    /** What {@link #check} refuses (QEMU's {@code BDRV_BITMAP_*} flags). */
    public enum Check {
        /** Busy, read-only or inconsistent: QEMU's {@code BDRV_BITMAP_DEFAULT}. */
        DEFAULT(true, true),
        /** Busy or inconsistent: QEMU's {@code BDRV_BITMAP_ALLOW_RO}. */
        ALLOW_RO(true, false),
        /** Busy or read-only ({@code BDRV_BITMAP_BUSY | BDRV_BITMAP_RO}). */
        BUSY_RO(false, true);

        private final boolean inconsistent;
        private final boolean readonly;

        Check(boolean inconsistent, boolean readonly) {
            this.inconsistent = inconsistent;
            this.readonly = readonly;
        }
    }

    /** QEMU's {@code bdrv_dirty_bitmap_check}, its messages word for word. */
    public void check(Check c) {
        synchronized (owner) {
            if (busy || claimed) {
                throw new CommandException("Bitmap '" + name + "' is currently in use by another operation and cannot be used");
            }
            if (c.readonly && readonly) {
                throw new CommandException("Bitmap '" + name + "' is readonly and cannot be modified");
            }
            if (c.inconsistent && inconsistent) {
                throw new CommandException("Bitmap '" + name + "' is inconsistent and cannot be used");
            }
        }
    }

    // ---- state changes ----------------------------------------------------------------------

    public void enable() {
        synchronized (owner) {
            disabled = false;
        }
    }

    public void disable() {
        synchronized (owner) {
            disabled = true;
        }
    }

    /** Marks the bitmap in use by an operation (a job, an export) or frees it. */
    public void setBusy(boolean busy) {
        synchronized (owner) {
            this.busy = busy;
        }
    }

    void setPersistent(boolean persistent) {
        synchronized (owner) {
            this.persistent = persistent;
        }
    }

    void setReadonly(boolean readonly) {
        synchronized (owner) {
            this.readonly = readonly;
        }
    }

    /** A persistent bitmap found in use on disk: it records nothing and may only be removed. */
    void setInconsistent() {
        synchronized (owner) {
            persistent = true;
            inconsistent = true;
            disabled = true;
        }
    }

    // ---- bits -------------------------------------------------------------------------------

    @Override
    public boolean isDirty(long offset) {
        synchronized (owner) {
            return bits.contains(offset >>> granularityBits);
        }
    }

    @Override
    public Optional<DirtyRange> nextDirty(long offset, long end) {
        end = Math.min(end, size);
        if (offset < 0 || offset >= end) {
            return Optional.empty();
        }
        synchronized (owner) {
            long g = bits.next(offset >>> granularityBits, granuleCeil(end));
            if (g < 0) {
                return Optional.empty();
            }
            long clean = bits.nextAbsent(g, granuleCeil(end));
            long from = Math.max(offset, g << granularityBits);
            long to = clean < 0 ? end : Math.min(end, clean << granularityBits);
            return Optional.of(new DirtyRange(from, to - from));
        }
    }

    @Override
    public long nextClean(long offset, long end) {
        end = Math.min(end, size);
        if (offset < 0 || offset >= end) {
            return -1;
        }
        synchronized (owner) {
            long g = bits.nextAbsent(offset >>> granularityBits, granuleCeil(end));
            return g < 0 ? -1 : Math.max(offset, g << granularityBits);
        }
    }

    private long granuleCeil(long byteEnd) {
        return (byteEnd + (1L << granularityBits) - 1) >>> granularityBits;
    }

    @Override
    public void set(long offset, long length) {
        synchronized (owner) {
            mark(offset, length);
        }
    }

    /** Sets the granules a write touched; the owner's lock is held. */
    void mark(long offset, long length) {
        if (length <= 0) {
            return;
        }
        bits.add(offset >>> granularityBits, granuleCeil(offset + length));
    }

    @Override
    public void reset(long offset, long length) {
        synchronized (owner) {
            long first = granuleCeil(offset);
            long end = offset + length >= size ? bits.granules() : (offset + length) >>> granularityBits;
            if (first < end) {
                bits.remove(first, end);
            }
        }
    }

    /** Clears every bit; returns the bits as they were, for an undo. */
    public GranuleSet clear() {
        synchronized (owner) {
            GranuleSet before = bits.copy();
            bits.clear();
            return before;
        }
    }

    /** Puts back bits returned by {@link #clear} or {@link #mergeFrom}. */
    public void restore(GranuleSet before) {
        synchronized (owner) {
            bits.assign(before);
        }
    }

    /**
     * Sets every byte range dirty in {@code src} (granularities may differ, as QEMU's
     * {@code hbitmap_merge}); returns the bits as they were, for an undo. Both bitmaps must have
     * the same size; the caller checked.
     */
    public GranuleSet mergeFrom(Bitmap src) {
        GranuleSet other;
        synchronized (src.owner) { // copied first: never two nodes' locks at once
            other = src.bits.copy();
        }
        synchronized (owner) {
            GranuleSet before = bits.copy();
            if (src.granularityBits == granularityBits) {
                bits.or(other);
            } else {
                orRuns(other, src.granularityBits);
            }
            return before;
        }
    }

    private void orRuns(GranuleSet other, int otherBits) {
        for (long g = other.next(0, other.granules()); g >= 0; ) {
            long clean = other.nextAbsent(g, other.granules());
            long end = clean < 0 ? other.granules() : clean;
            long from = g << otherBits;
            long to = Math.min(size, end << otherBits);
            mark(from, to - from);
            if (clean < 0) {
                break;
            }
            g = other.next(clean, other.granules());
        }
    }

    /** Calls {@code sink} for every run of set granules in {@code [from, to)}, on a copy of the bits. */
    public void forEachRun(long from, long to, RunConsumer sink) throws java.io.IOException {
        GranuleSet copy;
        synchronized (owner) {
            copy = bits.copy();
        }
        to = Math.min(to, copy.granules());
        for (long g = copy.next(from, to); g >= 0; ) {
            long clean = copy.nextAbsent(g, to);
            long end = clean < 0 ? to : clean;
            sink.run(g, end - g);
            if (clean < 0) {
                break;
            }
            g = copy.next(clean, to);
        }
    }

    /** Receives runs of set granules. */
    @FunctionalInterface
    public interface RunConsumer {
        void run(long first, long count) throws java.io.IOException;
    }

    /**
     * QEMU's {@code hbitmap_sha256}: SHA-256 over the bits as 64-bit little-endian words, bit
     * {@code i} standing for granule {@code i}, at least one word; lowercase hex.
     */
    public String sha256() {
        MessageDigest sha;
        try {
            sha = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        GranuleSet copy;
        synchronized (owner) {
            copy = bits.copy();
        }
        long words = Math.max(1, (copy.granules() + 63) / 64);
        byte[] block = new byte[64 * 1024]; // 512 Ki granules per block
        long granulesPerBlock = block.length * 8L;
        for (long firstWord = 0; firstWord < words; firstWord += block.length / 8) {
            int bytes = (int) Math.min(block.length, (words - firstWord) * 8);
            java.util.Arrays.fill(block, 0, bytes, (byte) 0);
            long base = firstWord * 64;
            long limit = Math.min(copy.granules(), base + granulesPerBlock);
            for (long g = copy.next(base, limit); g >= 0; ) {
                long clean = copy.nextAbsent(g, limit);
                long end = clean < 0 ? limit : clean;
                for (long i = g; i < end; i++) { // a byte at a time where runs cover whole bytes
                    long bit = i - base;
                    if ((bit & 7) == 0 && i + 8 <= end) {
                        block[(int) (bit >>> 3)] = (byte) 0xff;
                        i += 7;
                    } else {
                        block[(int) (bit >>> 3)] |= (byte) (1 << (bit & 7));
                    }
                }
                if (clean < 0) {
                    break;
                }
                g = copy.next(clean, limit);
            }
            sha.update(block, 0, bytes);
        }
        return HexFormat.of().formatHex(sha.digest());
    }

    // ---- successors -------------------------------------------------------------------------

    @Override
    public void createSuccessor() {
        owner.createSuccessor(this);
    }

    /** Installs a successor; the owner's lock is held. */
    void installSuccessor(Bitmap child) {
        child.disabled = disabled;
        disabled = true;
        successor = child;
        busy = true;
    }

    Bitmap successor() {
        return successor;
    }

    /** Hands name and persistence to the successor; the owner's lock is held. */
    Bitmap yieldToSuccessor() {
        Bitmap s = successor;
        s.name = name;
        s.persistent = persistent;
        name = null;
        persistent = false;
        busy = false;
        successor = null;
        return s;
    }

    /** Takes the successor's bits back; the owner's lock is held. */
    void takeBackSuccessor() {
        Bitmap s = successor;
        bits.or(s.bits);
        disabled = s.disabled;
        busy = false;
        successor = null;
    }

    /**
     * A job that used this bitmap has ended: a successor it left is reclaimed (nothing is
     * forgotten), and the bitmap is free again.
     */
    public void releaseFromJob() {
        synchronized (owner) {
            if (successor != null) {
                owner.reclaim(this);
            }
            claimed = false;
        }
    }

    /** A job takes the bitmap (QEMU's checks first): until it ends nobody else may use it. */
    public void claimForJob() {
        synchronized (owner) {
            check(Check.ALLOW_RO);
            claimed = true;
        }
    }

    @Override
    public void abdicate() {
        owner.abdicate(this);
    }

    @Override
    public void reclaim() {
        owner.reclaim(this);
    }

    @Override
    public String toString() {
        return owner.nodeName() + "/" + (name == null ? "(anonymous)" : name);
    }
}
