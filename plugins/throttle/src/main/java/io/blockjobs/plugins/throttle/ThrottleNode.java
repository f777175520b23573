package io.blockjobs.plugins.throttle;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import io.blockjobs.sdk.driver.ThrottleGroup;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;

/**
 * A {@code throttle} node: every read, write, write-zeroes and discard first waits for its
 * group to admit it (all but reads count as writes, by their length, as in QEMU), then goes to
 * {@code file} unchanged. Flush and block status are not throttled. A discard the node's
 * {@code discard=ignore} drops never reaches the driver, so it is not throttled either.
 */
final class ThrottleNode implements DriverNode {
    private final BlockNode file;
    private final ThrottleGroup.Member member;

    ThrottleNode(BlockNode file, ThrottleGroup.Member member) {
        this.file = file;
        this.member = member;
    }

    @Override
    public Optional<String> filteredChild() {
        return Optional.of("file");
    }

    @Override
    public Limits limits() {
        return new Limits(1, 0, file.clusterSize());
    }

    @Override
    public String driver() {
        return "throttle";
    }

    @Override
    public String filename() {
        return file.filename();
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
    public int clusterSize() {
        return file.clusterSize();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        member.acquire(false, dst.remaining());
        file.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        member.acquire(true, src.remaining());
        file.write(offset, src);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        member.acquire(true, src.remaining());
        file.write(offset, src, flags);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        member.acquire(true, length);
        file.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        member.acquire(true, length);
        file.writeZeroes(offset, length, flags);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        member.acquire(true, length);
        file.discard(offset, length);
    }

    /** A copy-on-read write-back through this node is a write to QEMU's throttle node too. */
    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        member.acquire(true, src.remaining());
        file.writeUnallocated(offset, src);
    }

    /** A commit emptying layers it copied down writes (discards) through the node. */
    @Override
    public void unallocate(long offset, long length) throws IOException {
        member.acquire(true, length);
        file.unallocate(offset, length);
    }

    @Override
    public void flush() throws IOException {
        file.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return file.blockStatus(offset, maxLength);
    }

    @Override
    public void reopenReadWrite() {
        // nothing of its own: the graph reopens the child
    }

    /** Leaves the group, so that it can be deleted; the graph closes the child. */
    @Override
    public void close() {
        member.close();
    }
}
