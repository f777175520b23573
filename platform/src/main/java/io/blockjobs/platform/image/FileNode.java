package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The {@code file} protocol driver: positional I/O on a host file, holding QEMU-compatible
 * image locks while open. Reads past the end of the file return zeroes, as in QEMU.
 *
 * <p>With {@code cache.direct=on} requests bypass the page cache ({@code O_DIRECT}): the node's
 * request alignment is then the file system's block size, and the graph pads every request to it.
 */
public final class FileNode implements DriverNode, Resizable, ReadOnlyReopen {

    /** Shared read-only zeroes for write-zeroes and padding; aligned for direct I/O; never written to. */
    static final ByteBuffer ZEROES = ByteBuffer.allocateDirect((1 << 20) + 65536).alignedSlice(65536)
            .limit(1 << 20).slice().asReadOnlyBuffer();

    /**
     * How a file is opened ({@code BlockdevOptionsFile} and the generic node options).
     *
     * @param readWrite    open for writing
     * @param autoReadOnly fall back to read-only if the file cannot be written
     * @param direct       {@code cache.direct}: bypass the page cache
     * @param locking      {@code locking}: take QEMU's image locks ({@code auto}/{@code on}) or not
     * @param forceShare   share every permission with other users (read-only opens only)
     */
    public record Mode(boolean readWrite, boolean autoReadOnly, boolean direct, boolean locking, boolean forceShare) {
        /** A plain open, as {@code qemu-img} does one. */
        public static Mode of(boolean readWrite) {
            return new Mode(readWrite, false, false, true, false);
        }
    }

    private final Path path;
    private final Mode mode;
    private volatile boolean readOnly;
    private final FileLocks.Claim claim;
    private final FileChannel channel;
    private final int alignment;
    /**
     * Taken around a write through the page cache. The kernel lets one buffered write into a file
     * at a time (the inode's lock) and makes the others spin for it: on a 2-core machine a mirror's
     * waiting writers burnt as much CPU as the copying one. Parked here, they leave it to the reads.
     */
    private final ReentrantLock bufferedWrites = new ReentrantLock();

    private FileNode(Path path, Mode mode, boolean readOnly, FileLocks.Claim claim, FileChannel channel, int alignment) {
        this.path = path;
        this.mode = mode;
        this.readOnly = readOnly;
        this.claim = claim;
        this.channel = channel;
        this.alignment = alignment;
    }

    /**
     * Opens {@code path}, read-only or read-write, taking the locks QEMU would take.
     *
     * @throws ImageLockedException if another user holds a conflicting lock
     */
    public static FileNode open(Path path, boolean readWrite) throws IOException {
        return open(path, Mode.of(readWrite));
    }

    /** Opens {@code path} as {@code mode} says. */
    public static FileNode open(Path path, Mode mode) throws IOException {
        boolean write = mode.readWrite();
        if (write && mode.autoReadOnly() && !Files.isWritable(path) && Files.exists(path)) {
            write = false; // auto-read-only: a file we may not write opens read-only
        }
        Set<FileLocks.Perm> held = !mode.locking() ? Set.of() : write ? FileLocks.READ_WRITE : FileLocks.READ;
        Set<FileLocks.Perm> unshared = !mode.locking() || mode.forceShare() ? Set.of() : FileLocks.UNSHARED;
        FileLocks.Claim claim;
        try {
            claim = FileLocks.claim(path, held, unshared);
        } catch (ImageException e) {
            if (write && mode.autoReadOnly() && e.errno() == Errno.EACCES) {
                return open(path, new Mode(false, false, mode.direct(), mode.locking(), mode.forceShare()));
            }
            throw e;
        }
        try {
            FileChannel channel = claim.channel();
            int alignment = 1;
            if (mode.direct()) {
                channel = claim.directChannel(path);
                alignment = (int) Math.max(512, Files.getFileStore(path).getBlockSize());
            }
            return new FileNode(path, mode, !write, claim, channel, alignment);
        } catch (IOException | RuntimeException e) {
            claim.release();
            throw new ImageException(path.toString(), "cannot open with cache.direct=on: " + e.getMessage(), e);
        }
    }

    public Path path() {
        return path;
    }

    /** Whether the node bypasses the page cache. */
    public boolean direct() {
        return mode.direct();
    }

    @Override
    public String driver() {
        return "file";
    }

    @Override
    public String filename() {
        return path.toString();
    }

