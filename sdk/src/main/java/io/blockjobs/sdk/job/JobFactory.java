package io.blockjobs.sdk.job;

/**
 * Prepares a job from its command's arguments, on the daemon's main loop: checks them, claims
 * nodes through {@link JobSetup}, and returns the body. Throw
 * {@link io.blockjobs.sdk.error.CommandException} to refuse the command; nothing has started then.
 *
 * @param <A> the command's argument record
 */
@FunctionalInterface
public interface JobFactory<A extends JobArgs> {
    JobBody prepare(A args, JobSetup setup);
}
