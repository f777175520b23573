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
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import tools.jackson.core.StreamWriteConstraints;
import tools.jackson.core.json.JsonFactory;
import tools.jackson.core.json.JsonWriteFeature;
import tools.jackson.databind.json.JsonMapper;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectWriter;
import tools.jackson.databind.node.ObjectNode;

/**
 * One QMP connection: the greeting, capabilities negotiation, requests in order, replies with
 * the request's {@code id}, and events once negotiated. Bad input gets an error reply; the
 * connection goes on.
 *
 * <p>Its output is bounded. Bytes handed to the socket but not yet taken by the kernel are
 * counted: above {@link Limits#pauseReading} the monitor's requests are not read (it slows only
 * itself), and a monitor whose output would grow beyond {@link Limits#maxQueued} (one that does
 * not read its socket while events flow) is disconnected, with a warning that names it.
 */
final class QmpSession extends SimpleChannelInboundHandler<QmpFrameDecoder.Frame> {
    private static final Logger LOG = LoggerFactory.getLogger(QmpSession.class);
    /**
     * QMP's writer: {@link Json#MAPPER}'s conventions, nesting as deep as a request may (an id is
     * echoed as it came, and Jackson's default stops at 500 levels).
     */
    private static final ObjectWriter WRITER = JsonMapper.builder(JsonFactory.builder()
                    .streamWriteConstraints(StreamWriteConstraints.builder().maxNestingDepth(4 * QmpServer.MAX_NESTING).build())
                    .build())
            .propertyNamingStrategy(tools.jackson.databind.PropertyNamingStrategies.KEBAB_CASE)
            .changeDefaultPropertyInclusion(v -> v.withValueInclusion(com.fasterxml.jackson.annotation.JsonInclude.Include.NON_ABSENT))
            .build().writer().with(JsonWriteFeature.ESCAPE_NON_ASCII);
    private static final Set<String> REQUEST_MEMBERS = Set.of("execute", "exec-oob", "arguments", "id", "control");
    private static final int MAX_IN_FLIGHT = 8;

    /**
     * Output bounds of one monitor, in bytes.
     *
     * @param pauseReading stop reading requests while more than this waits to be sent
     * @param maxQueued    disconnect the monitor rather than let more than this wait; one message
     *                     alone may be larger (a big reply to a monitor that reads)
     */
    record Limits(long pauseReading, long maxQueued) {
    }

    private final QmpDispatcher dispatcher;
    private final EventBus events;
    private final ObjectNode greeting;
    private final String name;
    private final Limits limits;
    private final boolean pretty;
    private volatile boolean negotiated;
    private AutoCloseable subscription;
    private int inFlight;
    /** Bytes written to the channel and not yet to the socket; events add to it from any thread. */
    private final AtomicLong queued = new AtomicLong();
    private final AtomicBoolean overflowed = new AtomicBoolean();

    QmpSession(QmpDispatcher dispatcher, EventBus events, ObjectNode greeting, String name, Limits limits) {
        this(dispatcher, events, greeting, name, limits, false);
    }

    /** As a monitor given {@code pretty=on}: its output laid out as QEMU's pretty monitors. */
    QmpSession(QmpDispatcher dispatcher, EventBus events, ObjectNode greeting, String name, Limits limits, boolean pretty) {
        this.pretty = pretty;
        this.dispatcher = dispatcher;
        this.events = events;
        this.greeting = greeting;
        this.name = name;
        this.limits = limits;
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) {
        LOG.debug("QMP {} connected", name);
        send(ctx, greeting);
    }

    @Override
    protected void channelRead0(ChannelHandlerContext ctx, QmpFrameDecoder.Frame frame) {
        if (frame.error() != null) {
            reply(ctx, QmpDispatcher.error(ErrorClass.GENERIC_ERROR, frame.error()), null);
            return;
        }
        JsonNode request = frame.value();
        if (!request.isObject()) {
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
        inFlight++;
        updateReading(ctx); // back-pressure: read more once replies go out
        CompletableFuture<ObjectNode> result = dispatcher.execute(command, arguments).handle((out, failure) ->
                failure == null ? out : QmpDispatcher.error(ErrorClass.GENERIC_ERROR, "internal error: " + failure));
        inOrder(ctx, result, id).thenRunAsync(() -> { // on the event loop, queued behind the reply's write
            inFlight--;
            updateReading(ctx);
        }, ctx.executor());
    }

    /** Reads requests while few are running and little output waits; on the event loop. */
    private void updateReading(ChannelHandlerContext ctx) {
        boolean read = inFlight < MAX_IN_FLIGHT && queued.get() <= limits.pauseReading();
        if (ctx.channel().config().isAutoRead() != read) {
            ctx.channel().config().setAutoRead(read); // turned on, it reads at once
        }
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
     * Sends a reply after every earlier request's reply: QMP answers in the order it
     * was asked, even when a later answer (an error found at once) is ready first. Called on the
     * channel's event loop, which alone touches {@code replies}. The thread that completes the last
     * of the two queues the write on the event loop at once: a command's reply is queued from the
     * main loop before any event a later command publishes there (quit's SHUTDOWN), as in QEMU, and
     * a later reply found at once on the event loop is queued behind it, never written ahead.
     */
    private CompletableFuture<Void> inOrder(ChannelHandlerContext ctx, CompletableFuture<ObjectNode> reply, JsonNode id) {
        replies = replies.thenCombine(reply, (previous, out) -> out).thenAccept(out -> {
            if (id != null) {
                out.set("id", id);
            }
            ctx.executor().execute(() -> {
                try {
                    send(ctx, out);
                } catch (RuntimeException e) { // one reply that cannot be written must not stop the rest
                    LOG.warn("cannot send a QMP reply: {}", e.toString());
                }
            });
        });
        return replies;
    }

    /** Sends a message, from any thread, unless it would take the monitor's output over its bound. */
    private void send(ChannelHandlerContext ctx, ObjectNode message) {
        String text = pretty ? QmpPrettyWriter.write(message) : WRITER.writeValueAsString(message) + "\r\n";
        byte[] bytes = text.getBytes(StandardCharsets.US_ASCII);
        long before = queued.getAndAdd(bytes.length);
        if (before > 0 && before + bytes.length > limits.maxQueued()) {
            queued.addAndGet(-bytes.length);
            if (overflowed.compareAndSet(false, true)) {
                LOG.warn("QMP {} disconnected: it does not read its socket, and its output would exceed {} bytes",
                        name, limits.maxQueued());
                ctx.channel().close(); // frees what waits for it; never the daemon's memory
            }
            return;
        }
        ctx.writeAndFlush(Unpooled.wrappedBuffer(bytes)).addListener(f -> { // on the event loop
            queued.addAndGet(-bytes.length);
            if (!ctx.channel().config().isAutoRead() && ctx.channel().isActive()) {
                updateReading(ctx);
            }
        });
        if (before <= limits.pauseReading() && before + bytes.length > limits.pauseReading()) {
            ctx.executor().execute(() -> updateReading(ctx));
        }
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        LOG.debug("QMP {} disconnected", name);
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
