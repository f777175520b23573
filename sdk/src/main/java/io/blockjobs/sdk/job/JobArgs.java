package io.blockjobs.sdk.job;

import java.util.Optional;

/**
 * The arguments every block job command shares, named as in QEMU. A command's argument record
 * declares these components (and its own); the platform reads them through this interface.
 */
public interface JobArgs {
    /** The job's id; QEMU defaults it to the device name. */
    Optional<String> jobId();

    /** The node the job works on. */
    String device();

    /** Bytes per second, 0 for unlimited. */
    Optional<Long> speed();

    /** The error policy. */
    Optional<OnError> onError();

    /**
     * The error policy for failed reads of the source, where a command names it apart (mirror's
     * {@code on-source-error}); empty: {@link #onError()}. A record declares it as a component.
     */
    default Optional<OnError> onSourceError() {
        return Optional.empty();
    }

    /**
     * The error policy for failed writes of the target, where a command names it apart (mirror's
     * {@code on-target-error}); empty: {@link #onError()}. A record declares it as a component.
     */
    default Optional<OnError> onTargetError() {
        return Optional.empty();
    }

    /** Whether the job finalizes by itself once done (default true). */
    Optional<Boolean> autoFinalize();

    /** Whether the job disappears by itself once concluded (default true). */
    Optional<Boolean> autoDismiss();
}
