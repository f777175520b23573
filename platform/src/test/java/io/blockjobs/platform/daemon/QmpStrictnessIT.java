package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QemuStorageDaemon;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * QEMU's strictness on the wire, shown beside qemu-storage-daemon 7.2: the same bytes go to
 * both, and both answer with the same replies (error class and desc, ids echoed), in the same
 * number, and go on serving the command after them. Duplicate keys, invalid UTF-8, lone
 * surrogates and stray quotes are errors, never guessed at.
 */
class QmpStrictnessIT {

    @TempDir
    static Path dir;
    static DaemonProcess blockjobd;
    static QemuStorageDaemon qsd;
    QmpClient ours;
    QmpClient qemus;

    @BeforeAll
    static void start() throws Exception {
        Files.createDirectories(dir.resolve("bj"));
        Files.createDirectories(dir.resolve("qsd"));
        blockjobd = DaemonProcess.startWithMonitor(dir.resolve("bj"), List.of());
        qsd = QemuStorageDaemon.startWithMonitor(dir.resolve("qsd"), List.of());
    }

    @BeforeEach
    void connect() throws Exception {
        ours = QmpClient.connect(blockjobd.qmpSocket);
        qemus = QmpClient.connect(qsd.qmpSocket);
    }

    @AfterEach
    void disconnect() throws Exception {
        ours.close();
        qemus.close();
    }

    @AfterAll
    static void stop() throws Exception {
        blockjobd.close();
        qsd.close();
    }

    /** Each case: the bytes sent, as text where each char below 256 stands for one byte. */
    private static final String[] CASES = {
        // Duplicate keys are an error: before, the second "execute" won and the daemon quit.
        "{\"execute\":\"query-version\",\"execute\":\"quit\"}",
        "{\"execute\":\"query-version\",\"id\":1,\"id\":2}",
        "{\"execute\":\"query-version\",\"arguments\":{\"a\":1,\"a\":2}}",
        // Invalid UTF-8 in a string: refused, not replaced.
        "{\"execute\":\"query-version\",\"id\":\"\u00c3\u0028\"}",
        "{\"execute\":\"query-version\",\"id\":\"\u00ed\u00a0\u0080\"}", // a surrogate, encoded
        "{\"execute\":\"query-version\",\"id\":\"\u00e0\u0080\u00af\"}", // overlong
        "{\"execute\":\"query-version\",\"id\":\"\u00f8\u0088\u0080\u0080\u0080\"}", // five bytes
        "{\"execute\":\"query-version\",\"id\":\"\u00ef\u00bf\u00bf\"}", // a noncharacter
        "{\"execute\":\"query-version\",\"id\":\"\u00ff\"}", // not even lexed: an error, then '"}' left over
        "{\"execute\":\"query-version\",\"id\":\"\u00c3\u00a9\u00f0\u009f\u0098\u0080\"}", // valid: echoed
        "{\"execute\":\"query-version\",\"id\":\"\u00c0\u0080\"}", // QEMU's modified UTF-8 for U+0000
        // Lone surrogates and other invalid escapes.
        "{\"execute\":\"query-version\",\"id\":\"\\ud800\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\udc00\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\ud800x\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\ud800\\u0041\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\uffff\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\u12\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\x\"}",
        "{\"execute\":\"query-version\",\"id\":\"\\ud83d\\ude00\\u0000\\/\"}", // valid: echoed
        // A stray quote costs one error; the command on the next line is answered.
        "\"\n{\"execute\":\"query-version\",\"id\":\"after a stray quote\"}",
        "{\"execute\":\"query-version\",\"id\":\"unterminated\n{\"execute\":\"query-version\",\"id\":\"next line\"}",
        "'\n{\"execute\":\"query-version\",\"id\":\"after a stray apostrophe\"}",
        "{\"execute\":\"query-version\",\"id\":\"tab\t\"}",
        // Other lexical errors, and QEMU's resynchronisation on 0xFF and control characters.
        "{\"execute\":\"query-version\", \u00ff {\"execute\":\"query-version\",\"id\":\"resync\"}",
        "\u0001{\"execute\":\"query-version\",\"id\":\"after a control character\"}",
        "\u0000{\"execute\":\"query-version\",\"id\":\"after a NUL\"}",
        "Nonsense {\"execute\":\"query-version\",\"id\":\"after Nonsense\"}",
        "nonsense {\"execute\":\"query-version\",\"id\":\"after nonsense\"}",
        "01",
        "}{\"execute\":\"query-version\",\"id\":\"after a brace\"}",
        // The grammar's errors.
        "{\"execute\": }",
        "{\"execute\" \"query-version\"}",
        "{1: 2}",
        "{\"execute\":\"query-version\" \"id\":1}",
        "[1 2]",
        "[1,]",
        "{\"execute\":\"query-version\",\"id\":nul}",
        // QEMU's extensions: single-quoted strings and \' are accepted.
        "{'execute':'query-version','id':'single \\' \"quoted\"'}",
        // Numbers, as QEMU reads them.
        "{\"execute\":\"query-version\",\"id\":[18446744073709551615,-9223372036854775808,-0]}",
        // The nesting limit, QEMU's 1024: at the limit a value parses; an id that deep is echoed.
        "[".repeat(1024) + "]".repeat(1024),
        "{\"execute\":\"query-version\",\"id\":" + "[".repeat(1023) + "]".repeat(1023) + "}",
        "{\"execute\":\"query-version\",\"arguments\":{\"a\":" + "[".repeat(1022) + "]".repeat(1022) + "}}",
    };

