package io.blockjobs.platform.event;

import io.blockjobs.platform.Json;
import io.blockjobs.sdk.driver.DriverEvents;
import java.util.HashMap;
import java.util.Map;

/**
 * Drivers' events ({@link DriverEvents}) onto the bus: the name picks one of the declared
 * {@link QmpEvent} types and the data is read as that record, so a driver can send only what the
 * schema lists, in the schema's shape.
 */
public final class DriverEventSink {
    private DriverEventSink() {
    }

    /** A sink that publishes on {@code bus}. */
    public static DriverEvents of(EventBus bus) {
        Map<String, Class<? extends QmpEvent>> byName = new HashMap<>();
        for (Class<? extends QmpEvent> t : QmpEvent.types()) {
            byName.put(QmpEvent.nameOf(t), t);
        }
        return (name, data) -> {
            Class<? extends QmpEvent> type = byName.get(name);
            if (type == null) {
                throw new IllegalArgumentException("no event '" + name + "' is declared");
            }
            QmpEvent event;
            try {
                event = Json.MAPPER.convertValue(data, type);
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("event " + name + " does not take " + data + ": " + e.getMessage(), e);
            }
            bus.publish(event);
        };
    }
}
