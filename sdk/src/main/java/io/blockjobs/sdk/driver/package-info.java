/**
 * Writing a block driver: a {@link io.blockjobs.sdk.driver.BlockDriver} opens
 * {@link io.blockjobs.sdk.driver.DriverNode}s from QEMU's options through a
 * {@link io.blockjobs.sdk.driver.DriverContext}; the graph wraps every node so that requests
 * are tracked, hooked, aligned and counted before the driver sees them. A plugin contributes
 * drivers through {@link io.blockjobs.sdk.plugin.BlockjobsPlugin#blockDrivers()}.
 */
package io.blockjobs.sdk.driver;
