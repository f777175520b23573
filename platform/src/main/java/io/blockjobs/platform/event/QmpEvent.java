package io.blockjobs.platform.event;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonValue;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/**
 * Every event the daemon emits, as QEMU names and shapes it. Each is a record whose components
 * are the event's {@code data}, serialised by Jackson; its QMP name is on its {@link Name}. The
 * set is sealed, so {@code query-qmp-schema}'s event list is generated from these very types
 * ({@link #types()}) and a subscriber can switch over them exhaustively.
 */
public sealed interface QmpEvent {

    /** The event's name as QMP spells it. */
    @Retention(RetentionPolicy.RUNTIME)
    @Target(ElementType.TYPE)
    @interface Name {
        String value();
    }

    /** The QMP name of an event type. */
    static String nameOf(Class<? extends QmpEvent> type) {
        return type.getAnnotation(Name.class).value();
    }

    /** Every event type, in the order they are declared here. */
    @SuppressWarnings("unchecked")
    static List<Class<? extends QmpEvent>> types() {
        List<Class<? extends QmpEvent>> out = new ArrayList<>();
        for (Class<?> c : QmpEvent.class.getPermittedSubclasses()) {
            out.add((Class<? extends QmpEvent>) c);
        }
        return out;
    }

    /** A job's status changed ({@code JobStatus} as QMP spells it). */
    @Name("JOB_STATUS_CHANGE")
    record JobStatusChange(String status, String id) implements QmpEvent {
    }

    /** A block job ended: finished, or failed with {@code error}. */
    @Name("BLOCK_JOB_COMPLETED")
    record BlockJobCompleted(String type, String device, long len, long offset, long speed, Optional<String> error)
            implements QmpEvent {
    }

    /** A block job was cancelled. */
    @Name("BLOCK_JOB_CANCELLED")
    record BlockJobCancelled(String type, String device, long len, long offset, long speed) implements QmpEvent {
    }

    /** A converging job has converged and accepts {@code job-complete}. */
    @Name("BLOCK_JOB_READY")
    record BlockJobReady(String type, String device, long len, long offset, long speed) implements QmpEvent {
    }

    /** A block job waits for {@code job-finalize}. */
    @Name("BLOCK_JOB_PENDING")
    record BlockJobPending(String type, String id) implements QmpEvent {
    }

    /** A block job met an I/O error and did {@code action} about it. */
    @Name("BLOCK_JOB_ERROR")
    record BlockJobError(String device, String operation, String action) implements QmpEvent {
    }

    /**
     * A device's request failed and the device did {@code action} about it (QEMU's
     * {@code blk_error_action}). QEMU 7.2 sends it from guest devices only; a storage daemon has
     * none, so qemu-storage-daemon lists it and never sends it (a failed NBD request is the
     * client's to see), and blockjobd likewise. Members as QEMU 7.2's schema has them.
     */
    @Name("BLOCK_IO_ERROR")
    record BlockIoError(String device, Optional<String> nodeName, IoOperationType operation, BlockErrorAction action,
                        Optional<Boolean> nospace, String reason) implements QmpEvent {
    }

    /**
     * A qcow2 image's metadata was found corrupt at run time (QEMU's
     * {@code qcow2_signal_corruption}): {@code msg} in QEMU's words, the host {@code offset}
     * and {@code size} concerned if any, and whether it was {@code fatal} (the image is marked
     * corrupt and its node refuses every request). {@code device} is empty: nodes have no
     * device names in a storage daemon.
     */
    @Name("BLOCK_IMAGE_CORRUPTED")
    record BlockImageCorrupted(String device, Optional<String> nodeName, String msg, Optional<Long> offset,
                               Optional<Long> size, boolean fatal) implements QmpEvent {
    }

    /** An export is gone. */
    @Name("BLOCK_EXPORT_DELETED")
    record BlockExportDeleted(String id) implements QmpEvent {
    }

    /**
     * A write went past a node's {@code block-set-write-threshold}; the threshold is now 0.
     * Members in the order QEMU 7.2's dictionary sends them.
     */
    @Name("BLOCK_WRITE_THRESHOLD")
    record BlockWriteThreshold(String nodeName, long writeThreshold, long amountExceeded) implements QmpEvent {
    }

    /**
     * A {@code quorum} read or write did not reach its {@code vote-threshold} (QEMU's
     * {@code quorum_report_failure}): {@code reference} names the quorum node, the sectors are
     * 512-byte ones covering the request.
     */
    @Name("QUORUM_FAILURE")
    record QuorumFailure(String reference, long sectorNum, long sectorsCount) implements QmpEvent {
    }

    /**
     * A child of a {@code quorum} failed a request ({@code error}, strerror's text) or lost a
     * read's vote (no {@code error}): QEMU's {@code quorum_report_bad}.
     */
    @Name("QUORUM_REPORT_BAD")
    record QuorumReportBad(QuorumOpType type, Optional<String> error, String nodeName, long sectorNum,
                           long sectorsCount) implements QmpEvent {
    }

    /**
     * Block replication stopped on this side (QEMU's {@code COLO_EXIT}): {@code mode} is the
     * side ({@code primary}, {@code secondary}), {@code reason} {@code request} when a failover
     * asked for finished, {@code error} when it failed.
     */
    @Name("COLO_EXIT")
    record ColoExit(String mode, String reason) implements QmpEvent {
    }

    /** The daemon is stopping. */
    @Name("SHUTDOWN")
    record Shutdown(boolean guest, String reason) implements QmpEvent {
    }

    /** A workflow run started. */
    @Name("WORKFLOW_STARTED")
    record WorkflowStarted(String id, String script) implements QmpEvent {
    }

    /** A workflow run logged a line. */
    @Name("WORKFLOW_LOG")
    record WorkflowLog(String id, String message) implements QmpEvent {
    }

    /** A workflow run ended: completed with its {@code result}, failed with {@code error}, or cancelled. */
    @Name("WORKFLOW_FINISHED")
    record WorkflowFinished(String id, String script, String state, Optional<JsonNode> result,
                            Optional<ErrorInfo> error) implements QmpEvent {
    }

    /** QEMU's {@code IoOperationType}. */
    enum IoOperationType {
        READ, WRITE;

        @JsonValue
        public String qmp() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** QEMU's {@code QuorumOpType}. */
    enum QuorumOpType {
        READ, WRITE, FLUSH;

        @JsonValue
        public String qmp() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** QEMU's {@code BlockErrorAction}. */
    enum BlockErrorAction {
        IGNORE, REPORT, STOP;

        @JsonValue
        public String qmp() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** A QMP error as a payload member. */
    record ErrorInfo(@JsonProperty("class") String errorClass, String desc) {
    }
}
