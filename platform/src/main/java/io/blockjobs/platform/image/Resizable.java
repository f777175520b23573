package io.blockjobs.platform.image;

import java.io.IOException;

/**
 * A node whose size can change (QEMU's {@code bdrv_co_truncate}, without preallocation): the
 * {@code file}, {@code raw} and {@code qcow2} drivers, and the graph's nodes that pass it on.
 */
public interface Resizable {
    /**
     * Makes the node {@code size} bytes long. Growing adds space that reads as zeroes; shrinking
     * drops what lay past the new end.
     *
     * @throws IOException with a message QMP shows as it is ({@code BlockIoException})
     */
    void truncate(long size) throws IOException;
}
