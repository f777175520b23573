package io.blockjobs.sdk.testkit;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An event a harnessed job sent, named and shaped as QEMU's QMP events are:
 * {@code JOB_STATUS_CHANGE} ({@code id}, {@code status}), {@code BLOCK_JOB_READY},
 * {@code BLOCK_JOB_COMPLETED} and {@code BLOCK_JOB_CANCELLED} ({@code type}, {@code device},
 * {@code len}, {@code offset}, {@code speed}, and {@code error} for a failed job),
 * {@code BLOCK_JOB_ERROR} ({@code device}, {@code operation}, {@code action}) and
 * {@code BLOCK_JOB_PENDING} ({@code type}, {@code id}).
 *
 * @param name the event's name
 * @param data its members, in QEMU's order
 */
public record JobEvent(String name, Map<String, Object> data) {

    /** Copies the members, keeping their order. */
    public JobEvent {
        data = Collections.unmodifiableMap(new LinkedHashMap<>(data));
    }

    /** A member's value as a string, or null. */
    public String get(String member) {
        Object v = data.get(member);
        return v == null ? null : String.valueOf(v);
    }

    @Override
    public String toString() {
        return name + " " + data;
    }
}
