package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.util.Set;
import java.io.IOException;
import java.nio.ByteBuffer;

/** The {@code raw} format driver: the guest's disk is the file, byte for byte. */
public final class RawNode implements DriverNode, Resizable {

    private final BlockNode file;

    public RawNode(BlockNode file) {
        this.file = file;
    }

    public BlockNode file() {
        return file;
    }

    @Override
    public Limits limits() {
        return new Limits(1, 0, clusterSize());
    }

    @Override
    public String driver() {
        return "raw";
    }

    @Override
    public String filename() {
        return QemuJson.overChild("raw", file.filename());
    }

    @Override
    public long size() throws IOException {
        return file.size();
    }

    @Override
    public boolean isReadOnly() {
        return file.isReadOnly();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        checkRange(offset, dst.remaining());
        file.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        checkRange(offset, src.remaining());
        file.write(offset, src);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        checkRange(offset, src.remaining());
        file.write(offset, src, flags);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        checkRange(offset, length);
        file.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        checkRange(offset, length);
        file.writeZeroes(offset, length, flags);
    }

    /** Reopens the file for writing (in the graph, the graph reopens the file node first). */
    @Override
    public void reopenReadWrite() throws IOException {
        if (file instanceof DriverNode standalone) {
            standalone.reopenReadWrite();
        }
    }

    /** The disk is the file: its file takes the new size. */
    @Override
    public void truncate(long size) throws IOException {
        if (!(file instanceof Resizable r)) {
            throw new ImageException(Errno.ENOTSUP, filename(), "the file beneath cannot be resized");
        }
        r.truncate(size);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        checkRange(offset, length);
        file.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        file.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        long size = size();
        if (offset < 0 || offset >= size) {
            throw new ImageException(Errno.EINVAL, filename(), "block status at " + offset + " is past the end of the "
                    + size + "-byte image");
        }
        // As QEMU's BDRV_BLOCK_RAW: the file says what is data and what is a hole (zeroes)
        BlockStatus below = file.blockStatus(offset, Math.min(maxLength, size - offset));
        return new BlockStatus(offset, below.length(), true, below.zero(), 0);
    }

    @Override
    public void close() throws IOException {
        file.close();
    }

    /**
     * Refuses negative ranges only: without QEMU's {@code size} option (which blockjobd does not
     * take) QEMU's raw passes every request through, so a format above it (qcow2 whose file is a
     * raw node) grows the file as it allocates. Users' requests are kept inside the disk where
     * they attach (the graph's root edges).
     */
    private void checkRange(long offset, long length) throws IOException {
        if (offset < 0 || length < 0 || offset + length < 0) {
            throw new ImageException(Errno.EINVAL, filename(), "invalid request [" + offset + ", +" + length + ")");
        }
    }

    @Override
    public String toString() {
        return "raw:" + file.filename();
    }
}
