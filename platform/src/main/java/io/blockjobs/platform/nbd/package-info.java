/**
 * The NBD server and client (Netty): fixed newstyle handshake, structured replies, the meta contexts
 * ({@code base:allocation}, {@code qemu:dirty-bitmap:NAME}, {@code qemu:allocation-depth}: see
 * {@link io.blockjobs.platform.nbd.NbdMetaContexts}), and the QMP commands that manage it.
 *
 * <p>Shape, as Netty's codecs: wire messages are records ({@link io.blockjobs.platform.nbd.NbdRequest},
 * {@link io.blockjobs.platform.nbd.NbdReply}, {@link io.blockjobs.platform.nbd.NbdOption},
 * {@link io.blockjobs.platform.nbd.NbdOptionReply}); each direction has a decoder and an encoder,
 * for the server and (the inverse pair) for a client; a client's pipeline starts as option decoder,
 * option reply encoder and {@link io.blockjobs.platform.nbd.NbdHandshakeHandler}, which on
 * {@code NBD_OPT_GO} gives way to request decoder, reply encoder and
 * {@link io.blockjobs.platform.nbd.NbdTransmissionHandler}. Every call into the block layer goes
 * through {@link io.blockjobs.platform.nbd.NbdExportIo}.
 *
 * <p>The client ({@link io.blockjobs.platform.nbd.NbdClientDriver}, QEMU's {@code nbd} block driver)
 * lives here too, on the same codec: its pipeline starts as {@link io.blockjobs.platform.nbd.NbdGreetingDecoder},
 * option reply decoder, option encoder and {@link io.blockjobs.platform.nbd.NbdClientHandshakeHandler},
 * and on the server's {@code NBD_OPT_GO} becomes reply decoder, request encoder and
 * {@link io.blockjobs.platform.nbd.NbdClientTransmissionHandler}. DESIGN.md lists the client under
 * {@code image}, but a package may use only those before it and the codec is here: the driver is a
 * {@link io.blockjobs.sdk.driver.BlockDriver} the daemon registers at start, like any other.
 */
package io.blockjobs.platform.nbd;
