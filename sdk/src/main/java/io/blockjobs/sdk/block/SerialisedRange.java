package io.blockjobs.sdk.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Set;

/**
 * A range of a node held by a serialising request (QEMU's {@code bdrv_make_request_serialising}):
 * requests that overlap it and were in flight when it was taken have finished, and new
 * overlapping requests wait until it is closed. I/O made through this handle does not wait for
 * the range itself. Close it on any thread, once.
 */
public interface SerialisedRange extends AutoCloseable {

    /** The first byte held. */
    long offset();

    /** How many bytes are held. */
    long length();

    /** Reads from the node inside the range. */
    void read(long offset, ByteBuffer dst) throws IOException;

    /** Writes to the node inside the range (the node's write hooks run as for any write). */
    void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException;

    /** Lets waiting requests go on. */
    @Override
    void close();
}
