package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.DriverNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A subset of QEMU's {@code blkdebug} filter, for fault tests: requests to the image beneath
 * fail as configured ({@code inject-error}: which kind of request, which sector, which errno,
 * once or always), with the error text QEMU reports for that errno.
 */
public final class BlkdebugNode implements DriverNode {

    /** One {@code inject-error} rule: {@code sector} -1 matches any request. */
    public record Rule(String iotype, long sector, int errno, boolean once) {
    }

    private final BlockNode image;
    private final List<Rule> rules;

    public BlkdebugNode(BlockNode image, List<Rule> rules) {
        this.image = image;
        this.rules = new CopyOnWriteArrayList<>(rules);
    }

    private void inject(String iotype, long offset, long length) throws IOException {
        for (Rule r : rules) {
            boolean kind = r.iotype() == null || r.iotype().equals(iotype);
            boolean where = r.sector() < 0 || (r.sector() * 512 < offset + length && offset < r.sector() * 512 + 512);
            if (kind && where) {
                if (r.once()) {
                    rules.remove(r);
                }
                Errno errno = Errno.ofCode(r.errno());
                throw new BlockIoException(errno, errno.message());
            }
        }
    }

    @Override
    public String driver() {
        return "blkdebug";
    }

    @Override
    public Optional<String> filteredChild() {
        return Optional.of("image");
    }

    @Override
    public String filename() {
        return image.filename();
    }

    @Override
    public long size() throws IOException {
        return image.size();
    }

    @Override
    public boolean isReadOnly() {
        return image.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return image.clusterSize();
    }

    @Override
    public Optional<BlockNode> backing() {
        return image.backing();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        inject("read", offset, dst.remaining());
        image.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        inject("write", offset, src.remaining());
        image.write(offset, src);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        inject("write-zeroes", offset, length);
        image.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        inject("discard", offset, length);
        image.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        inject("flush", 0, 0);
        image.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return image.blockStatus(offset, maxLength);
    }

    @Override
    public void close() {
        // the graph closes the image node
    }
}
