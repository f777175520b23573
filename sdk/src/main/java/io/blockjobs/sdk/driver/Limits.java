package io.blockjobs.sdk.driver;

/**
 * A node's request limits, as QEMU's {@code BlockLimits}.
 *
 * @param requestAlignment every request's offset and length are multiples of it (a power of
 *                         two; 512 or 4096 for a file opened with {@code cache.direct=on})
 * @param maxTransfer      the largest request in bytes, 0 for no limit (a multiple of the
 *                         alignment)
 * @param clusterSize      the allocation unit jobs copy in
 */
public record Limits(int requestAlignment, int maxTransfer, int clusterSize) {

    /** Checks the invariants. */
    public Limits {
        if (requestAlignment <= 0 || Integer.bitCount(requestAlignment) != 1) {
            throw new IllegalArgumentException("request alignment " + requestAlignment + " is not a power of two");
        }
        if (maxTransfer < 0 || maxTransfer % requestAlignment != 0) {
            throw new IllegalArgumentException("max transfer " + maxTransfer + " is not a multiple of " + requestAlignment);
        }
    }
}
