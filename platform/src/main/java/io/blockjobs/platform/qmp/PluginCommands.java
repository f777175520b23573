package io.blockjobs.platform.qmp;

import io.blockjobs.platform.job.JobManager;
import io.blockjobs.platform.plugin.PluginHost;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobCommand;
import java.nio.file.Path;

/** {@code query-plugins}, {@code plugin-load}, {@code plugin-unload}, and plugins' job commands. */
public final class PluginCommands {
    private PluginCommands() {
    }

    /** {@code plugin-load}'s arguments. */
    public record LoadArgs(String path) {
    }

    /** {@code plugin-load}'s reply. */
    public record LoadReply(String id) {
    }

    /** {@code plugin-unload}'s arguments. */
    public record UnloadArgs(String id) {
    }

    /** Turns plugins' job commands into QMP commands that start their jobs. */
    public static PluginHost.CommandSink sink(QmpDispatcher d, JobManager jobs) {
        return new PluginHost.CommandSink() {
            @Override
            public void add(JobCommand<?> command) {
                d.register(qmpCommand(command, jobs));
            }

            @Override
            public void addCommand(io.blockjobs.sdk.plugin.Command<?> command) {
                d.register(plainCommand(command));
            }

            @Override
            public void remove(String name) {
                d.unregister(name);
            }
        };
    }

    private static <A extends JobArgs> QmpCommand<A> qmpCommand(JobCommand<A> c, JobManager jobs) {
        return QmpCommand.of(c.name(), c.arguments(), null, args -> {
            jobs.startBlockJob(c, args);
            return null;
        });
    }

    private static <A> QmpCommand<A> plainCommand(io.blockjobs.sdk.plugin.Command<A> c) {
        return QmpCommand.of(c.name(), c.arguments(), c.returns(), args -> c.handler().run(args));
    }

    public static void register(QmpDispatcher d, PluginHost host) {
        d.register(QmpCommand.of("query-plugins", Void.class, QmpTypes.listOf(PluginHost.PluginInfo.class),
                a -> host.query()));
        d.register(QmpCommand.of("plugin-load", LoadArgs.class, LoadReply.class,
                a -> new LoadReply(host.load(Path.of(a.path())))));
        d.register(QmpCommand.of("plugin-unload", UnloadArgs.class, null, a -> {
            host.unload(a.id());
            return null;
        }));
    }
}
