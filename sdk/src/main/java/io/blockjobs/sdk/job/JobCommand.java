package io.blockjobs.sdk.job;

/**
 * A QMP command that starts a job.
 *
 * @param name      the command's name, as in QEMU ({@code block-stream}) or {@code x-vendor-...}
 * @param jobType   the job type it starts, as {@code query-jobs} shows it
 * @param arguments the argument record: kebab-case members, {@code Optional} for optional ones
 * @param factory   prepares the job
 * @param <A>       the argument record
 */
public record JobCommand<A extends JobArgs>(String name, String jobType, Class<A> arguments, JobFactory<A> factory) {
}
