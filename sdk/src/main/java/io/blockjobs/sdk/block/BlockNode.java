package io.blockjobs.sdk.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;

/**
 * A node of the block graph as its users see it: a protocol node (a file), a format node (an
 * image such as {@code raw} or {@code qcow2}) with, possibly, a backing node beneath it, or a
 * filter. The nodes the platform hands to jobs and drivers are the graph's request entry
 * points: every request through them is tracked, passes the node's write hooks and is counted
 * in its statistics.
 *
 * <p>Every I/O method may be called from many threads at once; requests that overlap are not
 * ordered against each other unless one is serialising ({@link #serialise}). A request that
 * returns normally has been applied; it is durable after the next {@link #flush()} (or at once
 * with {@link RequestFlag#FUA}). Errors are {@link IOException}s whose message names the image
 * and the problem; a {@link BlockIoException} carries the {@link Errno}.
 */
public interface BlockNode extends AutoCloseable {

    /** The driver name as QEMU spells it: {@code file}, {@code raw}, {@code qcow2}. */
    String driver();

    /** The file name of the image (for a format node, its file's name). */
    String filename();

    /**
     * The node's name in the graph (QEMU's {@code node-name}, or one the graph generated); nodes
     * outside the graph answer their file name.
     */
    default String nodeName() {
        return filename();
    }

    /** The virtual size in bytes: what a guest sees as the disk's size. */
    long size() throws IOException;

    /** Whether the node was opened read-only; writes then fail. */
    boolean isReadOnly();

    /**
     * The allocation unit of this node in bytes (a qcow2 cluster); jobs copy in multiples of
     * it. Nodes without one answer 64 KiB.
     */
    default int clusterSize() {
        return 64 * 1024;
    }

    /**
     * Whether writes with {@link RequestFlag#WRITE_COMPRESSED} are stored compressed (qcow2 can;
     * raw and files cannot): backup's {@code compress} needs a target that can.
     */
    default boolean supportsCompressedWrites() {
        return false;
    }

    /** The backing node, if this node is an overlay. */
    default Optional<BlockNode> backing() {
        return Optional.empty();
    }

    /**
     * Reads {@code dst.remaining()} bytes starting at {@code offset} into {@code dst}, advancing
     * its position. Ranges that no layer of the chain defines read as zeroes.
     *
     * @throws IOException if the range is past the end of the node or the image cannot be read
     */
    void read(long offset, ByteBuffer dst) throws IOException;

    /** Writes {@code src.remaining()} bytes starting at {@code offset}, advancing its position. */
    void write(long offset, ByteBuffer src) throws IOException;

    /**
     * Writes with request flags: {@link RequestFlag#FUA} makes the data durable before the call
     * returns. Nodes that cannot do better write, then flush.
     */
    default void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        write(offset, src);
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    /**
     * Makes a range read as zeroes, without writing zero buffers where the format can record
     * it. {@code mayUnmap} lets the node release the storage behind the range.
     */
    void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException;

    /**
     * Makes a range read as zeroes, with request flags: {@link RequestFlag#MAY_UNMAP} as above,
     * {@link RequestFlag#FUA}, and {@link RequestFlag#NO_FALLBACK}, which fails the request with
     * {@link Errno#ENOTSUP} rather than writing zero buffers (this default cannot tell, so it
     * refuses every such request).
     */
    default void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            throw new BlockIoException(Errno.ENOTSUP, filename() + ": cannot write zeroes without a fallback");
        }
        writeZeroes(offset, length, flags.contains(RequestFlag.MAY_UNMAP));
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    /**
     * Tells the node the range's contents are no longer needed, as QEMU's discard does: the
     * node may release its storage; what the range then reads is the format's choice (for
     * qcow2 v3: zeroes).
     */
    void discard(long offset, long length) throws IOException;

    /**
     * Copy-on-read: writes {@code src} at {@code offset} only into the clusters of the range that
     * this layer does not hold yet, each checked and written atomically against other writes,
     * so that data copied up from a backing file never overwrites newer data. Ranges must be
     * cluster-aligned except at the end of the node.
     *
     * @throws UnsupportedOperationException if the format cannot tell (raw)
     */
    default void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        throw new UnsupportedOperationException(driver() + " has no allocation to fill");
    }

    /**
     * Makes the whole clusters of the range read from the backing file again and releases their
     * storage (a space-reclaiming commit empties the layers it has copied down this way).
     *
     * @throws UnsupportedOperationException if the format has no backing files (raw)
     */
    default void unallocate(long offset, long length) throws IOException {
        throw new UnsupportedOperationException(driver() + " cannot unallocate");
    }

    /** Makes every request that returned before this call durable. */
    void flush() throws IOException;

    /**
     * Takes a serialising request over a range (QEMU's {@code bdrv_make_request_serialising}):
     * waits for the overlapping requests in flight, then holds new overlapping requests off until
     * the returned range is closed. Copy-before-write, mirror operations and checkpoints use it so
     * that "the data as it was" is exact.
     *
     * @throws UnsupportedOperationException on nodes outside the graph
     */
    default SerialisedRange serialise(long offset, long length) throws IOException {
        throw new UnsupportedOperationException(driver() + " nodes outside the graph cannot serialise requests");
    }

    /**
     * Adds a hook run around every write, write-zeroes and discard that reaches this node,
     * whatever path it came by (see {@link WriteHook}). A driver uses it on a node beneath its
     * own, as the secondary side of block replication copies the data a write is about to
     * overwrite; it removes the hook with {@link #removeWriteHook} before it closes.
     *
     * @throws UnsupportedOperationException on nodes outside the graph
     */
    default void addWriteHook(WriteHook hook) {
        throw new UnsupportedOperationException(driver() + " nodes outside the graph take no write hooks");
    }

    /** Removes a hook {@link #addWriteHook} added; nothing happens if it is not there. */
    default void removeWriteHook(WriteHook hook) {
    }

    /**
     * The status of this layer alone from {@code offset} on, over at most {@code maxLength}
     * bytes (and never past {@link #size()}).
     */
    BlockStatus blockStatus(long offset, long maxLength) throws IOException;

    /**
     * The status of the whole chain below and including this node from {@code offset} on:
     * which layer defines the data, as {@code qemu-img map} reports it.
     */
    default BlockStatus chainStatus(long offset, long maxLength) throws IOException {
        BlockNode node = this;
        int depth = 0;
        long length = maxLength;
        while (true) {
            BlockStatus status = node.blockStatus(offset, length);
            if (status.allocated()) {
                return new BlockStatus(offset, status.length(), true, status.zero(), depth);
            }
            length = status.length();
            Optional<BlockNode> backing = node.backing();
            depth++;
            if (backing.isEmpty()) {
                return new BlockStatus(offset, length, false, true, depth);
            }
            node = backing.get();
            long backingSize = node.size();
            if (offset >= backingSize) {
                return new BlockStatus(offset, length, false, true, depth);
            }
            length = Math.min(length, backingSize - offset);
        }
    }

    /** Flushes and releases the node (and the locks it holds); it is unusable afterwards. */
    @Override
    void close() throws IOException;
}
