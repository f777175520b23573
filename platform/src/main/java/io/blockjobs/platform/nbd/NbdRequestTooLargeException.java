package io.blockjobs.platform.nbd;

import io.netty.handler.codec.TooLongFrameException;

/**
 * A request announced more data than {@link NbdRequestDecoder} accepts. The decoder has read the
 * header only and discards everything after it, so the connection cannot go on: the handler
 * answers {@link #cookie()} with an error and closes, as QEMU does.
 */
final class NbdRequestTooLargeException extends TooLongFrameException {
    private static final long serialVersionUID = 1L;

    private final int type;
    private final long cookie;
    private final long length;

    NbdRequestTooLargeException(int type, long cookie, long length, int max) {
        super("len (" + length + " ) is larger than max len (" + max + ")"); // QEMU 7.2's words, its space too
        this.type = type;
        this.cookie = cookie;
        this.length = length;
    }

    int type() {
        return type;
    }

    long cookie() {
        return cookie;
    }

    long length() {
        return length;
    }
}
