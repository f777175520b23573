package io.blockjobs.platform.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * A QMP client written from QEMU's QMP specification, for tests: one JSON object per line,
 * replies matched to requests in order, events kept apart and awaited by name.
 */
public final class QmpClient implements AutoCloseable {
    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    /** Reads replies as deep as QMP allows (an id nested 1,023 levels is echoed so). */
    private static final tools.jackson.databind.ObjectMapper READER = tools.jackson.databind.json.JsonMapper.builder(
            tools.jackson.core.json.JsonFactory.builder().streamReadConstraints(
                    tools.jackson.core.StreamReadConstraints.builder().maxNestingDepth(4096).build()).build()).build();

    private final SocketChannel channel;
    private final BlockingQueue<JsonNode> replies = new LinkedBlockingQueue<>();
    private final BlockingQueue<JsonNode> events = new LinkedBlockingQueue<>();
    private final List<JsonNode> seenEvents = new ArrayList<>();
    private final JsonNode greeting;

    private QmpClient(Path socket) throws IOException {
        this(open(socket));
    }

    private static SocketChannel open(Path socket) throws IOException {
        SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        channel.connect(UnixDomainSocketAddress.of(socket));
        return channel;
    }

    private QmpClient(SocketChannel channel) throws IOException {
        this.channel = channel;
        BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        greeting = READER.readTree(in.readLine());
        Thread.ofVirtual().start(() -> {
            try {
                String line;
                while ((line = in.readLine()) != null) {
                    JsonNode msg = READER.readTree(line);
                    (msg.has("event") ? events : replies).add(msg);
                }
            } catch (IOException e) {
                // connection closed
            }
        });
    }

    /** Connects and reads the greeting, without negotiating. */
    public static QmpClient connectRaw(Path socket) throws IOException {
        return new QmpClient(socket);
    }

    /**
     * A client on a connection the daemon made to a socket the test listens on (QEMU's
     * client-mode chardev): reads the greeting and negotiates capabilities.
     */
    public static QmpClient accepted(SocketChannel connection) throws IOException {
        QmpClient c = new QmpClient(connection);
        c.ok("qmp_capabilities");
        return c;
    }

    /** Connects and negotiates capabilities. */
    public static QmpClient connect(Path socket) throws IOException {
        QmpClient c = new QmpClient(socket);
        c.ok("qmp_capabilities");
        return c;
    }

    public JsonNode greeting() {
        return greeting;
    }

    /** Sends raw text (for malformed input). */
    public void sendRaw(String text) throws IOException {
        sendRaw(text.getBytes(StandardCharsets.UTF_8));
    }

    /** Sends raw bytes (for input that is not even UTF-8). */
    public void sendRaw(byte[] bytes) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    /** The next reply (not event). */
    public JsonNode nextReply() {
        try {
            JsonNode r = replies.poll(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
            if (r == null) {
                throw new AssertionError("no QMP reply within " + TIMEOUT);
            }
            return r;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /** Sends a command and returns the whole reply. */
    public JsonNode execute(String command, Object arguments) throws IOException {
        ObjectNode req = Qemu.JSON.createObjectNode().put("execute", command);
        if (arguments != null) {
            req.set("arguments", Qemu.JSON.valueToTree(arguments));
        }
        sendRaw(Qemu.JSON.writeValueAsString(req) + "\n");
        return nextReply();
    }

    /** Runs a command that must succeed; returns its {@code return}. */
    public JsonNode ok(String command, Object arguments) throws IOException {
        JsonNode r = execute(command, arguments);
        if (!r.has("return")) {
            throw new AssertionError(command + " " + arguments + " failed: " + r);
        }
        return r.get("return");
    }

    public JsonNode ok(String command) throws IOException {
        return ok(command, null);
    }

    /** Runs a command that must fail; returns its {@code error} ({@code class}, {@code desc}). */
    public JsonNode error(String command, Object arguments) throws IOException {
        JsonNode r = execute(command, arguments);
        if (!r.has("error")) {
            throw new AssertionError(command + " " + arguments + " should have failed: " + r);
        }
        return r.get("error");
    }

    /** Waits for the next event named {@code name} (any, if empty) that matches {@code filter}. */
    public JsonNode awaitEvent(String name, Predicate<JsonNode> filter) {
        return awaitEvent(name, filter, TIMEOUT);
    }

    /** As {@link #awaitEvent(String, Predicate)}, waiting at most {@code timeout} (benchmarks run long). */
    public JsonNode awaitEvent(String name, Predicate<JsonNode> filter, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        try {
            while (true) {
                long left = deadline - System.nanoTime();
                JsonNode e = events.poll(Math.max(0, left), TimeUnit.NANOSECONDS);
                if (e == null) {
                    throw new AssertionError("no " + name + " event within " + timeout + "; saw " + seenEvents);
                }
                seenEvents.add(e);
                if ((name.isEmpty() || e.get("event").asString().equals(name)) && filter.test(e.path("data"))) {
                    return e;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /**
     * Waits for one event named {@code name} per value in {@code values} of its data's {@code field},
     * in whatever order they come (concurrent runs and jobs end in any order); returns them by value.
     */
    public Map<String, JsonNode> awaitEach(String name, String field, Collection<String> values, Duration timeout) {
        Set<String> waiting = new HashSet<>(values);
        Map<String, JsonNode> got = new HashMap<>();
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!waiting.isEmpty()) {
            JsonNode e = awaitEvent(name, d -> waiting.contains(d.path(field).asString("")),
                    Duration.ofNanos(Math.max(0, deadline - System.nanoTime())));
            String value = e.path("data").path(field).asString();
            waiting.remove(value);
            got.put(value, e);
        }
        return got;
    }

    /** Events received and consumed so far by {@link #awaitEvent}. */
    public List<JsonNode> seenEvents() {
        return seenEvents;
    }


    @Override
    public void close() throws IOException {
        channel.close();
    }
}
