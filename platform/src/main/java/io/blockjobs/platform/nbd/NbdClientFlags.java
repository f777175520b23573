package io.blockjobs.platform.nbd;

/**
 * The client's answer to the server's greeting, the first thing it sends: 32 bits of
 * {@code NBD_FLAG_C_*} ({@code Nbd.FLAG_FIXED_NEWSTYLE}, {@code Nbd.FLAG_NO_ZEROES}). Read by
 * {@link NbdOptionDecoder}, written by {@link NbdOptionEncoder}.
 */
record NbdClientFlags(int flags) {

    /** Whether {@code flag} is set. */
    boolean has(int flag) {
        return (flags & flag) != 0;
    }
}
