/**
 * Writing a job type: a {@link io.blockjobs.sdk.job.JobType} (the PF4J extension point) names
 * its QMP commands; each command's arguments are a record; its factory checks them and returns
 * a {@link io.blockjobs.sdk.job.JobBody} that the platform runs on a virtual thread with a
 * {@link io.blockjobs.sdk.job.JobContext}. The platform owns states, events, speed and errors.
 */
package io.blockjobs.sdk.job;
