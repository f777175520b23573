package io.blockjobs.platform.event;

import io.blockjobs.platform.Json;
import java.time.Instant;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.node.ObjectNode;

/** Delivers events to every subscriber, in the order they were published. */
public final class EventBus {
    private static final Logger LOG = LoggerFactory.getLogger(EventBus.class);

    private final CopyOnWriteArrayList<Consumer<Event>> subscribers = new CopyOnWriteArrayList<>();

    /** Subscribes; close the returned handle to stop receiving. Subscribers must not block. */
    public AutoCloseable subscribe(Consumer<Event> subscriber) {
        subscribers.add(subscriber);
        return () -> subscribers.remove(subscriber);
    }

    /** Publishes an event now. */
    public synchronized void publish(QmpEvent event) {
        String name = QmpEvent.nameOf(event.getClass());
        ObjectNode data = Json.MAPPER.valueToTree(event);
        deliver(new Event(name, data, Instant.now(), event));
    }

    /**
     * Delivers an event published elsewhere, keeping its timestamp (the QMP monitors' rate
     * limit passes events on late, stamped when they happened, as QEMU's monitor does).
     */
    public synchronized void deliver(Event e) {
        String name = e.name();
        LOG.debug("event {} {}", name, e.data());
        for (Consumer<Event> s : subscribers) {
            try {
                s.accept(e);
            } catch (RuntimeException ex) {
                LOG.warn("event subscriber failed on {}", name, ex);
            }
        }
    }
}
