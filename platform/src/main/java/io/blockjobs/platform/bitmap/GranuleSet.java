package io.blockjobs.platform.bitmap;

import org.roaringbitmap.RoaringBitmap;

/**
 * A bitmap's bits, kept aside by an operation that may have to put them back (a transaction's
 * clear or merge). A set of granule numbers in {@code [0, granules)}, sparse and compressed: one
 * {@link RoaringBitmap} per 2^32 granules (so a disk of many TiB at 512-byte granularity still
 * fits), each holding runs as run containers. Not thread-safe: the bitmap's owner guards it.
 */
public final class GranuleSet {
    private static final long CHUNK = 1L << 32;

    private final long granules;
    private final RoaringBitmap[] chunks;

    GranuleSet(long granules) {
        this.granules = granules;
        this.chunks = new RoaringBitmap[(int) Math.max(1, (granules + CHUNK - 1) / CHUNK)];
        for (int i = 0; i < chunks.length; i++) {
            chunks[i] = new RoaringBitmap();
        }
    }

    /** How many granules the set spans. */
    long granules() {
        return granules;
    }

    /** Adds {@code [from, to)}, clipped to the set's span. */
    void add(long from, long to) {
        to = Math.min(to, granules);
        for (long g = from; g < to; ) {
            int c = (int) (g >>> 32);
            long end = Math.min(to, (c + 1L) * CHUNK);
            chunks[c].add(g - c * CHUNK, end - c * CHUNK);
            g = end;
        }
    }

    /** Removes {@code [from, to)}. */
    void remove(long from, long to) {
        to = Math.min(to, granules);
        for (long g = from; g < to; ) {
            int c = (int) (g >>> 32);
            long end = Math.min(to, (c + 1L) * CHUNK);
            chunks[c].remove(g - c * CHUNK, end - c * CHUNK);
            g = end;
        }
    }

    void clear() {
        for (RoaringBitmap b : chunks) {
            b.clear();
        }
    }

    boolean contains(long g) {
        return g >= 0 && g < granules && chunks[(int) (g >>> 32)].contains((int) g);
    }

    long cardinality() {
        long n = 0;
        for (RoaringBitmap b : chunks) {
            n += b.getLongCardinality();
        }
        return n;
    }

    boolean isEmpty() {
        for (RoaringBitmap b : chunks) {
            if (!b.isEmpty()) {
                return false;
            }
        }
        return true;
    }

    /** The first member in {@code [from, to)}, or -1. */
    long next(long from, long to) {
        to = Math.min(to, granules);
        for (long g = from; g < to; ) {
            int c = (int) (g >>> 32);
            long v = chunks[c].nextValue((int) g);
            if (v >= 0) {
                long found = c * CHUNK + v;
                return found < to ? found : -1;
            }
            g = (c + 1L) * CHUNK;
        }
        return -1;
    }

    /** The first non-member in {@code [from, to)}, or -1. */
    long nextAbsent(long from, long to) {
        to = Math.min(to, granules);
        for (long g = from; g < to; ) {
            int c = (int) (g >>> 32);
            long v = chunks[c].nextAbsentValue((int) g); // -1 (or 2^32) if the rest of the chunk is full
            if (v >= 0 && v < CHUNK) {
                long found = c * CHUNK + v;
                return found < to ? found : -1;
            }
            g = (c + 1L) * CHUNK;
        }
        return -1;
    }

    /** Adds every member of {@code other} (of the same span). */
    void or(GranuleSet other) {
        for (int i = 0; i < chunks.length; i++) {
            chunks[i].or(other.chunks[i]);
        }
    }

    GranuleSet copy() {
        GranuleSet s = new GranuleSet(granules);
        for (int i = 0; i < chunks.length; i++) {
            s.chunks[i] = chunks[i].clone();
        }
        return s;
    }

    /** Replaces this set's members with those of {@code other} (of the same span). */
    void assign(GranuleSet other) {
        for (int i = 0; i < chunks.length; i++) {
            chunks[i] = other.chunks[i].clone();
        }
    }

    /** Turns dense containers into runs where that is smaller. */
    void compact() {
        for (RoaringBitmap b : chunks) {
            b.runOptimize();
        }
    }

    /** Heap held by the members, in bytes. */
    long sizeInBytes() {
        long n = 0;
        for (RoaringBitmap b : chunks) {
            n += b.getLongSizeInBytes();
        }
        return n;
    }
}
