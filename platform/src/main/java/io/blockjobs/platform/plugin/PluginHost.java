package io.blockjobs.platform.plugin;

import io.blockjobs.platform.graph.BlockGraph;
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
import org.pf4j.PluginState;
import org.pf4j.PluginWrapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The PF4J plugin manager, run on the daemon's main loop only (PF4J is not thread-safe). A
 * plugin's job commands are registered when it starts and removed before it stops; a plugin
 * that fails to load is recorded with its reason, and the others go on. A plugin whose
 * {@code plugin.requires} does not admit this SDK ({@link io.blockjobs.sdk.plugin.Sdk#VERSION})
 * is refused, as is one whose {@code plugin.dependencies} are not loaded; a plugin's classes see
 * only the SDK, PF4J, SLF4J, the JDK and the plugins it depends on ({@link SdkPluginManager}).
 */
public final class PluginHost {
    private static final Logger LOG = LoggerFactory.getLogger(PluginHost.class);

    /** Where a plugin's commands go (the QMP dispatcher); {@code add} throws if a name is taken. */
    public interface CommandSink {
        void add(JobCommand<?> command);

        void addCommand(io.blockjobs.sdk.plugin.Command<?> command);

        void remove(String name);
    }

    /** What one started plugin contributed, to withdraw when it goes. */
    private record Contributions(List<JobCommand<?>> jobCommands, List<io.blockjobs.sdk.plugin.Command<?>> commands,
                                 List<String> drivers) {
        List<String> commandNames() {
            List<String> names = new ArrayList<>();
            jobCommands.forEach(c -> names.add(c.name()));
            commands.forEach(c -> names.add(c.name()));
            return names;
        }
    }

    private final SdkPluginManager manager;
    private final CommandSink dispatcher;
    private final JobManager jobs;
    private final io.blockjobs.platform.graph.DriverRegistry drivers;
    private final BlockGraph graph;
    private final Map<String, Contributions> contributed = new LinkedHashMap<>();
    private final Map<String, String> failures = new LinkedHashMap<>(); // path -> reason

    public PluginHost(CommandSink dispatcher, JobManager jobs, BlockGraph graph) {
        this.dispatcher = dispatcher;
        this.jobs = jobs;
        this.graph = graph;
        this.drivers = graph.drivers();
        this.manager = new SdkPluginManager();
    }

    /** QMP's {@code PluginInfo}. */
    public record PluginInfo(String id, String version, String state, String path, List<String> commands,
                             Optional<String> error) {
    }

    /**
     * Loads every plugin jar in {@code dir}, each after the plugins it depends on
     * ({@code plugin.dependencies}), else by file name; failures are recorded, not thrown.
     */
    public void loadAll(Path dir) throws IOException {
        List<Path> jars;
        try (Stream<Path> s = Files.list(dir)) {
            jars = s.filter(p -> p.toString().endsWith(".jar") || p.toString().endsWith(".zip")).sorted().toList();
        }
        for (Path jar : manager.inDependencyOrder(jars)) {
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
        } catch (SdkPluginManager.Refused e) {
            failures.put(jar.toString(), e.getMessage());
            throw new CommandException(e.getMessage());
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
            List<JobCommand<?>> jobCommands = new ArrayList<>();
            List<io.blockjobs.sdk.plugin.Command<?>> plain = new ArrayList<>();
            List<io.blockjobs.sdk.driver.BlockDriver> blockDrivers = new ArrayList<>();
            for (JobType type : manager.getExtensions(JobType.class, id)) {
                jobCommands.addAll(type.commands());
            }
            for (io.blockjobs.sdk.plugin.BlockjobsPlugin p : manager.getExtensions(
                    io.blockjobs.sdk.plugin.BlockjobsPlugin.class, id)) {
                jobCommands.addAll(p.jobCommands());
                plain.addAll(p.commands());
                blockDrivers.addAll(p.blockDrivers());
            }
            if (jobCommands.isEmpty() && plain.isEmpty() && blockDrivers.isEmpty()) {
                throw new IllegalStateException("it contributes nothing (is META-INF/extensions.idx missing?)");
            }
            List<String> registered = new ArrayList<>();
            List<String> registeredDrivers = new ArrayList<>();
            try {
                for (JobCommand<?> c : jobCommands) {
                    dispatcher.add(c);
                    registered.add(c.name());
                }
                for (io.blockjobs.sdk.plugin.Command<?> c : plain) {
                    dispatcher.addCommand(c);
                    registered.add(c.name());
                }
                for (io.blockjobs.sdk.driver.BlockDriver d : blockDrivers) {
                    drivers.register(d, id);
                    registeredDrivers.add(d.name());
                }
            } catch (IllegalStateException e) {
                registered.forEach(dispatcher::remove);
                registeredDrivers.forEach(drivers::unregister);
                throw new IllegalStateException("something it adds exists already: " + e.getMessage());
            }
            contributed.put(id, new Contributions(jobCommands, plain, registeredDrivers));
            failures.remove(jar.toString());
            LOG.info("plugin {} {} started: commands {}, drivers {}", id,
                    manager.getPlugin(id).getDescriptor().getVersion(), registered, registeredDrivers);
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
        return contributed.values().stream().flatMap(c -> c.jobCommands().stream())
                .filter(c -> c.name().equals(name)).findFirst();
    }

    /**
     * QMP {@code plugin-unload}: refused while a job of the plugin's types exists, a node opened
     * by one of its drivers (the node's code lives in the plugin's class loader), or a loaded
     * plugin that depends on it (PF4J would unload that one too, behind the host's back).
     */
    public void unload(String id) {
        PluginWrapper w = manager.getPlugin(id);
        if (w == null) {
            throw new CommandException("Plugin '" + id + "' is not loaded");
        }
        List<String> dependents = manager.dependents(id);
        if (!dependents.isEmpty()) {
            throw new CommandException("Plugin '" + id + "' is needed by plugin '" + String.join("', '", dependents)
                    + "'; unload that first");
        }
        Contributions cs = contributed.getOrDefault(id, new Contributions(List.of(), List.of(), List.of()));
        Set<String> types = new TreeSet<>();
        cs.jobCommands().forEach(c -> types.add(c.jobType()));
        String job = jobs.jobOfType(types);
        if (job != null) {
            throw new CommandException("Plugin '" + id + "' has job '" + job + "'; cancel or dismiss it first");
        }
        for (io.blockjobs.platform.graph.GraphNode n : graph.all()) {
            if (cs.drivers().contains(n.driver())) {
                throw new CommandException("Plugin '" + id + "' has block node '" + n.name() + "' (driver '"
                        + n.driver() + "'); delete it first");
            }
        }
        cs.commandNames().forEach(dispatcher::remove);
        cs.drivers().forEach(drivers::unregister);
        contributed.remove(id); // drop every extension reference before the class loader goes
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
            Contributions c = contributed.get(w.getPluginId());
            List<String> names = c == null ? List.of() : c.commandNames();
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
