/**
 * The NBD server (Netty): fixed newstyle handshake, structured replies, the
 * {@code base:allocation} meta context, and the QMP commands that manage it.
 */
package io.blockjobs.platform.nbd;
