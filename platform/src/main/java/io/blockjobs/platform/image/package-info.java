/**
 * Format and protocol drivers: {@code file} (positional I/O with QEMU-compatible image locks),
 * {@code raw} and {@code qcow2}; creating images and opening backing chains as QEMU does.
 */
package io.blockjobs.platform.image;
