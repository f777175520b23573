package io.blockjobs.platform.plugin;

import io.blockjobs.platform.job.JobManager;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.pf4j.DefaultPluginManager;
import org.pf4j.PluginManager;
import org.pf4j.PluginState;
import org.pf4j.PluginWrapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The PF4J plugin manager, run on the daemon's main loop only (PF4J is not thread-safe). A
 * plugin's job commands are registered when it starts and removed before it stops; a plugin
 * that fails to load is recorded with its reason, and the others go on.
 */
public final class PluginHost {
    private static final Logger LOG = LoggerFactory.getLogger(PluginHost.class);

    /** Where a plugin's commands go (the QMP dispatcher); {@code add} throws if a name is taken. */
    public interface CommandSink {
        void add(JobCommand<?> command);

        void remove(String name);
    }

    private final PluginManager manager;
    private final CommandSink dispatcher;
    private final JobManager jobs;
    private final Map<String, List<JobCommand<?>>> commands = new LinkedHashMap<>();
    private final Map<String, String> failures = new LinkedHashMap<>(); // path -> reason

    public PluginHost(CommandSink dispatcher, JobManager jobs, String systemVersion) {
        this.dispatcher = dispatcher;
        this.jobs = jobs;
        this.manager = new DefaultPluginManager(List.of());
        this.manager.setSystemVersion(systemVersion.replace("-SNAPSHOT", ""));
    }

    /** QMP's {@code PluginInfo}. */
    public record PluginInfo(String id, String version, String state, String path, List<String> commands,
                             Optional<String> error) {
    }

    /** Loads every plugin jar in {@code dir}; failures are recorded, not thrown. */
    public void loadAll(Path dir) throws IOException {
        List<Path> jars;
        try (Stream<Path> s = Files.list(dir)) {
            jars = s.filter(p -> p.toString().endsWith(".jar") || p.toString().endsWith(".zip")).sorted().toList();
        }
        for (Path jar : jars) {
            try {
                load(jar);
            } catch (RuntimeException e) {
                LOG.warn("plugin {} not loaded: {}", jar, e.getMessage());
            }
        }
    }

    /** QMP {@code plugin-load}: loads and starts one plugin; returns its id. */
    public String load(Path path) {
        Path jar = path.toAbsolutePath();
        if (!Files.isRegularFile(jar)) {
            throw new CommandException("Plugin '" + path + "' is not a file");
        }
        String id;
        try {
            id = manager.loadPlugin(jar);
        } catch (RuntimeException e) {
            failures.put(jar.toString(), reason(e));
            throw new CommandException("Could not load plugin '" + path + "': " + reason(e));
        }
        if (id == null) {
            failures.put(jar.toString(), "not a plugin, or a plugin with this id is already loaded");
            throw new CommandException("Could not load plugin '" + path + "': not a plugin, or already loaded");
        }
        try {
            PluginState state = manager.startPlugin(id);
            if (state != PluginState.STARTED) {
                throw new IllegalStateException("it did not start (state " + state + ")");
            }
            List<JobCommand<?>> added = new ArrayList<>();
            for (JobType type : manager.getExtensions(JobType.class, id)) {
                added.addAll(type.commands());
            }
            if (added.isEmpty()) {
                throw new IllegalStateException("it contributes no job type (is META-INF/extensions.idx missing?)");
            }
            List<String> registered = new ArrayList<>();
            try {
                for (JobCommand<?> c : added) {
                    dispatcher.add(c);
                    registered.add(c.name());
                }
            } catch (IllegalStateException e) {
                registered.forEach(dispatcher::remove);
                throw new IllegalStateException("a command it adds exists already: " + e.getMessage());
            }
            commands.put(id, added);
            failures.remove(jar.toString());
            LOG.info("plugin {} {} started: {}", id, manager.getPlugin(id).getDescriptor().getVersion(), registered);
            return id;
        } catch (RuntimeException e) {
            failures.put(jar.toString(), reason(e));
            try {
                manager.unloadPlugin(id);
            } catch (RuntimeException ignored) {
                // already reported
            }
            throw new CommandException("Could not start plugin '" + id + "': " + reason(e));
        }
    }

    /** The job command a plugin contributed under {@code name}, for transaction actions. */
    public Optional<JobCommand<?>> jobCommand(String name) {
        return commands.values().stream().flatMap(List::stream).filter(c -> c.name().equals(name)).findFirst();
    }

    /** QMP {@code plugin-unload}: refused while a job of the plugin's types exists. */
    public void unload(String id) {
        PluginWrapper w = manager.getPlugin(id);
        if (w == null) {
            throw new CommandException("Plugin '" + id + "' is not loaded");
        }
        List<JobCommand<?>> cs = commands.getOrDefault(id, List.of());
        Set<String> types = new TreeSet<>();
        cs.forEach(c -> types.add(c.jobType()));
        String job = jobs.jobOfType(types);
        if (job != null) {
            throw new CommandException("Plugin '" + id + "' has job '" + job + "'; cancel or dismiss it first");
        }
        cs.forEach(c -> dispatcher.remove(c.name()));
        commands.remove(id); // drop every extension reference before the class loader goes
        manager.stopPlugin(id);
        if (!manager.unloadPlugin(id)) {
            throw new CommandException("Plugin '" + id + "' could not be unloaded");
        }
        LOG.info("plugin {} unloaded", id);
    }

    /** QMP {@code query-plugins}: loaded plugins, then jars that failed. */
    public List<PluginInfo> query() {
        List<PluginInfo> out = new ArrayList<>();
        for (PluginWrapper w : manager.getPlugins()) {
            List<String> names = commands.getOrDefault(w.getPluginId(), List.of()).stream().map(JobCommand::name).toList();
            out.add(new PluginInfo(w.getPluginId(), w.getDescriptor().getVersion(),
                    w.getPluginState().toString().toLowerCase(java.util.Locale.ROOT), w.getPluginPath().toString(),
                    names, Optional.empty()));
        }
        failures.forEach((path, reason) -> out.add(new PluginInfo(Path.of(path).getFileName().toString(), "", "failed",
                path, List.of(), Optional.of(reason))));
        return out;
    }

    private static String reason(Throwable e) {
        Throwable t = e;
        while (t.getCause() != null && t.getMessage() == null) {
            t = t.getCause();
        }
        return t.getMessage() == null ? t.toString() : t.getMessage();
    }
}
