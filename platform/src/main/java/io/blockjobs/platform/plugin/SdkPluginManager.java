package io.blockjobs.platform.plugin;

import io.blockjobs.sdk.plugin.Sdk;
import java.nio.file.Path;
import java.util.List;
import org.pf4j.CompoundPluginLoader;
import org.pf4j.DefaultPluginLoader;
import org.pf4j.DefaultPluginManager;
import org.pf4j.DevelopmentPluginLoader;
import org.pf4j.JarPluginLoader;
import org.pf4j.PluginClassLoader;
import org.pf4j.PluginDescriptor;
import org.pf4j.PluginLoader;
import org.pf4j.PluginRuntimeException;
import org.pf4j.VersionManager;

/**
 * PF4J's plugin manager with the platform's two rules: a plugin's {@code plugin.requires} must
 * admit this SDK's version ({@link Sdk#VERSION} is PF4J's system version), checked before any of
 * the plugin's classes load; and every plugin gets an {@link SdkOnlyClassLoader}.
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
        if (refusal != null) {
            throw new Refused(refusal);
        }
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
