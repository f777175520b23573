package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.InterruptedIOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * The client side of QMP over a unix socket: negotiates capabilities, runs commands (from any
 * thread: each request carries an {@code id} and its reply is matched by it), and queues events
 * in the order they arrive, for {@link #nextEvent} to hand out. A reader thread does the reading.
 */
final class QmpConnection implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(QmpConnection.class);
    /** Put in the event queue once the connection has ended. */
    private static final JsonNode END = Json.object();

    /** A QMP error reply: its class ({@code GenericError}, {@code CommandNotFound}, ...) and words. */
    static final class QmpError extends IOException {
        final JsonNode error;

        QmpError(JsonNode error) {
            super(error.path("class").asString() + ": " + error.path("desc").asString());
            this.error = error;
        }

        String errorClass() {
            return error.path("class").asString();
        }

        String desc() {
            return error.path("desc").asString();
        }
    }

    /** The daemon closed the connection (or it broke). */
    static final class ClosedError extends IOException {
        ClosedError() {
            super("the daemon closed the connection");
        }
    }

    private final SocketChannel channel;
    private final BufferedReader in;
    private final BlockingQueue<JsonNode> events = new LinkedBlockingQueue<>();
    private final Map<String, CompletableFuture<JsonNode>> pending = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong();
    private volatile boolean ended;

    /** How long a monitor may take to greet: one that is busy with another client never does. */
    static final long GREETING_SECONDS = 10;
    /** How long a command may take; QMP commands return quickly (jobs run after the reply). */
    static final long REPLY_SECONDS = 300;

    /** Connects to the monitor at {@code socket}, reads its greeting and negotiates capabilities. */
    QmpConnection(Path socket) throws IOException {
        this.channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            channel.connect(UnixDomainSocketAddress.of(socket));
            this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
            CompletableFuture<String> greeting = CompletableFuture.supplyAsync(() -> {
                try {
                    return in.readLine();
                } catch (IOException e) {
                    return null;
                }
            }, r -> Thread.ofVirtual().name("qmp-greeting").start(r));
            String line;
            try {
                line = greeting.get(GREETING_SECONDS, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                throw new IOException("no QMP greeting from " + socket + " within " + GREETING_SECONDS
                        + " s: is it blockjobd's monitor, and is no other client holding it?");
            } catch (InterruptedException | ExecutionException e) {
                throw new IOException("no QMP greeting from " + socket + ": " + e);
            }
            if (line == null || !line.contains("\"QMP\"")) {
                throw new IOException("not a QMP monitor: " + socket);
            }
        } catch (IOException e) {
            channel.close();
            throw e;
        }
        Thread.ofVirtual().name("qmp-reader").start(this::read);
        execute("qmp_capabilities", null);
    }

    /** Runs a command; returns its {@code return}, or throws {@link QmpError} with the QMP error. */
    JsonNode execute(String command, JsonNode arguments) throws IOException {
        String id = "bj-" + ids.incrementAndGet();
        ObjectNode request = Json.object().put("execute", command);
        if (arguments != null) {
            request.set("arguments", arguments);
        }
        request.put("id", id);
        CompletableFuture<JsonNode> reply = new CompletableFuture<>();
        pending.put(id, reply);
        if (ended) {
            pending.remove(id);
            throw new ClosedError();
        }
        ByteBuffer bytes = ByteBuffer.wrap((Json.MAPPER.writeValueAsString(request) + "\n").getBytes(StandardCharsets.UTF_8));
        synchronized (channel) {
            while (bytes.hasRemaining()) {
                channel.write(bytes);
            }
        }
        JsonNode message;
        try {
            message = reply.get(REPLY_SECONDS, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new IOException("no reply to " + command + " within " + REPLY_SECONDS + " s: is the daemon stuck?");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException(command + " interrupted");
        } catch (ExecutionException e) {
            throw e.getCause() instanceof IOException io ? io : new IOException(e.getCause());
        } finally {
            pending.remove(id);
        }
        if (message.has("error")) {
            throw new QmpError(message.get("error"));
        }
        return message.get("return");
    }

    /** Waits for the next event; throws {@link ClosedError} once the connection has ended. */
    JsonNode nextEvent() throws IOException {
        try {
            return check(events.take());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted");
        }
    }

    /** The next event, or null if none comes within {@code millis}. */
    JsonNode nextEvent(long millis) throws IOException {
        try {
            JsonNode event = events.poll(Math.max(0, millis), TimeUnit.MILLISECONDS);
            return event == null ? null : check(event);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted");
        }
    }

    private JsonNode check(JsonNode event) throws ClosedError {
        if (event == END) {
            events.add(END); // every later call sees the end too
            throw new ClosedError();
        }
        return event;
    }

    private void read() {
        try {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode message;
                try {
                    message = Json.MAPPER.readTree(line);
                } catch (JacksonException e) {
                    LOG.warn("ignoring a message that is not JSON: {}", line);
                    continue;
                }
                if (message.has("event")) {
                    events.add(message);
                } else {
                    CompletableFuture<JsonNode> reply = pending.get(message.path("id").asString(""));
                    if (reply != null) {
                        reply.complete(message);
                    } else {
                        LOG.warn("ignoring a reply to no request of ours: {}", line);
                    }
                }
            }
        } catch (IOException e) {
            LOG.debug("QMP connection ended: {}", e.toString());
        } finally {
            ended = true;
            pending.values().forEach(f -> f.completeExceptionally(new ClosedError()));
            events.add(END);
        }
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
