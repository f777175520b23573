package io.blockjobs.platform.image;

/** Another process, or another node of this one, holds a conflicting lock on the image. */
public final class ImageLockedException extends ImageException {
    private static final long serialVersionUID = 1L;

    public ImageLockedException(String file, String problem) {
        super(file, problem);
    }
}