    @Override
    public long size() throws IOException {
        return channel.size();
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    @Override
    public Limits limits() {
        return new Limits(alignment, 0, clusterSize());
    }

    /**
     * Whether {@code O_DIRECT} I/O on {@code b} goes through a bounce buffer: a heap buffer (the
     * JDK would bounce it through a temporary buffer of its own) or a direct one whose position
     * is not aligned.
     */
    private boolean misaligned(ByteBuffer b) {
        return alignment > 1 && (!b.isDirect() || b.alignmentOffset(b.position(), alignment) != 0);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        checkOffset(offset);
        if (misaligned(dst)) {
            ByteBuffer bounce = BounceBuffers.take(dst.remaining(), alignment);
            try {
                read(offset, bounce);
                dst.put(bounce.flip());
            } finally {
                BounceBuffers.give(bounce);
            }
            return;
        }
        long pos = offset;
        try {
            while (dst.hasRemaining()) {
                int wanted = dst.remaining();
                int n = channel.read(dst, pos);
                // A short read at the end of the file: with O_DIRECT the next read would start
                // unaligned, so the rest is filled here.
                if (n < 0 || (n < wanted && alignment > 1 && pos + n >= channel.size())) {
                    fillZeroes(dst); // past the end of the file
                    return;
                }
                pos += n;
            }
        } catch (IOException e) {
            throw failure("read", offset, e);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        checkWritable();
        checkOffset(offset);
        if (misaligned(src)) {
            ByteBuffer bounce = BounceBuffers.take(src.remaining(), alignment);
            try {
                bounce.put(src).flip();
                write(offset, bounce, flags);
            } finally {
                BounceBuffers.give(bounce);
            }
            return;
        }
        try {
            if (mode.direct()) {
                writeFully(offset, src);
            } else {
                bufferedWrites.lock();
                try {
                    writeFully(offset, src);
                } finally {
                    bufferedWrites.unlock();
                }
            }
            if (flags.contains(RequestFlag.FUA)) {
                channel.force(false);
            }
        } catch (IOException e) {
            throw failure("write", offset, e);
        }
    }

    private void writeFully(long offset, ByteBuffer src) throws IOException {
        long pos = offset;
        while (src.hasRemaining()) {
            pos += channel.write(src, pos);
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? EnumSet.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        checkWritable();
        // As QEMU's file-posix: an unmapping write-zeroes punches a hole (reads zeroes after).
        if (flags.contains(RequestFlag.MAY_UNMAP) && offset + length <= channel.size()
                && claim.punchHole(offset, length)) {
            return;
        }
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            throw new BlockIoException(Errno.ENOTSUP, path + ": cannot write zeroes without writing zero buffers");
        }
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer zero = ZEROES.duplicate();
            zero.limit((int) Math.min(zero.capacity(), end - pos));
            write(pos, zero, RequestFlag.NONE);
            pos += zero.limit();
        }
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        checkWritable();
        claim.punchHole(offset, length); // advisory: may do nothing
    }

    @Override
    public void flush() throws IOException {
        if (!readOnly) {
            try {
                channel.force(false);
            } catch (IOException e) {
                throw failure("flush", 0, e);
            }
        }
    }

    /** Reopens the file for writing, taking the write locks QEMU would take (QEMU's reopen). */
    @Override
    public void reopenReadWrite() throws IOException {
        if (readOnly) {
            if (mode.locking()) {
                claim.change(FileLocks.READ_WRITE, mode.forceShare() ? Set.of() : FileLocks.UNSHARED, path.toString());
            }
            readOnly = false;
        }
    }

    /**
     * Reopens the file read-only: flushed, then only the reader's locks (QEMU's read-only
     * holder still refuses to share {@code write} and {@code resize}).
     */
    @Override
    public void reopenReadOnly() throws IOException {
        if (!readOnly) {
            flush();
            if (mode.locking()) {
                claim.change(FileLocks.READ, mode.forceShare() ? Set.of() : FileLocks.UNSHARED, path.toString());
            }
            readOnly = true;
        }
    }

    /** Sets the file's length (sparse when it grows). */
    @Override
    public void truncate(long length) throws IOException {
        checkWritable();
        if (length < channel.size()) {
            channel.truncate(length);
        } else if (length > channel.size()) {
            claim.channel().write(ByteBuffer.allocate(1), length - 1); // sparse extension
        }
    }

    /**
     * QEMU's {@code raw_co_block_status}: a hole of a sparse file reads as zeroes, the rest as
     * data, as {@code lseek(SEEK_DATA / SEEK_HOLE)} finds them; where the file system cannot say,
     * everything is data.
     */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        long data = claim.nextData(offset);
        if (data == NativeFile.NO_DATA) {
            return new BlockStatus(offset, maxLength, true, true, 0); // a trailing hole
        }
        if (data > offset) {
            return new BlockStatus(offset, Math.min(maxLength, data - offset), true, true, 0);
        }
        long hole = data == offset ? claim.nextHole(offset) : NativeFile.UNKNOWN;
        long length = hole > offset ? Math.min(maxLength, hole - offset) : maxLength;
        return new BlockStatus(offset, length, true, false, 0);
    }

    @Override
    public void close() throws IOException {
        claim.release();
    }

    private static void fillZeroes(ByteBuffer dst) {
        ByteBuffer zero = ZEROES.duplicate();
        while (dst.hasRemaining()) {
            zero.clear().limit(Math.min(zero.capacity(), dst.remaining()));
            dst.put(zero);
        }
    }

    /** An I/O failure with its errno: the JDK reports the OS error only in the message. */
    private IOException failure(String what, long offset, IOException e) {
        if (e instanceof BlockIoException) {
            return e;
        }
        String m = String.valueOf(e.getMessage());
        Errno errno = m.contains("No space left") ? Errno.ENOSPC
                : m.contains("Disk quota exceeded") ? Errno.ENOSPC
                : m.contains("File too large") ? Errno.EFBIG
                : m.contains("Read-only file system") ? Errno.EROFS
                : m.contains("Invalid argument") ? Errno.EINVAL
                : Errno.EIO;
        return new BlockIoException(errno, path + ": " + what + " at offset " + offset + " failed: " + errno.message(), e);
    }

    private void checkOffset(long offset) throws IOException {
        if (offset < 0) {
            throw new BlockIoException(Errno.EINVAL, path + ": negative offset " + offset + " (damaged metadata?)");
        }
    }

    private void checkWritable() throws IOException {
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, path + ": is open read-only");
        }
    }

    @Override
    public String toString() {
        return "file:" + path;
    }
}
