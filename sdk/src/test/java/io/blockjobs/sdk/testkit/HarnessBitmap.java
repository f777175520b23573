package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.bitmap.DirtyBitmap;
import io.blockjobs.sdk.bitmap.DirtyRange;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import java.util.BitSet;
import java.util.Optional;

/**
 * A dirty bitmap of a harness node, as the platform's: a write hook on a {@link MemoryNode}
 * marks every granule a write, write-zeroes or discard touched while the bitmap (or its
 * successor) records; successors, abdicate and reclaim follow QEMU's rules and messages. Granules
 * are kept in a {@link BitSet}: enough for the disks of tests (up to 2^31 granules).
 */
public final class HarnessBitmap implements DirtyBitmap, WriteHook {
    private final MemoryNode node;
    private final int granularityBits;
    private final long size;
    private String name;
    private BitSet bits = new BitSet();
    private boolean disabled;
    private boolean busy;
    private boolean claimed; // by a job: busy for everyone else, not for the job's own successor
    private HarnessBitmap successor;

    HarnessBitmap(MemoryNode node, String name, int granularityBits, long size) {
        this.node = node;
        this.name = name;
        this.granularityBits = granularityBits;
        this.size = size;
        node.addHook(this);
    }

    @Override
    public synchronized void after(WriteRequest request, boolean succeeded) {
        if (!disabled) {
            mark(request.offset(), request.length());
        }
    }

    private void mark(long offset, long length) {
        if (length > 0) {
            bits.set(Math.toIntExact(offset >>> granularityBits), Math.toIntExact(ceil(offset + length)));
        }
    }

    private long ceil(long byteEnd) {
        return (Math.min(byteEnd, size) + (1L << granularityBits) - 1) >>> granularityBits;
    }

    @Override
    public synchronized Optional<String> name() {
        return Optional.ofNullable(name);
    }

    @Override
    public long granularity() {
        return 1L << granularityBits;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public synchronized long count() {
        return (long) bits.cardinality() << granularityBits;
    }

    @Override
    public synchronized boolean recording() {
        return !disabled || successor != null && !successor.disabled;
    }

    /** Whether a job or an operation holds it. */
    public synchronized boolean busy() {
        return busy || claimed;
    }

    @Override
    public synchronized boolean isDirty(long offset) {
        return bits.get(Math.toIntExact(offset >>> granularityBits));
    }

    @Override
    public synchronized Optional<DirtyRange> nextDirty(long offset, long end) {
        end = Math.min(end, size);
        if (offset < 0 || offset >= end) {
            return Optional.empty();
        }
        int g = bits.nextSetBit(Math.toIntExact(offset >>> granularityBits));
        if (g < 0 || (long) g << granularityBits >= end) {
            return Optional.empty();
        }
        long from = Math.max(offset, (long) g << granularityBits);
        long to = Math.min(end, (long) bits.nextClearBit(g) << granularityBits);
        return Optional.of(new DirtyRange(from, to - from));
    }

    @Override
    public synchronized long nextClean(long offset, long end) {
        end = Math.min(end, size);
        if (offset < 0 || offset >= end) {
            return -1;
        }
        long clean = Math.max(offset, (long) bits.nextClearBit(Math.toIntExact(offset >>> granularityBits)) << granularityBits);
        return clean < end ? clean : -1;
    }

    @Override
    public synchronized void set(long offset, long length) {
        mark(offset, length);
    }

    @Override
    public synchronized void reset(long offset, long length) {
        long g = 1L << granularityBits;
        long first = (offset + g - 1) >>> granularityBits;
        long end = offset + length >= size ? ceil(size) : (offset + length) >>> granularityBits;
        if (first < end) {
            bits.clear(Math.toIntExact(first), Math.toIntExact(end));
        }
    }

    @Override
    public synchronized void createSuccessor() {
        if (busy) {
            throw new CommandException("Bitmap '" + name + "' is currently in use by another operation and cannot be used");
        }
        if (successor != null) {
            throw new CommandException("Cannot create a successor for a bitmap that already has one");
        }
        successor = new HarnessBitmap(node, null, granularityBits, size);
        successor.disabled = disabled;
        disabled = true;
        busy = true;
    }

    @Override
    public synchronized void abdicate() {
        if (successor == null) {
            throw new CommandException("Cannot relinquish control if there's no successor present");
        }
        // The successor's bits become this bitmap's: the handle the job and the harness hold stays valid.
        node.removeHook(successor);
        bits = successor.bits;
        disabled = successor.disabled;
        successor = null;
        busy = false;
    }

    @Override
    public synchronized void reclaim() {
        if (successor == null) {
            throw new CommandException("Cannot reclaim a successor when none is present");
        }
        node.removeHook(successor);
        bits.or(successor.bits);
        disabled = successor.disabled;
        successor = null;
        busy = false;
    }

    synchronized void claim() {
        if (busy || claimed) {
            throw new CommandException("Bitmap '" + name + "' is currently in use by another operation and cannot be used");
        }
        claimed = true;
    }

    /** A job that used it ended: a successor left behind is reclaimed, and the bitmap is free. */
    synchronized void releaseFromJob() {
        if (successor != null) {
            reclaim();
        }
        claimed = false;
    }

    /** Stops recording for good (an anonymous bitmap whose job ended). */
    void drop() {
        node.removeHook(this);
    }
}
