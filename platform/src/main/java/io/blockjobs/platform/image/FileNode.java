package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/**
 * The {@code file} protocol driver: positional I/O on a host file, holding QEMU-compatible
 * image locks while open. Reads past the end of the file return zeroes, as in QEMU.
 */
public final class FileNode implements BlockNode {

    /** Shared read-only zeroes for write-zeroes and padding; never written to. */
    static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(1 << 20).asReadOnlyBuffer();

    private final Path path;
    private volatile boolean readOnly;
    private final FileLocks.Claim claim;
    private final FileChannel channel;

    private FileNode(Path path, boolean readOnly, FileLocks.Claim claim) {
        this.path = path;
        this.readOnly = readOnly;
        this.claim = claim;
        this.channel = claim.channel();
    }

    /**
     * Opens {@code path}, read-only or read-write, taking the locks QEMU would take.
     *
     * @throws ImageLockedException if another user holds a conflicting lock
     */
    public static FileNode open(Path path, boolean readWrite) throws IOException {
        var claim = FileLocks.claim(path, readWrite ? FileLocks.READ_WRITE : FileLocks.READ, FileLocks.UNSHARED);
        return new FileNode(path, !readWrite, claim);
    }

    public Path path() {
        return path;
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
    public void read(long offset, ByteBuffer dst) throws IOException {
        checkOffset(offset);
        long pos = offset;
        while (dst.hasRemaining()) {
            int n = channel.read(dst, pos);
            if (n < 0) { // past the end of the file: zeroes
                while (dst.hasRemaining()) {
                    dst.put((byte) 0);
                }
                return;
            }
            pos += n;
        }
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        checkWritable();
        checkOffset(offset);
        long pos = offset;
        while (src.hasRemaining()) {
            pos += channel.write(src, pos);
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        checkWritable();
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer zero = ZEROES.duplicate();
            zero.limit((int) Math.min(zero.capacity(), end - pos));
            write(pos, zero);
            pos += zero.limit();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        checkWritable();
        claim.punchHole(offset, length, path.toString()); // advisory: may do nothing
    }

    @Override
    public void flush() throws IOException {
        if (!readOnly) {
            channel.force(false);
        }
    }

    /** Reopens the file for writing, taking the write locks QEMU would take (QEMU's reopen). */
    public void reopenReadWrite() throws IOException {
        if (readOnly) {
            claim.change(FileLocks.READ_WRITE, FileLocks.UNSHARED, path.toString());
            readOnly = false;
        }
    }

    /** Sets the file's length. */
    public void truncate(long length) throws IOException {
        checkWritable();
        if (length < channel.size()) {
            channel.truncate(length);
        } else if (length > channel.size()) {
            channel.write(ByteBuffer.allocate(1), length - 1); // sparse extension
        }
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return new BlockStatus(offset, maxLength, true, false, 0);
    }

    @Override
    public void close() throws IOException {
        claim.release();
    }

    private void checkOffset(long offset) throws IOException {
        if (offset < 0) {
            throw new ImageException(path.toString(), "negative offset " + offset + " (damaged metadata?)");
        }
    }

    private void checkWritable() throws IOException {
        if (readOnly) {
            throw new ImageException(path.toString(), "is open read-only");
        }
    }

    @Override
    public String toString() {
        return "file:" + path;
    }
}
