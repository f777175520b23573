package io.blockjobs.platform.image;

/**
 * A user-created secret ({@code object-add qom-type=secret}) as a driver reads it: the
 * {@code rbd} driver's {@code key-secret}.
 */
public interface Secret {
    /** The decoded secret: a copy, to be cleared by the caller once used. */
    byte[] value();
}
