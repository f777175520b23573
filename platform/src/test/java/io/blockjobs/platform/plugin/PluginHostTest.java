package io.blockjobs.platform.plugin;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.DriverRegistry;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.plugin.Command;
import io.blockjobs.sdk.plugin.Sdk;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Collectors;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.pf4j.DefaultVersionManager;
import org.pf4j.Extension;
import org.slf4j.LoggerFactory;

/** Plugins built at test time and loaded by the real host: the SDK version check and class isolation. */
class PluginHostTest {
    private static final String PLATFORM_CLASS = BlockGraph.class.getName();

    @TempDir
    Path dir;
    final Map<String, Command<?>> commands = new LinkedHashMap<>();
    PluginHost host;

    @BeforeEach
    void host() {
        BlockGraph graph = new BlockGraph(new DriverRegistry());
        JobManager jobs = new JobManager(new EventBus(), graph, new JobManager.MainLoop() {
            @Override
            public <T> T call(Callable<T> task) throws Exception {
                return task.call();
            }
        });
        host = new PluginHost(new PluginHost.CommandSink() {
            @Override
            public void add(JobCommand<?> command) {
                throw new AssertionError("the test plugins have no job commands");
            }

            @Override
            public void addCommand(Command<?> command) {
                commands.put(command.name(), command);
            }

            @Override
            public void remove(String name) {
                commands.remove(name);
            }
        }, jobs, graph);
    }

