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

    /** Whether the job finalizes by itself once done (default true). */
    Optional<Boolean> autoFinalize();

    /** Whether the job disappears by itself once concluded (default true). */
    Optional<Boolean> autoDismiss();
}
