package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
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
import java.util.function.Consumer;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/** The client side of QMP over a unix socket: negotiate, run commands, hand events to a listener. */
final class QmpConnection implements AutoCloseable {
    private final SocketChannel channel;
    private final BufferedReader in;
    private final Consumer<JsonNode> events;

    QmpConnection(Path socket, Consumer<JsonNode> events) throws IOException {
        this.channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        channel.connect(UnixDomainSocketAddress.of(socket));
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.events = events;
        String greeting = in.readLine();
        if (greeting == null || !greeting.contains("\"QMP\"")) {
            throw new IOException("not a QMP monitor: " + socket);
        }
        execute("qmp_capabilities", null);
    }

    /** Runs a command; returns its {@code return}, or throws with the QMP error. */
    JsonNode execute(String command, JsonNode arguments) throws IOException {
        ObjectNode request = Json.object().put("execute", command);
        if (arguments != null) {
            request.set("arguments", arguments);
        }
        ByteBuffer bytes = ByteBuffer.wrap((Json.MAPPER.writeValueAsString(request) + "\n").getBytes(StandardCharsets.UTF_8));
        while (bytes.hasRemaining()) {
            channel.write(bytes);
        }
        while (true) {
            JsonNode message = next();
            if (message.has("event")) {
                events.accept(message);
            } else if (message.has("error")) {
                throw new IOException(command + ": " + message.get("error").get("class").asString() + ": "
                        + message.get("error").get("desc").asString());
            } else {
                return message.get("return");
            }
        }
    }

    /** Waits for the next event. */
    JsonNode nextEvent() throws IOException {
        while (true) {
            JsonNode message = next();
            if (message.has("event")) {
                return message;
            }
        }
    }

    private JsonNode next() throws IOException {
        String line = in.readLine();
        if (line == null) {
            throw new IOException("the daemon closed the connection");
        }
        return Json.MAPPER.readTree(line);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
