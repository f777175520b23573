package io.blockjobs.platform.testkit;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.json.JsonMapper;

/** Runs QEMU's tools (the oracle) for tests: qemu-img, qemu-io. */
public final class Qemu {

    public static final ObjectMapper JSON = JsonMapper.builder().build();

    private Qemu() {
    }

    /** What a finished process said. */
    public record Result(List<String> command, int exit, String out, String err) {
        public Result ok() {
            assertThat(exit).as("%s exited %d%nstdout: %s%nstderr: %s", command, exit, out, err).isZero();
            return this;
        }
    }

    /** Runs a command to its end (at most two minutes), capturing its output. */
    public static Result run(String... command) {
        List<String> cmd = List.of(command);
        try {
            Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
            CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> drain(p.getInputStream()));
            CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> drain(p.getErrorStream()));
            if (!p.waitFor(120, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new AssertionError(cmd + " did not finish in two minutes");
            }
            return new Result(cmd, p.exitValue(), out.join(), err.join());
        } catch (IOException e) {
            throw new AssertionError("cannot run " + cmd + ": " + e.getMessage()
                    + " (the tests need QEMU's tools: apt-get install qemu-utils)", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    private static String drain(java.io.InputStream in) {
        try (in) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    public static Result img(String... args) {
        List<String> cmd = new ArrayList<>(List.of("qemu-img"));
        cmd.addAll(List.of(args));
        return run(cmd.toArray(String[]::new)).ok();
    }

    /** Runs qemu-io commands on an image ({@code -c} each), failing the test if one fails. */
    public static Result io(Path image, String format, String... commands) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", format));
        for (String c : commands) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(image.toString());
        Result r = run(cmd.toArray(String[]::new)).ok();
        assertThat(r.out() + r.err()).as("qemu-io %s", List.of(commands)).doesNotContain("failed", "Pattern verification");
        return r;
    }

    /** Runs qemu-io commands on an NBD URI ({@code -f raw}), failing the test if one fails. */
    public static Result ioNbd(String uri, String... commands) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : commands) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(uri);
        Result r = run(cmd.toArray(String[]::new)).ok();
        assertThat(r.out() + r.err()).as("qemu-io %s", List.of(commands)).doesNotContain("failed", "Pattern verification");
        return r;
    }

    /** {@code qemu-img check}: its exit code (0 clean, 2 corrupt, 3 leaks only) and report. */
    public static Result check(Path image) {
        return run("qemu-img", "check", "--output=json", image.toString());
    }

    /** Asserts {@code qemu-img check} finds no corruption and no leak. */
    public static void assertClean(Path image) {
        Result r = check(image);
        assertThat(r.exit()).as("qemu-img check %s: %s %s", image, r.out(), r.err()).isZero();
    }

    /** Asserts {@code qemu-img check} finds no corruption (leaked clusters allowed). */
    public static void assertNoCorruption(Path image) {
        Result r = check(image);
        assertThat(r.exit()).as("qemu-img check %s: %s %s", image, r.out(), r.err()).isIn(0, 3);
    }

    /** {@code qemu-img compare}: true if the guest-visible contents are identical. */
    public static boolean identical(Path a, String formatA, Path b, String formatB) {
        Result r = run("qemu-img", "compare", "-f", formatA, "-F", formatB, a.toString(), b.toString());
        if (r.exit() > 1) {
            throw new AssertionError("qemu-img compare failed: " + r.err());
        }
        return r.exit() == 0;
    }

    /** The whole guest-visible disk as QEMU reads it. */
    public static byte[] readAll(Path image, Path scratch) throws IOException {
        return readAll(scratch.resolve(image.getFileName() + ".as-qemu-reads.raw"), "convert", "-O", "raw",
                image.toString());
    }

    /** The whole disk an NBD export serves ({@code uri} as {@code qemu-io} takes it), as QEMU reads it. */
    public static byte[] readAllNbd(String uri, Path scratch) throws IOException {
        return readAll(java.nio.file.Files.createTempFile(scratch, "nbd-", ".raw"), "convert", "-f", "raw", "-O", "raw",
                uri);
    }

    private static byte[] readAll(Path raw, String... convert) throws IOException {
        String[] args = java.util.Arrays.copyOf(convert, convert.length + 1);
        args[convert.length] = raw.toString();
        img(args);
        byte[] data = java.nio.file.Files.readAllBytes(raw);
        java.nio.file.Files.delete(raw);
        return data;
    }

    /** {@code qemu-img info --output=json}. */
    public static JsonNode info(Path image) {
        return JSON.readTree(img("info", "--output=json", image.toString()).out());
    }

    /** {@code qemu-img map --output=json}: the extents of the image's chain. */
    public static JsonNode map(Path image) {
        return JSON.readTree(img("map", "--output=json", image.toString()).out());
    }
}
