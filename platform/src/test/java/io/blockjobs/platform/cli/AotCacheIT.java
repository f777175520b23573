package io.blockjobs.platform.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The launcher's ahead-of-time class cache (JDK 25+): trained as {@code ./build package} trains
 * it, on a copy of the distribution, it is used while the jars are the ones it was made from, and
 * not once one of them changes: the JVM itself would load the cache's stale classes.
 */
class AotCacheIT {
    private static final String QUIT = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n";

    @TempDir
    Path dir;

    private record Result(int exit, String output) {
    }

    private static Result run(List<String> command, Map<String, String> env, String input) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
        pb.environment().putAll(env);
        Process p = pb.start();
        p.getOutputStream().write(input.getBytes(StandardCharsets.UTF_8));
        p.getOutputStream().close();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException(command + " did not end: " + out);
        }
        return new Result(p.exitValue(), out);
    }

    private static Result daemon(Path dist, Map<String, String> env) throws Exception {
        return run(List.of(dist.resolve("bin/blockjobd").toString(), "--chardev", "stdio,id=s", "--monitor", "chardev=s"),
                env, QUIT);
    }

    @Test
    void theCacheIsUsedOnlyWithTheJarsItWasTrainedOn() throws Exception {
        Path dist = dir.resolve("blockjobs");
        Result copy = run(List.of("cp", "-r", System.getProperty("blockjobs.dist"), dist.toString()), Map.of(), "");
        assertThat(copy.exit()).as(copy.output()).isZero();
        Files.deleteIfExists(dist.resolve("lib/blockjobd.aot"));
        Files.deleteIfExists(dist.resolve("lib/blockjobd.aot.key"));
        String findJdk = ". '" + dist.resolve("bin/find-jdk.sh") + "' && bj_find_jdk && ";
        Result flags = run(List.of("bash", "-c", findJdk + "\"$JAVA_HOME/bin/java\" -XX:+PrintFlagsFinal -version"), Map.of(), "");
        Assumptions.assumeTrue(flags.output().contains(" AOTCacheOutput "), "this JDK has no ahead-of-time cache");

        Path cache = dist.resolve("lib/blockjobd.aot");
        Result training = daemon(dist, Map.of("BLOCKJOBS_AOT", "off", "BLOCKJOBS_JAVA_OPTS", "-XX:AOTCacheOutput=" + cache));
        assertThat(training.exit()).as(training.output()).isZero();
        assertThat(cache).isNotEmptyFile();
        Result key = run(List.of("bash", "-c", findJdk + "bj_aot_key '" + dist.resolve("lib") + "' > '"
                + dist.resolve("lib/blockjobd.aot.key") + "'"), Map.of(), "");
        assertThat(key.exit()).as(key.output()).isZero();

        Map<String, String> log = Map.of("BLOCKJOBS_JAVA_OPTS", "-Xlog:aot");
        Result trained = daemon(dist, log);
        assertThat(trained.exit()).as(trained.output()).isZero();
        assertThat(trained.output()).as("the jars it was trained on: the cache is used").contains("Opened AOT cache");
        Result off = daemon(dist, Map.of("BLOCKJOBS_JAVA_OPTS", "-Xlog:aot", "BLOCKJOBS_AOT", "off"));
        assertThat(off.output()).as("BLOCKJOBS_AOT=off").doesNotContain("Opened AOT cache");

        Path jar;
        try (var jars = Files.list(dist.resolve("lib"))) {
            jar = jars.filter(f -> f.getFileName().toString().startsWith("blockjobs-platform-")).findFirst().orElseThrow();
        }
        Files.setLastModifiedTime(jar, FileTime.from(Instant.now().plusSeconds(5))); // as a rebuild leaves it
        Result rebuilt = daemon(dist, log);
        assertThat(rebuilt.exit()).as(rebuilt.output()).isZero();
        assertThat(rebuilt.output()).as("a jar changed: the cache is not used").doesNotContain("Opened AOT cache")
                .contains("\"return\"");
        Result quiet = daemon(dist, Map.of());
        assertThat(quiet.output()).as("a normal start and stop print nothing but QMP").doesNotContain("[aot]");
    }
}
