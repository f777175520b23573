package io.blockjobs.sdk.driver;

import java.util.Map;

/**
 * Where a node sends QEMU's events about itself ({@code quorum}'s {@code QUORUM_FAILURE} and
 * {@code QUORUM_REPORT_BAD}); obtain it with {@link DriverContext#events()} and keep it for as
 * long as the node is open. The platform declares every event it can send (they appear in
 * {@code query-qmp-schema}), and applies QEMU's monitor rules to them, such as the rate limit of
 * the quorum events. May be called from any thread.
 */
public interface DriverEvents {

    /**
     * Sends an event now.
     *
     * @param name the event's name as QEMU spells it ({@code QUORUM_FAILURE})
     * @param data its members as QEMU's schema names them ({@code sector-num}); leave optional
     *             members out when absent
     * @throws IllegalArgumentException if the platform declares no such event, or the data does
     *         not fit it
     */
    void send(String name, Map<String, Object> data);
}
