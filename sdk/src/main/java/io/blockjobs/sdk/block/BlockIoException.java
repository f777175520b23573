package io.blockjobs.sdk.block;

import java.io.IOException;

/**
 * A block request failed with an {@link Errno}. Drivers throw it so that policies and protocols
 * can tell "no space left" from any other failure without reading the message.
 */
public class BlockIoException extends IOException {
    private static final long serialVersionUID = 1L;

    private final Errno errno;

    /** A failure with {@code errno}; the message names the node and what was being done. */
    public BlockIoException(Errno errno, String message) {
        super(message);
        this.errno = errno;
    }

    /** A failure with {@code errno} caused by {@code cause}. */
    public BlockIoException(Errno errno, String message, Throwable cause) {
        super(message, cause);
        this.errno = errno;
    }

    /** The error number. */
    public Errno errno() {
        return errno;
    }
}
