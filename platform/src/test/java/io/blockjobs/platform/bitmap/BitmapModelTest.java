package io.blockjobs.platform.bitmap;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import java.security.MessageDigest;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/**
 * Bitmaps against a model: a {@link BitSet} of granules per bitmap, driven by the same seeded
 * random writes, discards, sets, resets, merges (across granularities), clears, enables and
 * disables, successors taken and given back. Every step compares counts, dirty ranges and the
 * sha256 (computed from the model as QEMU's {@code hbitmap_sha256} does).
 */
class BitmapModelTest {
    private static final long SIZE = 64L << 20;

    /** A bitmap and its model. */
    private static final class Pair {
        final Bitmap bitmap;
        final int bits;
        BitSet model = new BitSet();

        Pair(Bitmap bitmap) {
            this.bitmap = bitmap;
            this.bits = bitmap.granularityBits();
        }

        long granules() {
            return (SIZE + (1L << bits) - 1) >>> bits;
        }

        void markModel(long offset, long length) {
            if (length > 0) {
                model.set((int) (offset >>> bits), (int) ((offset + length + (1L << bits) - 1) >>> bits));
            }
        }
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 42, 1234})
    void randomOperationsKeepTheModelsBits(long seed) throws Exception {
        Random r = new Random(seed);
        NodeBitmaps node = new NodeBitmaps("disk");
        Pair[] p = {
            new Pair(node.create("fine", 9, SIZE)),
            new Pair(node.create("page", 12, SIZE)),
            new Pair(node.create("dflt", 16, SIZE)),
            new Pair(node.create("coarse", 20, SIZE)),
        };
        boolean[] enabled = {true, true, true, true};
        for (int step = 0; step < 400; step++) {
            int op = r.nextInt(10);
            long off = (long) r.nextInt((int) (SIZE >> 9)) << 9;
            if (r.nextBoolean()) {
                off += r.nextInt(512); // unaligned too
            }
            long len = Math.min(SIZE - off, 1 + r.nextInt(3 << 20));
            int i = r.nextInt(p.length);
            switch (op) {
                case 0, 1, 2, 3 -> { // a write, write-zeroes or discard through the node
                    WriteRequest.Kind kind = WriteRequest.Kind.values()[r.nextInt(3)];
                    node.after(new WriteRequest(kind, off, len, Set.<RequestFlag>of()), r.nextInt(8) != 0);
                    for (int j = 0; j < p.length; j++) {
                        if (enabled[j]) {
                            p[j].markModel(off, len);
                        }
                    }
                }
                case 4 -> {
                    p[i].bitmap.set(off, len);
                    p[i].markModel(off, len);
                }
                case 5 -> { // reset: whole granules only, and the disk's partial last one
                    p[i].bitmap.reset(off, len);
                    long g = 1L << p[i].bits;
                    long first = (off + g - 1) / g;
                    long end = off + len >= SIZE ? p[i].granules() : (off + len) / g;
                    if (first < end) {
                        p[i].model.clear((int) first, (int) end);
                    }
                }
                case 6 -> { // merge j into i, granularities as they come
                    int j = r.nextInt(p.length);
                    p[i].bitmap.mergeFrom(p[j].bitmap);
                    BitSet src = (BitSet) p[j].model.clone();
                    for (int g = src.nextSetBit(0); g >= 0; g = src.nextSetBit(g + 1)) {
                        long from = (long) g << p[j].bits;
                        p[i].markModel(from, Math.min(SIZE, from + (1L << p[j].bits)) - from);
                    }
                }
                case 7 -> {
                    GranuleSet before = p[i].bitmap.clear();
                    if (r.nextBoolean()) { // a transaction's abort puts it back
                        p[i].bitmap.restore(before);
                    } else {
                        p[i].model.clear();
                    }
                }
                case 8 -> {
                    enabled[i] = !enabled[i];
                    if (enabled[i]) {
                        p[i].bitmap.enable();
                    } else {
                        p[i].bitmap.disable();
                    }
                }
                default -> { // a job's successor: writes meanwhile, then abdicate or reclaim
                    if (!enabled[i]) {
                        break;
                    }
                    Pair frozen = p[i];
                    frozen.bitmap.createSuccessor();
                    assertThat(frozen.bitmap.busy()).isTrue();
                    assertThatThrownBy(() -> frozen.bitmap.check(Bitmap.Check.DEFAULT)).isInstanceOf(CommandException.class)
                            .hasMessage("Bitmap '" + frozen.bitmap.name().orElseThrow()
                                    + "' is currently in use by another operation and cannot be used");
                    BitSet before = (BitSet) frozen.model.clone();
                    BitSet after = new BitSet();
                    long wOff = (long) r.nextInt((int) (SIZE >> 16)) << 16;
                    node.after(new WriteRequest(WriteRequest.Kind.WRITE, wOff, 65536, Set.of()), true);
                    after.set((int) (wOff >>> frozen.bits), (int) ((wOff + 65536 + (1L << frozen.bits) - 1) >>> frozen.bits));
                    for (int j = 0; j < p.length; j++) {
                        if (j != i && enabled[j]) {
                            p[j].markModel(wOff, 65536);
                        }
                    }
                    assertThat(frozen.bitmap.count()).as("frozen").isEqualTo((long) before.cardinality() << frozen.bits);
                    String name = frozen.bitmap.name().orElseThrow();
                    Bitmap successor = frozen.bitmap.successor();
                    if (r.nextBoolean()) {
                        frozen.bitmap.abdicate();
                        assertThat(successor.name()).contains(name);
                        assertThat(node.find(name)).containsSame(successor);
                        p[i] = new Pair(successor);
                        p[i].model = after;
                    } else {
                        frozen.bitmap.reclaim();
                        before.or(after);
                        frozen.model = before;
                        assertThat(node.list()).doesNotContain(successor);
                    }
                    assertThat(p[i].bitmap.busy()).isFalse();
                    assertThat(p[i].bitmap.enabled()).isTrue();
                }
            }
            for (Pair q : p) {
                assertThat(q.bitmap.count()).as("seed %d step %d %s count", seed, step, q.bitmap)
                        .isEqualTo((long) q.model.cardinality() << q.bits);
            }
            if (step % 25 == 0) {
                for (Pair q : p) {
                    assertThat(q.bitmap.sha256()).as("seed %d step %d %s sha256", seed, step, q.bitmap).isEqualTo(sha256(q));
                    assertRanges(q);
                }
            }
        }
        assertThat(node.list()).hasSize(p.length);
    }

    /** Every dirty range found by nextDirty and nextClean is the model's, granule by granule. */
    private static void assertRanges(Pair q) {
        BitSet seen = new BitSet();
        long pos = 0;
        while (true) {
            Optional<DirtyRange> d = q.bitmap.nextDirty(pos, SIZE);
            if (d.isEmpty()) {
                break;
            }
            DirtyRange range = d.get();
            assertThat(range.offset()).isGreaterThanOrEqualTo(pos);
            long clean = q.bitmap.nextClean(range.offset(), SIZE);
            assertThat(clean).isEqualTo(range.end() == SIZE ? -1 : range.end());
            seen.set((int) (range.offset() >>> q.bits), (int) ((range.end() + (1L << q.bits) - 1) >>> q.bits));
            pos = range.end();
        }
        assertThat(seen).isEqualTo(q.model);
    }

    /** QEMU's hbitmap_sha256 of the model: 64-bit little-endian words, bit i for granule i. */
    private static String sha256(Pair q) throws Exception {
        long words = Math.max(1, (q.granules() + 63) / 64);
        byte[] raw = q.model.toByteArray(); // little-endian: byte j bit k is granule 8j+k
        byte[] all = new byte[(int) (words * 8)];
        System.arraycopy(raw, 0, all, 0, raw.length);
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(all));
    }

    @Test
    void aTiBDiskFullyDirtyTakesLittleHeap() {
        NodeBitmaps node = new NodeBitmaps("big");
        Bitmap b = node.create("all", 16, 1L << 40);
        // Written 64 KiB at a time as a guest would, every granule ends up set.
        for (long off = 0; off < 1L << 40; off += 1L << 30) {
            node.after(new WriteRequest(WriteRequest.Kind.WRITE, off, 1L << 30, Set.of()), true);
        }
        assertThat(b.count()).isEqualTo(1L << 40);
        assertThat(b.sizeInBytes()).isLessThan(4L << 20);
        assertThat(b.nextClean(0, 1L << 40)).isEqualTo(-1);
        b.reset(5L << 30, 1L << 16);
        assertThat(b.nextClean(0, 1L << 40)).isEqualTo(5L << 30);
        assertThat(b.nextDirty(5L << 30, 1L << 40)).contains(new DirtyRange((5L << 30) + 65536, (1L << 40) - (5L << 30) - 65536));
    }

    @Test
    void moreThanFourBillionGranulesSpanSeveralChunks() {
        NodeBitmaps node = new NodeBitmaps("huge");
        long size = 4L << 40; // 4 TiB at 512 bytes: 2^33 granules
        Bitmap b = node.create("fine", 9, size);
        long chunkEdge = (1L << 32) << 9; // the byte where the second 2^32 granules start
        b.set(chunkEdge - 1024, 2048);
        assertThat(b.count()).isEqualTo(2048);
        assertThat(b.nextDirty(0, size)).contains(new DirtyRange(chunkEdge - 1024, 2048));
        assertThat(b.nextClean(chunkEdge - 1024, size)).isEqualTo(chunkEdge + 1024);
        b.reset(chunkEdge - 512, 1024);
        assertThat(b.count()).isEqualTo(1024);
        assertThat(b.isDirty(chunkEdge - 1024)).isTrue();
        assertThat(b.isDirty(chunkEdge)).isFalse();
        assertThat(b.isDirty(chunkEdge + 512)).isTrue();
    }

    @Test
    void successorsFollowQemusRules() {
        NodeBitmaps node = new NodeBitmaps("disk");
        Bitmap b = node.create("b", 16, SIZE);
        assertThatThrownBy(b::abdicate).hasMessage("Cannot relinquish control if there's no successor present");
        assertThatThrownBy(b::reclaim).hasMessage("Cannot reclaim a successor when none is present");
        b.disable();
        b.createSuccessor();
        assertThat(b.recording()).isFalse(); // the successor of a disabled bitmap is disabled too
        assertThatThrownBy(b::createSuccessor)
                .hasMessage("Bitmap 'b' is currently in use by another operation and cannot be used");
        b.reclaim();
        assertThat(b.enabled()).isFalse();
        assertThat(node.list()).containsExactly(b);
        assertThatThrownBy(() -> node.create("b", 16, SIZE)).hasMessage("Bitmap already exists: b");
        assertThatThrownBy(() -> node.create("x".repeat(1024), 16, SIZE)).hasMessage("Bitmap name too long: " + "x".repeat(1024));
    }
}
