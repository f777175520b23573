package io.blockjobs.platform.plugin;

import java.io.IOException;
import java.net.URL;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Enumeration;
import java.util.List;
import org.pf4j.PluginClassLoader;
import org.pf4j.PluginDescriptor;
import org.pf4j.PluginManager;

/**
 * A plugin's class loader. It finds the JDK's classes, the host's SDK, PF4J and SLF4J, and the
 * plugin's own classes and bundled jars (then those of the plugins it depends on), and nothing
 * else: the rest of the host's class path ({@code io.blockjobs.platform}, Jackson, Netty, ...)
 * is not found, so a plugin cannot come to depend on the platform's insides. PF4J's own loader
 * falls back to the host for every class.
 *
 * <p>The JDK is whatever the platform class loader defines (never the class path); the SDK, PF4J
 * and SLF4J always come from the host, so their classes are the host's even if a plugin bundles
 * copies. Resources follow the same rule.
 */
final class SdkOnlyClassLoader extends PluginClassLoader {
    /** The host packages a plugin sees: its API and the two libraries the API is made of. */
    static final List<String> HOST_PACKAGES = List.of("io.blockjobs.sdk.", "org.pf4j.", "org.slf4j.");

    private static final ClassLoader JDK = ClassLoader.getPlatformClassLoader();

    SdkOnlyClassLoader(PluginManager manager, PluginDescriptor descriptor, ClassLoader host) {
        super(manager, descriptor, host);
    }

    @Override
    public Class<?> loadClass(String name) throws ClassNotFoundException {
        return loadClass(name, false);
    }

    @Override
    protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
        synchronized (getClassLoadingLock(name)) {
            Class<?> c = findLoadedClass(name);
            if (c == null) {
                c = locate(name);
            }
            if (resolve) {
                resolveClass(c);
            }
            return c;
        }
    }

    private Class<?> locate(String name) throws ClassNotFoundException {
        try {
            return JDK.loadClass(name);
        } catch (ClassNotFoundException notTheJdks) {
            // next
        }
        if (isHostApi(name)) {
            return getParent().loadClass(name);
        }
        try {
            return findClass(name);
        } catch (ClassNotFoundException notOwn) {
            // next
        }
        Class<?> c = loadClassFromDependencies(name);
        if (c != null) {
            return c;
        }
        if (getParent().getResource(name.replace('.', '/') + ".class") != null) {
            throw new ClassNotFoundException(name + " (the host has it, but a plugin sees only the JDK, "
                    + String.join(", ", HOST_PACKAGES.stream().map(p -> p + "*").toList())
                    + " and its own classes)");
        }
        throw new ClassNotFoundException(name);
    }

    @Override
    public URL getResource(String name) {
        URL url = findResource(name);
        if (url == null) {
            url = findResourceFromDependencies(name);
        }
        if (url == null) {
            url = JDK.getResource(name);
        }
        if (url == null && isHostApiResource(name)) {
            url = getParent().getResource(name);
        }
        return url;
    }

    @Override
    public Enumeration<URL> getResources(String name) throws IOException {
        List<URL> urls = new ArrayList<>(Collections.list(findResources(name)));
        urls.addAll(findResourcesFromDependencies(name));
        urls.addAll(Collections.list(JDK.getResources(name)));
        if (isHostApiResource(name)) {
            urls.addAll(Collections.list(getParent().getResources(name)));
        }
        return Collections.enumeration(urls);
    }

    static boolean isHostApi(String className) {
        return HOST_PACKAGES.stream().anyMatch(className::startsWith);
    }

    private static boolean isHostApiResource(String name) {
        String path = name.startsWith("/") ? name.substring(1) : name;
        return HOST_PACKAGES.stream().anyMatch(p -> path.startsWith(p.replace('.', '/')));
    }
}
