package io.blockjobs.platform.bitmap;

import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import io.blockjobs.sdk.error.CommandException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The dirty bitmaps of one node and the after-write hook that marks them: every write,
 * write-zeroes and discard through the node sets the granules it touched in each enabled bitmap,
 * whether it succeeded or not (QEMU's {@code bdrv_co_write_req_finish} marks before looking at
 * the result: a failed write may have changed some of the range). This object's monitor is the
 * node's bitmap lock.
 */
public final class NodeBitmaps implements WriteHook {
    private final String nodeName;
    private final List<Bitmap> bitmaps = new ArrayList<>(); // newest first, as QEMU's list
    private volatile boolean any;

    NodeBitmaps(String nodeName) {
        this.nodeName = nodeName;
    }

    /** Bitmaps of no node in a graph, for measuring them alone. */
    public static NodeBitmaps forBenchmark(String name) {
        return new NodeBitmaps(name);
    }

    public String nodeName() {
        return nodeName;
    }

    @Override
    public void after(WriteRequest request, boolean succeeded) {
        if (!any || request.length() == 0) {
            return;
        }
        synchronized (this) {
            for (Bitmap b : bitmaps) {
                if (b.enabled()) {
                    b.mark(request.offset(), request.length());
                }
            }
        }
    }

    /**
     * QEMU's {@code bdrv_create_dirty_bitmap}: a new enabled bitmap over {@code size} bytes.
     *
     * @param name null for an anonymous bitmap
     */
    public synchronized Bitmap create(String name, int granularityBits, long size) {
        if (name != null) {
            if (find(name).isPresent()) {
                throw new CommandException("Bitmap already exists: " + name);
            }
            if (name.length() > Bitmap.MAX_NAME_SIZE) {
                throw new CommandException("Bitmap name too long: " + name);
            }
        }
        Bitmap b = new Bitmap(this, name, granularityBits, size);
        bitmaps.addFirst(b);
        any = true;
        return b;
    }

    /** The named bitmap, if any. */
    public synchronized Optional<Bitmap> find(String name) {
        for (Bitmap b : bitmaps) {
            if (name.equals(b.nameOrNull())) {
                return Optional.of(b);
            }
        }
        return Optional.empty();
    }

    /** Every bitmap, anonymous ones too, newest first. */
    public synchronized List<Bitmap> list() {
        return List.copyOf(bitmaps);
    }

    /** Drops a bitmap (QEMU's {@code bdrv_release_dirty_bitmap}). */
    public synchronized void release(Bitmap b) {
        bitmaps.remove(b);
        any = !bitmaps.isEmpty();
    }

    /** QEMU's {@code bdrv_dirty_bitmap_create_successor}. */
    synchronized void createSuccessor(Bitmap b) {
        if (b.operationBusy()) { // a job's own claim does not stop it
            throw new CommandException("Bitmap '" + b.nameOrNull() + "' is currently in use by another operation and cannot be used");
        }
        if (b.successor() != null) {
            throw new CommandException("Cannot create a successor for a bitmap that already has one");
        }
        Bitmap child = create(null, b.granularityBits(), b.size());
        b.installSuccessor(child);
    }

    /** QEMU's {@code bdrv_dirty_bitmap_abdicate}: the successor takes the bitmap's place. */
    synchronized void abdicate(Bitmap b) {
        if (b.successor() == null) {
            throw new CommandException("Cannot relinquish control if there's no successor present");
        }
        b.yieldToSuccessor();
        release(b);
    }

    /** QEMU's {@code bdrv_reclaim_dirty_bitmap}: the successor's bits go back into the bitmap. */
    synchronized void reclaim(Bitmap b) {
        Bitmap s = b.successor();
        if (s == null) {
            throw new CommandException("Cannot reclaim a successor when none is present");
        }
        b.takeBackSuccessor();
        release(s);
    }
}
