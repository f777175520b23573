/**
 * What a plugin contributes ({@link io.blockjobs.sdk.plugin.BlockjobsPlugin}) and the SDK
 * version it declares in {@code plugin.requires}.
 */
package io.blockjobs.sdk.plugin;
