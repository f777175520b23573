/**
 * Throttling: QEMU's leaky buckets ({@code util/throttle.c}) and the {@code throttle-group}
 * objects the {@code throttle} filter admits its requests through
 * ({@code block/throttle-groups.c}).
 */
package io.blockjobs.platform.throttle;
