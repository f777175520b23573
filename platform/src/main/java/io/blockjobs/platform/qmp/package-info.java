/**
 * The QMP server (QEMU Machine Protocol): Netty framing, greeting and capabilities negotiation,
 * the command dispatcher with QEMU's argument checks and error classes, introspection
 * ({@code query-commands}, {@code query-qmp-schema}) and event delivery.
 */
package io.blockjobs.platform.qmp;
