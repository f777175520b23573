package io.blockjobs.sdk.job;

/**
 * Where a converging job (mirror, active commit) stands, as {@code query-block-jobs} shows it.
 *
 * @param dirtyBytes     bytes of the source that differ from the target, or may: dirty and not
 *                       copied yet, or being copied now ({@code x-dirty-bytes})
 * @param activelySynced whether every write that clients complete is on the target as well
 *                       (mirror's {@code copy-mode: write-blocking} once in sync; QEMU 8.2's
 *                       {@code actively-synced})
 */
public record Convergence(long dirtyBytes, boolean activelySynced) {

    /** Checks the count. */
    public Convergence {
        if (dirtyBytes < 0) {
            throw new IllegalArgumentException("negative dirty bytes: " + dirtyBytes);
        }
    }
}
