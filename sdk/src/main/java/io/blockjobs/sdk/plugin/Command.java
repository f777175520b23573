package io.blockjobs.sdk.plugin;

/**
 * A plain QMP command a plugin adds. The handler runs on the daemon's main loop, one command at
 * a time; what it returns is the reply's {@code return} (serialised as JSON; null for
 * {@code {}}). Throw {@link io.blockjobs.sdk.error.CommandException} to reply with an error.
 *
 * @param name      the command's name: QEMU's, or {@code x-vendor-...}
 * @param arguments the argument record (kebab-case members, {@code Optional} for optional ones),
 *                  or {@code Void.class} for none
 * @param returns   the type of what the handler returns, for {@code query-qmp-schema}, or null
 * @param handler   the command's work
 * @param <A>       the argument record
 */
public record Command<A>(String name, Class<A> arguments, Class<?> returns, Handler<A> handler) {

    /** A command's work. */
    @FunctionalInterface
    public interface Handler<A> {
        /** Runs the command with its checked arguments. */
        Object run(A arguments) throws Exception;
    }
}
