package io.blockjobs.sdk.error;

/** QEMU's QMP error classes ({@code QapiErrorClass}); clients switch on these names. */
public enum ErrorClass {
    /** Everything without a more specific class. */
    GENERIC_ERROR("GenericError"),
    /** The command does not exist (or is not available yet, before negotiation). */
    COMMAND_NOT_FOUND("CommandNotFound"),
    /** The device or block job is not active (QEMU: an unknown block job id). */
    DEVICE_NOT_ACTIVE("DeviceNotActive"),
    /** The named device or node does not exist. */
    DEVICE_NOT_FOUND("DeviceNotFound"),
    /** Kept for completeness: KVM lacks a capability. */
    KVM_MISSING_CAP("KVMMissingCap");

    private final String qmpName;

    ErrorClass(String qmpName) {
        this.qmpName = qmpName;
    }

    /** The name as it appears in a QMP error reply's {@code class}. */
    public String qmpName() {
        return qmpName;
    }
}
