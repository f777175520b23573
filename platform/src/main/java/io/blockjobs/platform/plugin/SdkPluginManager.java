package io.blockjobs.platform.plugin;

import io.blockjobs.sdk.plugin.Sdk;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.pf4j.CompoundPluginLoader;
import org.pf4j.DefaultPluginLoader;
import org.pf4j.DefaultPluginManager;
import org.pf4j.DevelopmentPluginLoader;
import org.pf4j.JarPluginLoader;
import org.pf4j.PluginClassLoader;
import org.pf4j.PluginDependency;
import org.pf4j.PluginDescriptor;
import org.pf4j.PluginLoader;
import org.pf4j.PluginRuntimeException;
import org.pf4j.PluginWrapper;
import org.pf4j.VersionManager;

/**
 * PF4J's plugin manager with the platform's rules: a plugin's {@code plugin.requires} must
 * admit this SDK's version ({@link Sdk#VERSION} is PF4J's system version), and the plugins its
 * {@code plugin.dependencies} names must be loaded, both checked before any of the plugin's
 * classes load; and every plugin gets an {@link SdkOnlyClassLoader} (which finds the classes of
 * the plugins it depends on, after its own).
 *
 * <p>PF4J alone only logs a warning for a plugin whose {@code requires} excludes the system
 * version and leaves it disabled, and treats a missing {@code requires} as "any version". Here
 * both are refused with a {@link Refused} that says what to do.
 */
final class SdkPluginManager extends DefaultPluginManager {

    /** A plugin refused before loading; the message is for the operator as it is. */
    static final class Refused extends PluginRuntimeException {
        private static final long serialVersionUID = 1L;

        Refused(String message) {
            super(message);
        }
    }

    SdkPluginManager() {
        super(List.of());
        setSystemVersion(Sdk.VERSION);
    }

    @Override
    protected PluginLoader createPluginLoader() {
        ClassLoader host = SdkPluginManager.class.getClassLoader();
        // PF4J's choice of loaders (jar, unpacked zip, development folder), each with our class loader.
        return new CompoundPluginLoader()
                .add(new DevelopmentPluginLoader(this) {
                    @Override
                    protected PluginClassLoader createPluginClassLoader(Path path, PluginDescriptor descriptor) {
                        return new SdkOnlyClassLoader(pluginManager, descriptor, host);
                    }
                }, this::isDevelopment)
                .add(new JarPluginLoader(this) {
                    @Override
                    protected PluginClassLoader createPluginClassLoader(Path path, PluginDescriptor descriptor) {
                        return new SdkOnlyClassLoader(pluginManager, descriptor, host);
                    }
                }, this::isNotDevelopment)
                .add(new DefaultPluginLoader(this) {
                    @Override
                    protected PluginClassLoader createPluginClassLoader(Path path, PluginDescriptor descriptor) {
                        return new SdkOnlyClassLoader(pluginManager, descriptor, host);
                    }
                }, this::isNotDevelopment);
    }

    @Override
    protected void validatePluginDescriptor(PluginDescriptor descriptor) {
        super.validatePluginDescriptor(descriptor);
        String refusal = refusal(descriptor.getPluginId(), descriptor.getRequires(), getSystemVersion(),
                isExactVersionAllowed(), getVersionManager());
        if (refusal == null) {
            refusal = missingDependency(descriptor);
        }
        if (refusal != null) {
            throw new Refused(refusal);
        }
    }

    /**
     * Why a plugin cannot load for want of a plugin it depends on ({@code plugin.dependencies}),
     * or null. Checked before PF4J loads it: PF4J would load it, fail to resolve it, and keep it
     * half-loaded; here it is refused and the operator told what to load first.
     */
    private String missingDependency(PluginDescriptor descriptor) {
        for (PluginDependency d : descriptor.getDependencies()) {
            if (d.isOptional()) {
                continue;
            }
            PluginWrapper loaded = getPlugin(d.getPluginId());
            if (loaded == null) {
                return "Plugin '" + descriptor.getPluginId() + "' needs plugin '" + d.getPluginId()
                        + "', which is not loaded; load it first";
            }
            String support = d.getPluginVersionSupport();
            String version = loaded.getDescriptor().getVersion();
            if (!"*".equals(support) && !getVersionManager().checkVersionConstraint(version, support)) {
                return "Plugin '" + descriptor.getPluginId() + "' needs plugin '" + d.getPluginId() + "' " + support
                        + ", but version " + version + " is loaded";
            }
        }
        return null;
    }

