package io.blockjobs.platform.plugin;

import java.io.IOException;
import java.io.StringWriter;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.SimpleJavaFileObject;
import javax.tools.ToolProvider;

/**
 * Builds a real plugin at test time: Java sources compiled with javac against the SDK, PF4J
 * and SLF4J (with PF4J's annotation processor, as a plugin's build does), packed with a
 * {@code plugin.properties} as a jar, or as a zip with {@code classes/} and bundled {@code lib/}
 * jars.
 */
final class TestPlugin {
    private final Path work;
    private final Map<String, String> properties = new LinkedHashMap<>();
    private final Map<String, String> sources = new LinkedHashMap<>();
    private final List<Path> libs = new ArrayList<>();
    private final List<Path> dependencies = new ArrayList<>();

    TestPlugin(Path work, String id) {
        this.work = work;
        properties.put("plugin.id", id);
        properties.put("plugin.version", "0.0.1");
    }

    /** Sets a {@code plugin.properties} entry; null removes it. */
    TestPlugin property(String key, String value) {
        if (value == null) {
            properties.remove(key);
        } else {
            properties.put(key, value);
        }
        return this;
    }

    TestPlugin requires(String expression) {
        return property("plugin.requires", expression);
    }

    /** A class of the plugin, by its binary name. */
    TestPlugin source(String className, String code) {
        sources.put(className, code);
        return this;
    }

    /** A jar the plugin bundles (zip plugins only); its classes are on the plugin's compile path. */
    TestPlugin lib(Path jar) {
        libs.add(jar);
        return this;
    }

    /**
     * Another plugin this one uses: its classes are on the compile path (not bundled), and
     * {@code plugin.dependencies} names it.
     */
    TestPlugin dependsOn(String pluginId, Path pluginJar) {
        dependencies.add(pluginJar);
        String before = properties.get("plugin.dependencies");
        return property("plugin.dependencies", before == null ? pluginId : before + ", " + pluginId);
    }

    private List<Path> compilePath() {
        List<Path> path = new ArrayList<>(libs);
        path.addAll(dependencies);
        return path;
    }

    /** The plugin as one jar: classes, {@code META-INF/extensions.idx} and {@code plugin.properties}. */
    Path jar(String fileName) throws IOException {
        if (!libs.isEmpty()) {
            throw new IllegalStateException("PF4J reads bundled jars only from a zip plugin");
        }
        Path classes = compile(sources, compilePath(), work.resolve(fileName + ".classes"));
        Path jar = work.resolve(fileName);
        try (ZipOutputStream out = new ZipOutputStream(Files.newOutputStream(jar))) {
            put(out, "plugin.properties", descriptor());
            putTree(out, classes, "");
        }
        return jar;
    }

    /** The plugin as PF4J's zip layout: {@code plugin.properties}, {@code classes/}, {@code lib/*.jar}. */
    Path zip(String fileName) throws IOException {
        Path classes = compile(sources, compilePath(), work.resolve(fileName + ".classes"));
        Path zip = work.resolve(fileName);
        try (ZipOutputStream out = new ZipOutputStream(Files.newOutputStream(zip))) {
            put(out, "plugin.properties", descriptor());
            putTree(out, classes, "classes/");
            for (Path lib : libs) {
                put(out, "lib/" + lib.getFileName(), Files.readAllBytes(lib));
            }
        }
        return zip;
    }

    /** A plain library jar (no descriptor), to bundle in a zip plugin. */
    static Path library(Path work, String fileName, Map<String, String> sources) throws IOException {
        Path classes = compile(sources, List.of(), work.resolve(fileName + ".classes"));
        Path jar = work.resolve(fileName);
        try (ZipOutputStream out = new ZipOutputStream(Files.newOutputStream(jar))) {
            putTree(out, classes, "");
        }
        return jar;
    }

    private byte[] descriptor() {
        StringBuilder text = new StringBuilder();
        properties.forEach((k, v) -> text.append(k).append('=').append(v).append('\n'));
        return text.toString().getBytes(StandardCharsets.ISO_8859_1);
    }

    private static Path compile(Map<String, String> sources, List<Path> libs, Path out) throws IOException {
        Files.createDirectories(out);
        List<String> classPath = new ArrayList<>();
        for (Class<?> api : List.of(io.blockjobs.sdk.plugin.Sdk.class, org.pf4j.Extension.class,
                org.slf4j.Logger.class)) {
            classPath.add(codeSource(api).toString());
        }
        libs.forEach(l -> classPath.add(l.toString()));
        List<JavaFileObject> units = new ArrayList<>();
        sources.forEach((name, code) -> units.add(new SimpleJavaFileObject(
                URI.create("string:///" + name.replace('.', '/') + ".java"), JavaFileObject.Kind.SOURCE) {
            @Override
            public CharSequence getCharContent(boolean ignoreEncodingErrors) {
                return code;
            }
        }));
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        StringWriter diagnostics = new StringWriter();
        boolean ok = javac.getTask(diagnostics, null, null, List.of("--release", "21", "-proc:full",
                "-d", out.toString(), "-classpath", String.join(java.io.File.pathSeparator, classPath)),
                null, units).call();
        if (!ok) {
            throw new IllegalStateException("the test plugin does not compile:\n" + diagnostics);
        }
        return out;
    }

    private static Path codeSource(Class<?> c) {
        try {
            return Path.of(c.getProtectionDomain().getCodeSource().getLocation().toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void putTree(ZipOutputStream out, Path root, String prefix) throws IOException {
        List<Path> files;
        try (Stream<Path> walk = Files.walk(root)) {
            files = walk.filter(Files::isRegularFile).sorted().toList();
        }
        for (Path f : files) {
            put(out, prefix + root.relativize(f).toString().replace('\\', '/'), Files.readAllBytes(f));
        }
    }

    private static void put(ZipOutputStream out, String name, byte[] bytes) throws IOException {
        out.putNextEntry(new ZipEntry(name));
        out.write(bytes);
        out.closeEntry();
    }
}
