/**
 * Job plugins: PF4J loads plugin jars, their {@link io.blockjobs.sdk.job.JobType} extensions
 * become QMP commands, and {@code query-plugins}/{@code plugin-load}/{@code plugin-unload}
 * change the set at run time.
 */
package io.blockjobs.platform.plugin;
