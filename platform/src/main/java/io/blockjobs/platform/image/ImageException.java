package io.blockjobs.platform.image;

import java.io.IOException;

/** An image that cannot be used as asked; the message names the file and the problem. */
public class ImageException extends IOException {
    private static final long serialVersionUID = 1L;

    public ImageException(String file, String problem) {
        super(file + ": " + problem);
    }

    public ImageException(String file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
