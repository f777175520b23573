package io.blockjobs.platform.qmp;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.Event;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.sdk.error.ErrorClass;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.SimpleChannelInboundHandler;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.concurrent.CompletableFuture;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.core.JacksonException;
import tools.jackson.core.json.JsonWriteFeature;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectWriter;
import tools.jackson.databind.node.ObjectNode;

/**
 * One QMP connection: the greeting, capabilities negotiation, requests in order, replies with
 * the request's {@code id}, and events once negotiated. Bad input gets an error reply; the
 * connection goes on.
 */
final class QmpSession extends SimpleChannelInboundHandler<QmpFrameDecoder.Frame> {
    private static final Logger LOG = LoggerFactory.getLogger(QmpSession.class);
    private static final ObjectWriter WRITER = Json.MAPPER.writer().with(JsonWriteFeature.ESCAPE_NON_ASCII);
    private static final Set<String> REQUEST_MEMBERS = Set.of("execute", "exec-oob", "arguments", "id", "control");
    private static final int MAX_IN_FLIGHT = 8;

    private final QmpDispatcher dispatcher;
    private final EventBus events;
    private final ObjectNode greeting;
    private volatile boolean negotiated;
    private AutoCloseable subscription;
    private int inFlight;

    QmpSession(QmpDispatcher dispatcher, EventBus events, ObjectNode greeting) {
        this.dispatcher = dispatcher;
        this.events = events;
        this.greeting = greeting;
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) {
        send(ctx, greeting);
    }

    @Override
    protected void channelRead0(ChannelHandlerContext ctx, QmpFrameDecoder.Frame frame) {
        if (frame.error() != null) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, frame.error()), null);
            return;
        }
        JsonNode request;
        try {
            request = Json.MAPPER.readTree(frame.text());
        } catch (JacksonException e) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "JSON parse error, " + e.getOriginalMessage()), null);
            return;
        }
        if (request == null || !request.isObject()) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "QMP input must be a JSON object"), null);
            return;
        }
        JsonNode id = request.get("id");
        String problem = checkRequest(request);
        if (problem != null) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, problem), id);
            return;
        }
        if (request.has("exec-oob")) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "The command "
                    + request.get("exec-oob").asString() + " does not support OOB"), id);
            return;
        }
        String command = request.get("execute").asString();
        JsonNode arguments = request.get("arguments");
        if (command.equals("qmp_capabilities")) {
            reply(ctx, negotiate(ctx, arguments), id);
            return;
        }
        if (!negotiated) {
            reply(ctx, QmpDispatcher.error(ErrorClass.COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with 'qmp_capabilities'"), id);
            return;
        }
        if (++inFlight >= MAX_IN_FLIGHT) {
            ctx.channel().config().setAutoRead(false); // back-pressure: read more once replies go out
        }
        CompletableFuture<ObjectNode> result = dispatcher.execute(command, arguments).handle((out, failure) ->
                failure == null ? out : QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "internal error: " + failure));
        inOrder(ctx, result, id).thenRun(() -> {
            if (--inFlight < MAX_IN_FLIGHT) { // on the event loop, after the reply went out
                ctx.channel().config().setAutoRead(true);
            }
        });
    }

    private static String checkRequest(JsonNode request) {
        for (Iterator<String> it = request.propertyNames().iterator(); it.hasNext(); ) {
            String member = it.next();
            if (!REQUEST_MEMBERS.contains(member)) {
                return "QMP input member '" + member + "' is unexpected";
            }
        }
        JsonNode execute = request.has("execute") ? request.get("execute") : request.get("exec-oob");
        if (execute == null) {
            return "QMP input lacks member 'execute'";
        }
        if (!execute.isString()) {
            return "QMP input member 'execute' must be a string";
        }
        JsonNode arguments = request.get("arguments");
        if (arguments != null && !arguments.isObject()) {
            return "QMP input member 'arguments' must be an object";
        }
        return null;
    }

    private ObjectNode negotiate(ChannelHandlerContext ctx, JsonNode arguments) {
        if (negotiated) {
            return QmpDispatcher.error(ErrorClass.COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        }
        if (arguments != null) {
            for (Iterator<String> it = arguments.propertyNames().iterator(); it.hasNext(); ) {
                String member = it.next();
                if (!member.equals("enable")) {
                    return QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "Parameter '" + member + "' is unexpected");
                }
            }
            JsonNode enable = arguments.get("enable");
            if (enable != null) {
                if (!enable.isArray()) {
                    return QmpDispatcher.error(ErrorClass.GENERIC_ERROR,
                            "Invalid parameter type for 'enable', expected: array");
                }
                for (JsonNode cap : enable) {
                    if (!cap.isString() || !cap.asString().equals("oob")) {
                        return QmpDispatcher.error(ErrorClass.GENERIC_ERROR,
                                "Parameter 'enable' does not accept value '" + cap.asString() + "'");
                    }
                }
            }
        }
        negotiated = true;
        subscription = events.subscribe(event -> sendEvent(ctx, event));
        ObjectNode ok = Json.object();
        ok.putObject("return");
        return ok;
    }

    /** The last reply in line; replies leave in the order of their requests. */
    private CompletableFuture<Void> replies = CompletableFuture.completedFuture(null);

    private void sendEvent(ChannelHandlerContext ctx, Event event) {
        ObjectNode message = Json.object();
        message.put("event", event.name());
        if (event.data() != null) {
            message.set("data", event.data());
        }
        long micros = event.timestamp().getEpochSecond() * 1_000_000L + event.timestamp().getNano() / 1000;
        message.putObject("timestamp").put("seconds", micros / 1_000_000).put("microseconds", micros % 1_000_000);
        send(ctx, message);
    }

    private void reply(ChannelHandlerContext ctx, ObjectNode reply, JsonNode id) {
        inOrder(ctx, CompletableFuture.completedFuture(reply), id);
    }

    /**
     * Sends a reply once every earlier request's reply has gone out: QMP answers in the order it
     * was asked, even when a later answer (an error found at once) is ready first. Called and
     * completed on the channel's event loop, which alone touches {@code replies}.
     */
    private CompletableFuture<Void> inOrder(ChannelHandlerContext ctx, CompletableFuture<ObjectNode> reply, JsonNode id) {
        replies = replies.thenCombine(reply, (previous, out) -> out).thenAcceptAsync(out -> {
            if (id != null) {
                out.set("id", id);
            }
            try {
                send(ctx, out);
            } catch (RuntimeException e) { // one reply that cannot be written must not stop the rest
                LOG.warn("cannot send a QMP reply: {}", e.toString());
            }
        }, ctx.executor());
        return replies;
    }

    private static void send(ChannelHandlerContext ctx, ObjectNode message) {
        String text = WRITER.writeValueAsString(message) + "\r\n";
        ctx.writeAndFlush(Unpooled.wrappedBuffer(text.getBytes(StandardCharsets.US_ASCII)));
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        if (subscription != null) {
            subscription.close();
        }
        super.channelInactive(ctx);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        LOG.debug("QMP connection error: {}", cause.toString());
        ctx.close();
    }
}
