package io.blockjobs.platform.image;

/** Another process, or another node of this one, holds a conflicting lock on the image. */
public final class ImageLockedException extends ImageException {
    private static final long serialVersionUID = 1L;

    private final String qemuMessage;

    /**
     * @param qemuMessage what QEMU says for the same conflict in a QMP error, word for word
     *                    ({@code Failed to get "write" lock})
     */
    public ImageLockedException(String file, String problem, String qemuMessage) {
        super(file, problem);
        this.qemuMessage = qemuMessage;
    }

    /** QEMU's words for this conflict, as {@code blockdev-add} reports it. */
    public String qemuMessage() {
        return qemuMessage;
    }
}
