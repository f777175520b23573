package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;

/**
 * A filter that forwards every request to its one child unchanged: what a job's filter node
 * ({@code commit_top}, {@code mirror_top}, {@code copy-before-write}) does besides the write
 * hooks the graph runs on it. Also the base of filters that change some requests.
 */
class ForwardingFilter implements DriverNode {
    private final String driver;
    private final String childName;
    protected final BlockNode child;

    ForwardingFilter(String driver, String childName, BlockNode child) {
        this.driver = driver;
        this.childName = childName;
        this.child = child;
    }

    @Override
    public Optional<String> filteredChild() {
        return Optional.of(childName);
    }

    @Override
    public Limits limits() {
        return new Limits(1, 0, child.clusterSize());
    }

    @Override
    public String driver() {
        return driver;
    }

    @Override
    public String filename() {
        return child.filename();
    }

    @Override
    public long size() throws IOException {
        return child.size();
    }

    @Override
    public boolean isReadOnly() {
        return child.isReadOnly();
    }

    @Override
    public int clusterSize() {
        return child.clusterSize();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        child.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        child.write(offset, src);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        child.write(offset, src, flags);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        child.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        child.writeZeroes(offset, length, flags);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        child.discard(offset, length);
    }

    @Override
    public void writeUnallocated(long offset, ByteBuffer src) throws IOException {
        child.writeUnallocated(offset, src);
    }

    @Override
    public void unallocate(long offset, long length) throws IOException {
        child.unallocate(offset, length);
    }

    @Override
    public void flush() throws IOException {
        child.flush();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        return child.blockStatus(offset, maxLength);
    }

    @Override
    public void reopenReadWrite() {
        // nothing of its own: the graph reopens the child
    }

    @Override
    public void close() {
        // the graph closes the child
    }
}
