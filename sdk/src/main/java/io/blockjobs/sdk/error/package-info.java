/** Errors a command or job reports to the client, in QEMU's error classes. */
package io.blockjobs.sdk.error;
