package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;

/**
 * An image that cannot be used as asked; the message names the file and the problem. Its errno
 * is {@link Errno#EIO} unless given.
 */
public class ImageException extends BlockIoException {
    private static final long serialVersionUID = 1L;

    public ImageException(String file, String problem) {
        super(Errno.EIO, file + ": " + problem);
    }

    public ImageException(String file, String problem, Throwable cause) {
        super(Errno.EIO, file + ": " + problem, cause);
    }

    public ImageException(Errno errno, String file, String problem) {
        super(errno, file + ": " + problem);
    }
}
