package io.blockjobs.platform.workflow;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.graalvm.polyglot.Context;
import org.graalvm.polyglot.Source;
import org.graalvm.polyglot.Value;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The retention of {@code scripts/backup-policy.js} (its exported {@code prune}, the code the
 * policy runs) against Proxmox Backup Server's golden vectors ({@code tests/prune.rs}): which
 * backups each policy keeps. One deliberate difference: a policy that keeps nothing
 * ({@code keep-last=0}) keeps everything, never "delete all".
 */
class BackupPolicyRetentionTest {
    private static final List<String> SIMPLE = List.of("2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z",
            "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z");
    private static final List<String> SIMPLE2 = List.of("2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z",
            "2019-11-21T11:59:15Z", "2019-11-22T11:59:15Z", "2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z",
            "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z");
    private static final List<String> HOURLY = List.of("2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z",
            "2019-11-15T10:59:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z");

    private static Context js;
    private static Value prune;

    @BeforeAll
    static void load() throws Exception {
        js = Context.newBuilder("js").option("engine.WarnInterpreterOnly", "false")
                .option("js.esm-eval-returns-exports", "true").build();
        Path script = Path.of("..", "scripts", "backup-policy.js");
        Value module = js.eval(Source.newBuilder("js", Files.readString(script), "backup-policy.js")
                .mimeType("application/javascript+module").build());
        prune = module.getMember("prune");
    }

    @AfterAll
    static void close() {
        js.close();
    }

    static Stream<Arguments> vectors() {
        return Stream.of(
                // test_prune_hourly
                kept(HOURLY, "keep-hourly=3", "2019-11-15T09:39:15Z", "2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"),
                kept(HOURLY, "keep-hourly=2", "2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"),
                // test_prune_simple2
                kept(SIMPLE2, "keep-daily=1", "2019-12-04T11:59:15Z"),
                kept(SIMPLE2, "keep-last=1,keep-daily=1", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"),
                kept(SIMPLE2, "keep-daily=1,keep-weekly=1", "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"),
                kept(SIMPLE2, "keep-daily=1,keep-weekly=1,keep-monthly=1", "2019-11-22T11:59:15Z",
                        "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"),
                kept(SIMPLE2, "keep-monthly=1,keep-yearly=1", "2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z"),
                // test_prune_simple
                kept(SIMPLE, "keep-last=4", SIMPLE.toArray(String[]::new)),
                kept(SIMPLE, "keep-last=3", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-last=2", "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-last=1", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-last=0", SIMPLE.toArray(String[]::new)), // PBS removes all; the invariant keeps all
                kept(SIMPLE, "", SIMPLE.toArray(String[]::new)),
                kept(SIMPLE, "keep-last=2,keep-daily=2", SIMPLE.toArray(String[]::new)),
                kept(SIMPLE, "keep-daily=3", "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-daily=2", "2019-12-03T11:59:15Z", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-weekly=5", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-daily=1,keep-weekly=5", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-monthly=6", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-yearly=7", "2019-12-04T12:59:15Z"),
                kept(SIMPLE, "keep-weekly=5,keep-monthly=6,keep-yearly=7", "2019-12-04T12:59:15Z"),
                // ISO weeks at a year's end: 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in 2020-W53
                kept(List.of("2020-12-28T10:00:00Z", "2020-12-31T10:00:00Z", "2021-01-03T10:00:00Z",
                        "2021-01-04T10:00:00Z"), "keep-weekly=2", "2021-01-03T10:00:00Z", "2021-01-04T10:00:00Z"));
    }

    @ParameterizedTest(name = "[{index}] {1}")
    @MethodSource("vectors")
    void keepsWhatProxmoxKeeps(List<String> times, String policy, List<String> expected) {
        Value backups = js.eval("js", "[]");
        for (String t : times) {
            Value b = js.eval("js", "({})");
            b.putMember("id", t);
            b.putMember("time", t);
            backups.invokeMember("push", b);
        }
        Value options = js.eval("js", "({})");
        for (Map.Entry<String, Integer> e : parse(policy).entrySet()) {
            options.putMember(e.getKey(), e.getValue());
        }
        Value marks = prune.execute(backups, options);
        List<String> kept = new ArrayList<>();
        for (String t : times) {
            String mark = marks.invokeMember("get", t).asString();
            assertThat(mark).as(t).isIn("keep", "remove");
            if (mark.equals("keep")) {
                kept.add(t);
            }
        }
        assertThat(kept).containsExactlyElementsOf(expected);
    }

    private static Arguments kept(List<String> times, String policy, String... expected) {
        return Arguments.of(times, policy, Arrays.asList(expected));
    }

    private static Map<String, Integer> parse(String policy) {
        Map<String, Integer> m = new LinkedHashMap<>();
        for (String kv : policy.split(",")) {
            if (!kv.isEmpty()) {
                String[] p = kv.split("=");
                m.put(p[0], Integer.parseInt(p[1]));
            }
        }
        return m;
    }
}
