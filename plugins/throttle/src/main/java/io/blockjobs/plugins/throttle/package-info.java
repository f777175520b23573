/**
 * The {@code throttle} filter driver (QEMU's {@code block/throttle.c}), contributed by a plugin
 * to show that plugins can add block drivers: it needs nothing but the SDK.
 */
package io.blockjobs.plugins.throttle;
