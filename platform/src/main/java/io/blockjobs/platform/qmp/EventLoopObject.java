package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import tools.jackson.databind.JsonNode;

/**
 * An {@code iothread} or the {@code main-loop} object: QEMU's event loops, with their tuning
 * properties kept, checked and shown as QEMU does. blockjobs' I/O runs on virtual threads and
 * needs neither, so they only exist for the commands that name them (an export's
 * {@code iothread}, {@code x-blockdev-set-iothread}) and for {@code qom-get}/{@code qom-set}.
 */
public final class EventLoopObject {
    /** The {@code qom-type} of an I/O thread. */
    public static final String IOTHREAD = "iothread";
    /** The {@code qom-type} of the main loop's object. */
    public static final String MAIN_LOOP = "main-loop";
    private static final long INT_MAX = Integer.MAX_VALUE;

    /** {@code EventLoopBaseProperties}, then {@code IothreadProperties}' own, in the schema's order. */
    static final List<ObjectProperties.Member> BASE_MEMBERS = List.of(
            new ObjectProperties.Member("aio-max-batch", ObjectProperties.Kind.INT),
            new ObjectProperties.Member("thread-pool-min", ObjectProperties.Kind.INT),
            new ObjectProperties.Member("thread-pool-max", ObjectProperties.Kind.INT));
    static final List<ObjectProperties.Member> IOTHREAD_MEMBERS = List.of(
            BASE_MEMBERS.get(0), BASE_MEMBERS.get(1), BASE_MEMBERS.get(2),
            new ObjectProperties.Member("poll-max-ns", ObjectProperties.Kind.INT),
            new ObjectProperties.Member("poll-grow", ObjectProperties.Kind.INT),
            new ObjectProperties.Member("poll-shrink", ObjectProperties.Kind.INT));

    private final String type;
    /** Property name to value, in the order qemu-storage-daemon lists them. */
    private final Map<String, Long> values = new LinkedHashMap<>();

    private EventLoopObject(String type) {
        this.type = type;
        values.put("thread-pool-min", 0L);
        values.put("aio-max-batch", 0L);
        values.put("thread-pool-max", 64L);
        if (type.equals(IOTHREAD)) {
            values.put("poll-max-ns", 32768L); // QEMU's IOTHREAD_POLL_MAX_NS_DEFAULT
            values.put("poll-grow", 0L);
            values.put("poll-shrink", 0L);
        }
    }

    /** {@code iothread} or {@code main-loop}. */
    public String type() {
        return type;
    }

    /** The properties' names in qemu-storage-daemon's order. */
    List<String> propertyNames() {
        return List.copyOf(values.keySet());
    }

    static List<String> propertyNames(String type) {
        return new EventLoopObject(type).propertyNames();
    }

    /** A property's value, or null if the type has no such property. */
    Long get(String property) {
        return values.get(property);
    }

    static List<ObjectProperties.Member> members(String type) {
        return type.equals(IOTHREAD) ? IOTHREAD_MEMBERS : BASE_MEMBERS;
    }

    /**
     * {@code object-add} / {@code --object} after QAPI's checks: the setters, the id's
     * uniqueness, then QEMU's {@code complete} (the thread pool's bounds; one main loop).
     */
    static EventLoopObject create(BlockGraph graph, String type, String id, Map<String, JsonNode> checked,
                                  Runnable beforeComplete) {
        EventLoopObject o = new EventLoopObject(type);
        checked.forEach((k, v) -> o.setValue(k, v.asLong()));
        beforeComplete.run();
        if (type.equals(MAIN_LOOP) && graph.objects().values().stream()
                .anyMatch(x -> x instanceof EventLoopObject e && e.type.equals(MAIN_LOOP))) {
            throw new CommandException("only one main-loop instance allowed");
        }
        o.checkPool();
        return o;
    }

    /**
     * {@code qom-set}: QEMU stores the value, then applies the whole set, which may refuse the
     * thread pool's bounds (the value stays stored, as in QEMU).
     */
    void set(String property, JsonNode value) {
        JsonNode v = ObjectProperties.value(new ObjectProperties.Member(property, ObjectProperties.Kind.INT), value, false);
        setValue(property, v.asLong());
        checkPool();
    }

    private void setValue(String property, long value) {
        if (value < 0) {
            throw new CommandException(property + " value must be in range [0, " + Long.MAX_VALUE + "]");
        }
        values.put(property, value);
    }

    private void checkPool() {
        long min = values.get("thread-pool-min");
        long max = values.get("thread-pool-max");
        if (min > max || max == 0 || min > INT_MAX || max > INT_MAX) {
            throw new CommandException("bad thread-pool-min/thread-pool-max values");
        }
    }

    /**
     * The iothread an argument names, as QEMU's {@code iothread_by_id}.
     *
     * @param message the caller's message for a missing one, with {@code %s} for the id
     */
    public static EventLoopObject iothread(BlockGraph graph, String id, String message) {
        if (graph.object(id) instanceof EventLoopObject e && e.type.equals(IOTHREAD)) {
            return e;
        }
        throw new CommandException(message.formatted(id));
    }
}
