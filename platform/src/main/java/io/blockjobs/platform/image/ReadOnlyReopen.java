package io.blockjobs.platform.image;

import java.io.IOException;

/**
 * A driver that gives something back when its node is reopened read-only ({@code blockdev-reopen}
 * with {@code read-only: true}, QEMU's reopen): a file its write locks, a qcow2 image its pending
 * metadata. Drivers without it hold nothing of the kind; the graph refuses writes to the node.
 */
public interface ReadOnlyReopen {
    /** Called on the main loop, drained, after the node's parents stopped writing. */
    void reopenReadOnly() throws IOException;
}
