package io.blockjobs.plugins.backup;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.OptionSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;

/**
 * QEMU's {@code snapshot-access} driver ({@code file}: a {@code copy-before-write} node): reads the
 * disk as it was when that filter was inserted, for an NBD export a pull-mode backup client
 * copies from. Writes are refused ({@code ENOTSUP}, as QEMU); a discard tells the filter the
 * client is done with a range, which is then neither copied nor readable any more.
 */
final class SnapshotAccess implements BlockDriver {

    @Override
    public String name() {
        return "snapshot-access";
    }

    @Override
    public List<OptionSpec> options() {
        return List.of(OptionSpec.required("file", "BlockdevRef"));
    }

    @Override
    public DriverNode open(DriverContext ctx) {
        BlockNode file = ctx.child("file", ChildRole.DATA);
        return new Node(file);
    }

    /** One open snapshot-access node. */
    static final class Node implements DriverNode {
        private final BlockNode file;

        Node(BlockNode file) {
            this.file = file;
        }

        /** The filter beneath, looked up per request as QEMU asks its child for the snapshot API. */
        private CopyBeforeWrite.Node cbw() throws IOException {
            return CopyBeforeWrite.lookup(file.nodeName()).orElseThrow(() -> new BlockIoException(Errno.ENOTSUP,
                    "'" + file.nodeName() + "' is not a copy-before-write node: it has no snapshot to read"));
        }

        @Override
        public String driver() {
            return "snapshot-access";
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
        public void read(long offset, ByteBuffer dst) throws IOException {
            cbw().snapshotRead(offset, dst);
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            throw new BlockIoException(Errno.ENOTSUP, "snapshot-access nodes cannot be written");
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
            throw new BlockIoException(Errno.ENOTSUP, "snapshot-access nodes cannot be written");
        }

        @Override
        public void discard(long offset, long length) throws IOException {
            cbw().snapshotDiscard(offset, length);
        }

        @Override
        public void flush() {
            // nothing is written through a snapshot
        }

        @Override
        public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
            return cbw().snapshotStatus(offset, maxLength);
        }

        @Override
        public void close() {
            // the graph closes the child
        }
    }
}
