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
     * The policy for failed reads ({@code on-source-error}, as backup and mirror name it); by
     * default {@link #onError()}. A record with an {@code onSourceError} component overrides it.
     */
    default Optional<OnError> onSourceError() {
        return onError();
    }

    /**
     * The policy for failed writes ({@code on-target-error}); by default {@link #onError()}.
     */
    default Optional<OnError> onTargetError() {
        return onError();
    }

    /** Whether the job finalizes by itself once done (default true). */
    Optional<Boolean> autoFinalize();

    /** Whether the job disappears by itself once concluded (default true). */
    Optional<Boolean> autoDismiss();
}
