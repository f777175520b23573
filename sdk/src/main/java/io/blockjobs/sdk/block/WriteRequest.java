package io.blockjobs.sdk.block;

import java.util.Set;

/**
 * A request that changes a node's contents, as a {@link WriteHook} sees it.
 *
 * @param kind   what the request does
 * @param offset the first byte it changes
 * @param length how many bytes it changes
 * @param flags  its flags
 */
public record WriteRequest(Kind kind, long offset, long length, Set<RequestFlag> flags) {

    /** The kinds of request that change data. */
    public enum Kind {
        /** A write of data. */
        WRITE,
        /** A write-zeroes. */
        WRITE_ZEROES,
        /** A discard (trim). */
        DISCARD
    }

    /** Copies the flags. */
    public WriteRequest {
        flags = Set.copyOf(flags);
    }

    /** The first byte after the request. */
    public long end() {
        return offset + length;
    }
}
