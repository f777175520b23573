package io.blockjobs.platform.event;

import java.time.Instant;
import tools.jackson.databind.node.ObjectNode;

/**
 * An event as it travels to subscribers: its QMP name, its payload as JSON (serialised once, for
 * every subscriber), the typed event it came from, and when it happened.
 *
 * @param name      the event's name ({@code JOB_STATUS_CHANGE}, ...)
 * @param data      its payload, or null for none
 * @param timestamp when it happened
 * @param event     the typed event
 */
public record Event(String name, ObjectNode data, Instant timestamp, QmpEvent event) {
}
