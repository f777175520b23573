/**
 * Block nodes: disk images and the protocol nodes beneath them, as a job sees them. Offsets and
 * lengths are in bytes; every method may be called concurrently from several threads unless its
 * Javadoc says otherwise.
 */
package io.blockjobs.sdk.block;
