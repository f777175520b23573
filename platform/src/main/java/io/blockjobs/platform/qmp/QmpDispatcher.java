package io.blockjobs.platform.qmp;

import io.blockjobs.platform.Json;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * Runs QMP commands, one at a time on the daemon's main loop (a virtual thread), as QEMU runs
 * them under its big lock: commands see a consistent graph, and each monitor's replies come in
 * the order of its requests. Arguments are checked before the handler runs.
 */
public final class QmpDispatcher implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(QmpDispatcher.class);

    private final Map<String, QmpCommand<?>> commands = new TreeMap<>();
    private volatile Thread mainLoopThread;
    private final ExecutorService mainLoop = Executors.newSingleThreadExecutor(r -> {
        Thread t = Thread.ofVirtual().name("qmp-main").unstarted(r);
        mainLoopThread = t;
        return t;
    });

    /** Adds a command; its name must be new. */
    public synchronized void register(QmpCommand<?> command) {
        if (commands.putIfAbsent(command.name(), command) != null) {
            throw new IllegalStateException("command " + command.name() + " registered twice");
        }
    }

    public synchronized void unregister(String name) {
        commands.remove(name);
    }

    public synchronized List<QmpCommand<?>> commands() {
        return new ArrayList<>(commands.values());
    }

    /** Runs {@code task} on the main loop, between commands. */
    public <T> CompletableFuture<T> onMainLoop(java.util.concurrent.Callable<T> task) {
        CompletableFuture<T> f = new CompletableFuture<>();
        mainLoop.execute(() -> {
            try {
                f.complete(task.call());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        return f;
    }

    /** Runs {@code task} on the main loop and waits for it (directly, if already there). */
    public <T> T callOnMainLoop(java.util.concurrent.Callable<T> task) throws Exception {
        if (Thread.currentThread() == mainLoopThread) {
            return task.call();
        }
        try {
            return onMainLoop(task).get();
        } catch (java.util.concurrent.ExecutionException e) {
            throw e.getCause() instanceof Exception ex ? ex : new RuntimeException(e.getCause());
        }
    }

    /**
     * Executes a command on the main loop.
     *
     * @return the reply member: {@code {"return": ...}} or {@code {"error": ...}}, without the id
     */
    public CompletableFuture<ObjectNode> execute(String name, JsonNode arguments) {
        CompletableFuture<ObjectNode> reply = new CompletableFuture<>();
        mainLoop.execute(() -> reply.complete(run(name, arguments)));
        return reply;
    }

    private ObjectNode run(String name, JsonNode arguments) {
        QmpCommand<?> command;
        synchronized (this) {
            command = commands.get(name);
        }
        if (command == null) {
            return error(ErrorClass.COMMAND_NOT_FOUND, "The command " + name + " has not been found");
        }
        try {
            Object result = invoke(command, arguments);
            ObjectNode reply = Json.object();
            reply.set("return", result == null ? Json.object() : Json.MAPPER.valueToTree(result));
            return reply;
        } catch (CommandException e) {
            return error(e.errorClass(), e.getMessage());
        } catch (Exception | Error e) { // even an Error gets a reply: the client must not wait forever
            LOG.error("command {} failed unexpectedly", name, e);
            return error(ErrorClass.GENERIC_ERROR, name + " failed: " + e);
        }
    }

    private static <A> Object invoke(QmpCommand<A> command, JsonNode arguments) throws Exception {
        Class<A> type = command.arguments();
        JsonNode args = arguments == null ? Json.object() : arguments;
        if (type == Void.class) {
            QmpTypes.check(args, NoArguments.class, "", false);
            return command.handler().handle(null);
        }
        if (type == JsonNode.class) {
            if (!args.isObject()) {
                throw new CommandException("QMP input member 'arguments' must be an object");
            }
            return command.handler().handle(type.cast(args));
        }
        JsonNode checked = QmpTypes.check(args, type, "", false);
        return command.handler().handle(Json.MAPPER.treeToValue(checked, type));
    }

    /** Checks and converts command-line {@code key=value} arguments, then runs the command. */
    public CompletableFuture<ObjectNode> executeKeyval(String name, JsonNode arguments) {
        QmpCommand<?> command;
        synchronized (this) {
            command = commands.get(name);
        }
        JsonNode args = arguments;
        if (command != null && command.arguments() != Void.class && command.arguments() != JsonNode.class) {
            try {
                args = QmpTypes.check(arguments, command.arguments(), "", true);
            } catch (CommandException e) {
                return CompletableFuture.completedFuture(error(e.errorClass(), e.getMessage()));
            }
        }
        return execute(name, args);
    }

    static ObjectNode error(ErrorClass errorClass, String desc) {
        ObjectNode reply = Json.object();
        reply.putObject("error").put("class", errorClass.qmpName()).put("desc", desc);
        return reply;
    }

    /** The empty argument record. */
    record NoArguments() {
    }

    @Override
    public void close() {
        mainLoop.shutdownNow();
    }
}
