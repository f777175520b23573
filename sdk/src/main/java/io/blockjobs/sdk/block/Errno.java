package io.blockjobs.sdk.block;

/**
 * The error numbers block requests fail with, as POSIX and QEMU name them. Policies
 * ({@code on-error enospc}), NBD replies and event payloads switch on these codes, never on a
 * message's text.
 */
public enum Errno {
    /** Operation not permitted. */
    EPERM(1, "Operation not permitted"),
    /** Input/output error: the default for a failed request. */
    EIO(5, "Input/output error"),
    /** Out of memory. */
    ENOMEM(12, "Cannot allocate memory"),
    /** Permission denied. */
    EACCES(13, "Permission denied"),
    /** Invalid argument (a request the node cannot take, such as one past its end). */
    EINVAL(22, "Invalid argument"),
    /** The file grew beyond what the file system allows. */
    EFBIG(27, "File too large"),
    /** No space left on device: {@code on-error enospc} stops on this one. */
    ENOSPC(28, "No space left on device"),
    /** Read-only file system (or node). */
    EROFS(30, "Read-only file system"),
    /** The operation is not supported by the node. */
    ENOTSUP(95, "Operation not supported"),
    /** No medium found: a node whose driver gave up (QEMU's {@code bs->drv = NULL}, as after a fatal qcow2 corruption). */
    ENOMEDIUM(123, "No medium found"),
    /** The request was cancelled. */
    ECANCELED(125, "Operation canceled"),
    /** The peer (an NBD server, a cluster) went away. */
    ESHUTDOWN(108, "Cannot send after transport endpoint shutdown"),
    /** The request took longer than it was allowed (copy-before-write's {@code cbw-timeout}). */
    ETIMEDOUT(110, "Connection timed out");

    private final int code;
    private final String message;

    Errno(int code, String message) {
        this.code = code;
        this.message = message;
    }

    /** The number, as Linux on x86-64 gives it. */
    public int code() {
        return code;
    }

    /** The text {@code strerror} gives, as QEMU prints it. */
    public String message() {
        return message;
    }

    /** The errno with this number, or {@link #EIO} for one this enum does not name. */
    public static Errno ofCode(int code) {
        for (Errno e : values()) {
            if (e.code == code) {
                return e;
            }
        }
        return EIO;
    }

    /**
     * The errno an I/O failure carries: its own for a {@link BlockIoException}, else
     * {@link #EIO}.
     */
    public static Errno of(Throwable error) {
        for (Throwable t = error; t != null; t = t.getCause()) {
            if (t instanceof BlockIoException b) {
                return b.errno();
            }
        }
        return EIO;
    }
}
