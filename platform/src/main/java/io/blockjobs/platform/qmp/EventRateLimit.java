package io.blockjobs.platform.qmp;

import io.blockjobs.platform.event.Event;
import io.blockjobs.platform.event.EventBus;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * QEMU's rate limit on the events a guest can trigger at will ({@code monitor_qapi_event_conf}:
 * {@code QUORUM_REPORT_BAD} per {@code node-name}, {@code QUORUM_FAILURE}, one a second), for
 * every QMP monitor together. The first event of a kind goes out at once; later ones within the
 * second wait, each replacing the one waiting before it, and the last goes out when the second
 * is over, with its own timestamp; then a new second begins. Other events pass straight through.
 */
final class EventRateLimit {
    static final long PERIOD_MS = 1000;

    /** When to run the end of a period; a test runs it by hand. */
    interface Timer {
        void schedule(Runnable task, long delayMs);
    }

    /** One kind (and key) in its period: the event waiting to go out at its end, if any. */
    private static final class Period {
        Event pending;
    }

    private final EventBus out;
    private final Timer timer;
    private final Map<String, Period> periods = new HashMap<>();

    EventRateLimit(EventBus out, Timer timer) {
        this.out = out;
        this.timer = timer;
    }

    /** A bus for the monitors: the daemon's events, rate-limited as QEMU's monitors limit them. */
    static EventBus monitorBus(EventBus events) {
        EventBus monitors = new EventBus();
        ScheduledExecutorService clock = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "qmp-event-rate-limit");
            t.setDaemon(true);
            return t;
        });
        EventRateLimit limit = new EventRateLimit(monitors, (task, ms) -> clock.schedule(task, ms, TimeUnit.MILLISECONDS));
        events.subscribe(limit::accept);
        return monitors;
    }

    /** The throttle key of a limited event, or null for one that is not limited. */
    static String key(Event e) {
        return switch (e.name()) {
            case "QUORUM_REPORT_BAD" -> e.name() + "/" + e.data().path("node-name").asString();
            case "QUORUM_FAILURE" -> e.name();
            default -> null;
        };
    }

    void accept(Event e) {
        String key = key(e);
        if (key == null) {
            out.deliver(e);
            return;
        }
        synchronized (this) {
            Period p = periods.get(key);
            if (p != null) {
                p.pending = e; // the newest waits; one waiting before is dropped, as in QEMU
                return;
            }
            periods.put(key, new Period());
            out.deliver(e);
        }
        timer.schedule(() -> periodOver(key), PERIOD_MS);
    }

    /** QEMU's monitor_qapi_event_handler: the waiting event goes and a new period starts, or the kind is free again. */
    private void periodOver(String key) {
        synchronized (this) {
            Period p = periods.get(key);
            if (p.pending == null) {
                periods.remove(key);
                return;
            }
            out.deliver(p.pending);
            p.pending = null;
        }
        timer.schedule(() -> periodOver(key), PERIOD_MS);
    }
}