    @Test
    void everyCaseIsAnsweredAsQemuStorageDaemonAnswersIt() throws Exception {
        List<String> differences = new ArrayList<>();
        int errors = 0;
        for (String c : CASES) {
            byte[] bytes = c.getBytes(StandardCharsets.ISO_8859_1);
            List<String> expected = answers(qemus, bytes);
            errors += (int) expected.stream().filter(a -> a.startsWith("error")).count();
            List<String> actual = answers(ours, bytes);
            if (!actual.equals(expected)) {
                differences.add(shown(c) + "\n  qemu-storage-daemon: " + expected + "\n  blockjobd:           " + actual);
            }
        }
        assertThat(differences).as("cases answered differently").isEmpty();
        assertThat(errors).as("errors qemu-storage-daemon gave").isGreaterThan(CASES.length - 10);
        assertThat(blockjobd.isAlive()).as("no duplicate 'execute' made it quit").isTrue();
    }

    @Test
    void tooDeepIsRefusedAtOnceWithTheLimitInWords() throws Exception {
        byte[] deep = ("[".repeat(1025) + "]".repeat(1025)).getBytes(StandardCharsets.US_ASCII);
        List<String> expected = answers(qemus, deep);
        List<String> actual = answers(ours, deep);
        // QEMU's words first; then the limit. QEMU goes on to answer each of the 1025 closing
        // brackets ("expecting value"); blockjobd skips the rest of the refused value.
        assertThat(expected.get(0)).isEqualTo("error GenericError: JSON nesting depth limit exceeded");
        assertThat(expected).hasSizeGreaterThan(1000);
        assertThat(actual).containsExactly(
                "error GenericError: JSON nesting depth limit exceeded (objects and arrays may nest at most 1024 levels deep)");
        assertThat(actual.get(0)).startsWith(expected.get(0));
    }

    /** What a daemon answers to {@code input}: its replies up to that of a query that follows. */
    private static List<String> answers(QmpClient c, byte[] input) throws Exception {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        b.write(input);
        b.write("\n{\"execute\":\"query-version\",\"id\":\"sync\"}\n".getBytes(StandardCharsets.US_ASCII));
        c.sendRaw(b.toByteArray());
        List<String> out = new ArrayList<>();
        while (true) {
            JsonNode r = c.nextReply();
            if (r.path("id").isString() && r.get("id").asString().equals("sync")) {
                return out;
            }
            String id = r.has("id") ? " id=" + json(r.get("id")) : "";
            out.add(r.has("error")
                    ? "error " + r.at("/error/class").asString() + ": " + r.at("/error/desc").asString() + id
                    : "return" + id);
        }
    }

    /** JSON text of a value however deep (Jackson's toString stops at 500 levels). */
    private static String json(JsonNode v) {
        if (v.isArray()) {
            List<String> items = new ArrayList<>();
            v.forEach(e -> items.add(json(e)));
            return "[" + String.join(",", items) + "]";
        }
        if (v.isObject()) {
            List<String> members = new ArrayList<>();
            v.properties().forEach(e -> members.add(tools.jackson.databind.node.JsonNodeFactory.instance
                    .stringNode(e.getKey()) + ":" + json(e.getValue())));
            return "{" + String.join(",", members) + "}";
        }
        return v.toString();
    }

    private static String shown(String c) {
        return c.length() > 80 ? c.substring(0, 80) + "... (" + c.length() + " bytes)" : c;
    }
}
