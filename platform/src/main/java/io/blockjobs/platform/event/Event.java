package io.blockjobs.platform.event;

import java.time.Instant;
import tools.jackson.databind.node.ObjectNode;

/**
 * An event as QEMU names it ({@code JOB_STATUS_CHANGE}, {@code BLOCK_JOB_COMPLETED}, ...).
 *
 * @param name      the event's name
 * @param data      its payload, or null for none
 * @param timestamp when it happened
 */
public record Event(String name, ObjectNode data, Instant timestamp) {
}