    /** The descriptor of the plugin at {@code path}, or null if it has none PF4J can read. */
    PluginDescriptor describe(Path path) {
        try {
            return getPluginDescriptorFinder().find(path);
        } catch (RuntimeException e) {
            return null;
        }
    }

    /**
     * The plugins of {@code paths} in an order that loads each one's dependencies before it, else
     * in the given order; one whose descriptor cannot be read, or that is part of a cycle, comes
     * last (and is refused at load with its reason).
     */
    List<Path> inDependencyOrder(List<Path> paths) {
        Map<Path, PluginDescriptor> descriptors = new LinkedHashMap<>();
        Set<String> provided = new HashSet<>();
        for (Path p : paths) {
            PluginDescriptor d = describe(p);
            descriptors.put(p, d);
            if (d != null) {
                provided.add(d.getPluginId());
            }
        }
        List<Path> ordered = new ArrayList<>();
        Set<String> placed = new HashSet<>();
        boolean progress = true;
        while (progress) {
            progress = false;
            for (Map.Entry<Path, PluginDescriptor> e : descriptors.entrySet()) {
                PluginDescriptor d = e.getValue();
                if (d == null || ordered.contains(e.getKey())) {
                    continue;
                }
                // a dependency that no jar here provides is refused at load, in its turn
                boolean ready = d.getDependencies().stream().map(PluginDependency::getPluginId)
                        .allMatch(id -> placed.contains(id) || !provided.contains(id));
                if (ready) {
                    ordered.add(e.getKey());
                    placed.add(d.getPluginId());
                    progress = true;
                    break; // look again from the start: keeps the given order where it can
                }
            }
        }
        for (Path p : paths) {
            if (!ordered.contains(p)) {
                ordered.add(p);
            }
        }
        return ordered;
    }

    /** The loaded plugins that depend on {@code pluginId} ({@code plugin.dependencies}, optional ones too). */
    List<String> dependents(String pluginId) {
        List<String> out = new ArrayList<>();
        for (PluginWrapper w : getPlugins()) {
            for (PluginDependency d : w.getDescriptor().getDependencies()) {
                if (d.getPluginId().equals(pluginId)) {
                    out.add(w.getPluginId());
                }
            }
        }
        return out;
    }

    /**
     * Why a plugin that requires {@code requires} may not run on SDK {@code sdk}, or null if it
     * may. A bare {@code x.y.z} means {@code >=x.y.z} unless {@code exactAllowed}, as in PF4J.
     */
    static String refusal(String id, String requires, String sdk, boolean exactAllowed, VersionManager versions) {
        String expression = requires == null ? "" : requires.trim();
        if (expression.isEmpty() || expression.equals("*")) {
            // PF4J reads a missing plugin.requires as "*": it would admit an SDK with another major.
            return "Plugin '" + id + "' does not declare the SDK it was built against; add plugin.requires=^"
                    + sdk + " (or the version it was built against) to its plugin.properties";
        }
        if (!exactAllowed && expression.matches("\\d+\\.\\d+\\.\\d+")) {
            expression = ">=" + expression;
        }
        boolean admitted;
        try {
            admitted = versions.checkVersionConstraint(sdk, expression);
        } catch (RuntimeException e) {
            return "Plugin '" + id + "' has plugin.requires '" + requires.trim()
                    + "', which is not a version range such as ^" + sdk + " (" + e.getMessage() + ")";
        }
        if (!admitted) {
            return "Plugin '" + id + "' requires SDK " + requires.trim() + " but this daemon provides SDK " + sdk
                    + "; rebuild it against SDK " + sdk;
        }
        return null;
    }
}
