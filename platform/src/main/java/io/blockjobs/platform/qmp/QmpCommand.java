package io.blockjobs.platform.qmp;

import java.lang.reflect.Type;

/**
 * A QMP command: its name, its argument record (or {@code Void} for none, {@code JsonNode} for
 * free-form options such as {@code blockdev-add}'s), what it returns, and its handler.
 *
 * @param <A> the argument type
 */
public record QmpCommand<A>(String name, Class<A> arguments, Type returns, Handler<A> handler) {

    /** Runs the command; returns what goes into {@code "return"} (null for {@code {}}). */
    @FunctionalInterface
    public interface Handler<A> {
        Object handle(A arguments) throws Exception;
    }

    public static <A> QmpCommand<A> of(String name, Class<A> arguments, Type returns, Handler<A> handler) {
        return new QmpCommand<>(name, arguments, returns, handler);
    }
}