    /** A plugin whose {@code x-probe} command loads each class named and returns the class or the exception. */
    private TestPlugin probe(String id, String requires, List<String> classNames) {
        String names = classNames.stream().map(n -> '"' + n + '"').collect(Collectors.joining(", "));
        return new TestPlugin(dir, id).requires(requires).source("probe.Probe", """
                package probe;

                import io.blockjobs.sdk.plugin.BlockjobsPlugin;
                import io.blockjobs.sdk.plugin.Command;
                import java.util.LinkedHashMap;
                import java.util.List;
                import java.util.Map;
                import org.pf4j.Extension;

                @Extension
                public final class Probe implements BlockjobsPlugin {
                    @Override
                    public List<Command<?>> commands() {
                        return List.of(new Command<>("x-probe", Void.class, null, args -> {
                            Map<String, Object> seen = new LinkedHashMap<>();
                            for (String name : List.<String>of(%s)) {
                                try {
                                    seen.put(name, Class.forName(name));
                                } catch (ClassNotFoundException e) {
                                    seen.put(name, e);
                                }
                            }
                            seen.put("resource:" + "%s", Probe.class.getClassLoader().getResource("%s"));
                            return seen;
                        }));
                    }
                }
                """.formatted(names, PLATFORM_CLASS, PLATFORM_CLASS.replace('.', '/') + ".class"));
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> runProbe() throws Exception {
        assertThat(commands).containsKey("x-probe");
        return (Map<String, Object>) ((Command<Object>) commands.get("x-probe")).handler().run(null);
    }

    private static String compatible() {
        return "^" + Sdk.VERSION;
    }

    private static String nextMajor() {
        return "^" + (Integer.parseInt(Sdk.VERSION.split("\\.")[0]) + 1) + ".0.0";
    }

    @Test
    void aPluginSeesTheJdkTheSdkPf4jAndSlf4jButNotTheRestOfTheHost() throws Exception {
        Path jar = probe("probe", compatible(), List.of(PLATFORM_CLASS, "tools.jackson.databind.ObjectMapper",
                "io.netty.channel.Channel", BlockNode.class.getName(), Extension.class.getName(),
                LoggerFactory.class.getName(), ConcurrentHashMap.class.getName(), "probe.Probe")).jar("probe.jar");
        assertThat(host.load(jar)).isEqualTo("probe");

        Map<String, Object> seen = runProbe();
        // Not the platform, nor the libraries it is made of, though the host's class path has them all.
        assertThat(seen.get(PLATFORM_CLASS)).isInstanceOf(ClassNotFoundException.class);
        assertThat(((Exception) seen.get(PLATFORM_CLASS)).getMessage())
                .startsWith(PLATFORM_CLASS).contains("a plugin sees only the JDK, io.blockjobs.sdk.*");
        assertThat(seen.get("tools.jackson.databind.ObjectMapper")).isInstanceOf(ClassNotFoundException.class);
        assertThat(seen.get("io.netty.channel.Channel")).isInstanceOf(ClassNotFoundException.class);
        assertThat(seen.get("resource:" + PLATFORM_CLASS)).as("the platform's class files as resources").isNull();
        // The host's own SDK, PF4J and SLF4J classes, not copies: what the plugin hands over is the host's type.
        assertThat(seen.get(BlockNode.class.getName())).isSameAs(BlockNode.class);
        assertThat(seen.get(Extension.class.getName())).isSameAs(Extension.class);
        assertThat(seen.get(LoggerFactory.class.getName())).isSameAs(LoggerFactory.class);
        assertThat(seen.get(ConcurrentHashMap.class.getName())).isSameAs(ConcurrentHashMap.class);
        // Its own classes, from its own loader.
        assertThat(seen.get("probe.Probe")).isInstanceOf(Class.class);
        assertThat(((Class<?>) seen.get("probe.Probe")).getClassLoader()).isInstanceOf(SdkOnlyClassLoader.class);

        assertThat(host.query()).singleElement().satisfies(p -> {
            assertThat(p.state()).isEqualTo("started");
            assertThat(p.commands()).containsExactly("x-probe");
        });
        host.unload("probe");
        assertThat(commands).isEmpty();
    }

    @Test
    void aZipPluginLoadsTheJarsItBundles() throws Exception {
        Path lib = TestPlugin.library(dir, "greeting.jar", Map.of("lib.Greeting", """
                package lib;

                public final class Greeting {
                    public static String text() {
                        return "hello from a bundled jar";
                    }
                }
                """));
        Path zip = new TestPlugin(dir, "bundler").requires(compatible()).lib(lib).source("bundler.Bundler", """
                package bundler;

                import io.blockjobs.sdk.plugin.BlockjobsPlugin;
                import io.blockjobs.sdk.plugin.Command;
                import java.util.List;
                import org.pf4j.Extension;

                @Extension
                public final class Bundler implements BlockjobsPlugin {
                    @Override
                    public List<Command<?>> commands() {
                        return List.of(new Command<>("x-probe", Void.class, null, args -> {
                            java.util.Map<String, Object> seen = new java.util.LinkedHashMap<>();
                            seen.put("greeting", lib.Greeting.text());
                            try {
                                seen.put("platform", Class.forName("%s"));
                            } catch (ClassNotFoundException e) {
                                seen.put("platform", e);
                            }
                            return seen;
                        }));
                    }
                }
                """.formatted(PLATFORM_CLASS)).zip("bundler.zip");
        assertThat(host.load(zip)).isEqualTo("bundler");

        Map<String, Object> seen = runProbe();
        assertThat(seen.get("greeting")).isEqualTo("hello from a bundled jar");
        assertThat(seen.get("platform")).isInstanceOf(ClassNotFoundException.class);
    }

    @Test
    void aPluginBuiltForAnotherSdkIsRefusedAndQueryPluginsSaysWhy() throws Exception {
        Path jar = probe("future", nextMajor(), List.of()).jar("future.jar");
        String expected = "Plugin 'future' requires SDK " + nextMajor() + " but this daemon provides SDK "
                + Sdk.VERSION + "; rebuild it against SDK " + Sdk.VERSION;

        assertThatThrownBy(() -> host.load(jar)).isInstanceOf(CommandException.class).hasMessage(expected);

        assertThat(commands).as("nothing of it is registered").isEmpty();
        assertThat(host.query()).singleElement().satisfies(p -> {
            assertThat(p.state()).isEqualTo("failed");
            assertThat(p.path()).isEqualTo(jar.toAbsolutePath().toString());
            assertThat(p.error()).contains(expected);
        });
    }

    @Test
    void aPluginThatDoesNotSayWhichSdkItNeedsIsRefused() throws Exception {
        Path jar = probe("vague", null, List.of()).jar("vague.jar");

        assertThatThrownBy(() -> host.load(jar)).isInstanceOf(CommandException.class)
                .hasMessage("Plugin 'vague' does not declare the SDK it was built against; add plugin.requires=^"
                        + Sdk.VERSION + " (or the version it was built against) to its plugin.properties");
        assertThat(host.query()).singleElement().satisfies(p -> assertThat(p.state()).isEqualTo("failed"));
    }

    @Test
    void aRefusedPluginLoadsOnceRebuiltForThisSdk() throws Exception {
        Path old = probe("probe", nextMajor(), List.of()).jar("old.jar");
        assertThatThrownBy(() -> host.load(old)).isInstanceOf(CommandException.class);

        Path rebuilt = probe("probe", compatible(), List.of()).jar("rebuilt.jar");
        assertThat(host.load(rebuilt)).isEqualTo("probe");

        List<String> states = new ArrayList<>();
        host.query().forEach(p -> states.add(p.id() + " " + p.state()));
        assertThat(states).containsExactly("probe started", "old.jar failed");
    }

    /** A plugin {@code lib-a} whose public class {@code a.Api} other plugins call (it contributes {@code x-a}). */
    private Path library(String fileName) throws Exception {
        return new TestPlugin(dir, "lib-a").requires(compatible()).source("a.Api", """
                package a;

                public final class Api {
                    public static String hello() {
                        return "hello from lib-a";
                    }
                }
                """).source("a.A", """
                package a;

                import io.blockjobs.sdk.plugin.BlockjobsPlugin;
                import io.blockjobs.sdk.plugin.Command;
                import java.util.List;
                import org.pf4j.Extension;

                @Extension
                public final class A implements BlockjobsPlugin {
                    @Override
                    public List<Command<?>> commands() {
                        return List.of(new Command<>("x-a", Void.class, null, args -> Api.hello()));
                    }
                }
                """).jar(fileName);
    }

    /** A plugin {@code user-b} that depends on {@code lib-a}: its {@code x-probe} calls {@code a.Api}. */
    private Path user(String fileName, Path library) throws Exception {
        return new TestPlugin(dir, "user-b").requires(compatible()).dependsOn("lib-a", library).source("b.B", """
                package b;

                import io.blockjobs.sdk.plugin.BlockjobsPlugin;
                import io.blockjobs.sdk.plugin.Command;
                import java.util.List;
                import java.util.Map;
                import org.pf4j.Extension;

                @Extension
                public final class B implements BlockjobsPlugin {
                    @Override
                    public List<Command<?>> commands() {
                        return List.of(new Command<>("x-probe", Void.class, null, args -> Map.of(
                                "text", a.Api.hello(), "api", a.Api.class, "self", B.class)));
                    }
                }
                """).jar(fileName);
    }

    /**
     * A plugin sees the classes of the plugins its {@code plugin.dependencies} names (as the commit
     * plugin runs the mirror plugin's loop), from their own class loader; loaded before them it is
     * refused with what to do, and nothing of it stays behind.
     */
    @Test
    void aPluginUsesTheClassesOfThePluginItDependsOnLoadedFirst() throws Exception {
        Path a = library("a.jar");
        Path b = user("b.jar", a);
        assertThatThrownBy(() -> host.load(b)).isInstanceOf(CommandException.class)
                .hasMessage("Plugin 'user-b' needs plugin 'lib-a', which is not loaded; load it first");
        assertThat(commands).isEmpty();
        assertThat(host.query()).singleElement().satisfies(p -> assertThat(p.state()).isEqualTo("failed"));

        assertThat(host.load(a)).isEqualTo("lib-a");
        assertThat(host.load(b)).isEqualTo("user-b");
        Map<String, Object> seen = runProbe();
        assertThat(seen.get("text")).isEqualTo("hello from lib-a");
        ClassLoader own = ((Class<?>) seen.get("self")).getClassLoader();
        ClassLoader api = ((Class<?>) seen.get("api")).getClassLoader();
        assertThat(api).as("a.Api comes from lib-a's loader, not a copy in user-b's").isNotSameAs(own)
                .isInstanceOf(SdkOnlyClassLoader.class);
        assertThat(commands).containsOnlyKeys("x-a", "x-probe"); // user-b does not contribute lib-a's extension again
        List<String> states = new ArrayList<>();
        host.query().forEach(p -> states.add(p.id() + " " + p.state()));
        assertThat(states).containsExactly("lib-a started", "user-b started");
    }

    /** PF4J would unload a plugin's dependents with it, behind the host's back: refused instead. */
    @Test
    void aPluginAnotherNeedsIsNotUnloadedBeforeIt() throws Exception {
        Path a = library("a.jar");
        Path b = user("b.jar", a);
        host.load(a);
        host.load(b);
        assertThatThrownBy(() -> host.unload("lib-a")).isInstanceOf(CommandException.class)
                .hasMessage("Plugin 'lib-a' is needed by plugin 'user-b'; unload that first");
        assertThat(commands).containsOnlyKeys("x-a", "x-probe");
        assertThat(runProbe().get("text")).isEqualTo("hello from lib-a");
        host.unload("user-b");
        host.unload("lib-a");
        assertThat(commands).isEmpty();
        assertThat(host.query()).isEmpty();
    }

    /** A plugins folder loads each plugin after those it depends on, whatever the file names say. */
    @Test
    void aPluginsFolderLoadsDependenciesFirst() throws Exception {
        Path a = library("lib.jar.build");
        Path folder = java.nio.file.Files.createDirectories(dir.resolve("plugins"));
        java.nio.file.Files.move(a, folder.resolve("z-lib-a.jar"));
        java.nio.file.Files.move(user("b.jar.build", folder.resolve("z-lib-a.jar")), folder.resolve("a-user-b.jar"));
        host.loadAll(folder);
        List<String> states = new ArrayList<>();
        host.query().forEach(p -> states.add(p.id() + " " + p.state()));
        assertThat(states).containsExactly("lib-a started", "user-b started");
        assertThat(runProbe().get("text")).isEqualTo("hello from lib-a");
    }

    @ParameterizedTest(name = "SDK 1.2.3, plugin.requires={0}: admitted={1}")
    @CsvSource(delimiter = '|', value = {
        "^1.0.0          | true",
        "^1.2.3          | true",
        "^1.3.0          | false",
        "^2.0.0          | false",
        "^0.9.0          | false",
        "~1.2            | true",
        ">=1.0.0 & <2.0.0 | true",
        ">=2.0.0         | false",
        "1.0.0           | true",
        "1.2.4           | false",
        "1.x             | true",
    })
    void plugInRequiresIsReadAsPf4jReadsIt(String requires, boolean admitted) {
        String refusal = SdkPluginManager.refusal("p", requires, "1.2.3", false, new DefaultVersionManager());
        if (admitted) {
            assertThat(refusal).isNull();
        } else {
            assertThat(refusal).isEqualTo("Plugin 'p' requires SDK " + requires
                    + " but this daemon provides SDK 1.2.3; rebuild it against SDK 1.2.3");
        }
    }

    @Test
    void aMissingStarOrMalformedRequirementIsRefused() {
        DefaultVersionManager versions = new DefaultVersionManager();
        assertThat(SdkPluginManager.refusal("p", "*", "1.0.0", false, versions)).contains("does not declare the SDK");
        assertThat(SdkPluginManager.refusal("p", " ", "1.0.0", false, versions)).contains("does not declare the SDK");
        assertThat(SdkPluginManager.refusal("p", "not a range", "1.0.0", false, versions))
                .startsWith("Plugin 'p' has plugin.requires 'not a range', which is not a version range such as ^1.0.0");
    }
}
