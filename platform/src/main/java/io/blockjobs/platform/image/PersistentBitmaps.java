package io.blockjobs.platform.image;

import java.io.IOException;
import java.util.List;

/**
 * The persistent dirty bitmaps an image format stores: qcow2's bitmaps extension
 * ({@code docs/interop/qcow2.txt}, "Bitmaps extension"). The {@code bitmap} package keeps bitmaps
 * in memory and marks them; the image only loads and stores their bits, as QEMU's
 * {@code block/qcow2-bitmap.c} does. Bits are counted in granules: granule {@code g} covers
 * bytes {@code [g << granularityBits, (g + 1) << granularityBits)} of the virtual disk.
 */
public interface PersistentBitmaps {

    /**
     * Reads the bitmap directory, as QEMU's {@code qcow2_load_dirty_bitmaps}: every bitmap is
     * announced to {@code loader}; the bits of those not in use are then given to the sink it
     * returned. On a read-write image each bitmap loaded consistent is marked in use on disk
     * (and flushed) before this returns, so that a crash from now on leaves it inconsistent. An
     * extension an older program invalidated (its autoclear bit cleared) loads nothing.
     */
    void load(Loader loader) throws IOException;

    /**
     * QEMU's {@code qcow2_co_can_store_new_dirty_bitmap}: whether a new persistent bitmap of this
     * name and granularity could be stored; throws a {@code CommandException} with QEMU's message
     * if not (a version 2 image, too many bitmaps, a name too long, a granularity out of range, a
     * name already stored).
     */
    void checkCanStore(String name, int granularityBits);

    /**
     * Removes a stored bitmap now, its clusters freed (QEMU's
     * {@code qcow2_co_remove_persistent_dirty_bitmap}); nothing if none of that name is stored.
     */
    void remove(String name) throws IOException;

    /**
     * Stores these bitmaps with in-use clear, replacing stored ones of the same name and freeing
     * their old clusters, as QEMU's {@code qcow2_store_persistent_dirty_bitmaps} on a clean close
     * or {@code blockdev-del}. Stored bitmaps not listed (those loaded inconsistent) stay as they
     * are, in use.
     */
    void store(List<ToStore> bitmaps) throws IOException;

    /** Receives the bitmaps {@link #load} finds. */
    interface Loader {
        /**
         * One bitmap of the directory.
         *
         * @param inUse its in-use flag was set on disk: it is inconsistent and its bits are not read
         * @param auto  its auto flag: the bitmap records writes (is enabled)
         * @return where its set granules go (unused when {@code inUse})
         */
        RunSink bitmap(String name, int granularityBits, boolean inUse, boolean auto) throws IOException;
    }

    /** Runs of set granules, in increasing order. */
    @FunctionalInterface
    interface RunSink {
        /** Granules {@code [first, first + count)} are set. */
        void run(long first, long count) throws IOException;
    }

    /** A bitmap's set granules, read back run by run. */
    @FunctionalInterface
    interface RunSource {
        /** Calls {@code sink} for every run of set granules within {@code [from, to)}, in order, clipped to it. */
        void forEachRun(long from, long to, RunSink sink) throws IOException;
    }

    /**
     * One bitmap to store.
     *
     * @param auto whether it records writes (QEMU's {@code BME_FLAG_AUTO})
     */
    record ToStore(String name, int granularityBits, boolean auto, RunSource bits) {
    }
}
