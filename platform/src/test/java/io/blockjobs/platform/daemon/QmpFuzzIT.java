package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Thousands of random and mutated QMP messages: the daemon answers or drops the connection,
 * never dies, and serves a fresh client afterwards.
 */
class QmpFuzzIT {

    @TempDir
    Path dir;

    private static final List<String> SEEDS = List.of(
            "{\"execute\":\"query-version\"}",
            "{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}",
            "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"file\",\"node-name\":\"n1\",\"filename\":\"/nonexistent\"}}",
            "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\",\"node-name\":\"q\",\"file\":{\"driver\":\"file\",\"filename\":\"x\"},\"backing\":null}}",
            "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"disk\"}}",
            "{\"execute\":\"block-export-add\",\"arguments\":{\"type\":\"nbd\",\"id\":\"e\",\"node-name\":\"disk\",\"writable\":true}}",
            "{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"e\",\"mode\":\"hard\"}}",
            "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"j\"}}",
            "{\"execute\":\"query-jobs\",\"id\":{\"a\":[1,2,{\"b\":null}]}}",
            "{\"execute\":\"query-qmp-schema\"}",
            "{\"execute\":\"blockdev-snapshot\",\"arguments\":{\"node\":\"disk\",\"overlay\":\"disk\"}}");

    @Test
    void randomAndMutatedMessagesNeverKillTheDaemon() throws Exception {
        Path image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "16M");
        try (DaemonProcess d = DaemonProcess.startWithMonitor(dir, List.of(
                "--blockdev", "driver=qcow2,node-name=disk,file.driver=file,file.filename=" + image))) {
            SplittableRandom random = new SplittableRandom(20261125);
            int errors = 0;
            int successes = 0;
            for (int batch = 0; batch < 40; batch++) {
                // The daemon never drops a QMP connection for bad input: every batch ends with its answer.
                try (QmpClient c = QmpClient.connect(d.qmpSocket)) {
                    Framing framing = new Framing();
                    for (int i = 0; i < 100; i++) {
                        // Each message is closed if it left a string, object or array open, so each is judged alone.
                        String m = message(random);
                        framing.feed(m);
                        String closer = framing.closer() + "\n";
                        framing.feed(closer);
                        c.sendRaw(m + closer);
                    }
                    c.sendRaw("{\"execute\":\"query-version\",\"id\":\"sync\"}\n");
                    while (true) {
                        var r = c.nextReply();
                        if (r.path("id").asString("").equals("sync")) {
                            break;
                        }
                        if (r.has("error")) {
                            errors++;
                        } else {
                            successes++;
                        }
                    }
                }
                assertThat(d.isAlive()).as("daemon alive after batch %d", batch).isTrue();
            }
            assertThat(errors).as("error replies").isGreaterThan(2000);
            assertThat(successes).as("successful replies").isGreaterThan(200);
            try (QmpClient fresh = QmpClient.connect(d.qmpSocket)) {
                assertThat(fresh.ok("query-version").has("qemu")).isTrue();
                assertThat(fresh.ok("query-named-block-nodes").isArray()).isTrue(); // "disk" may have been deleted by the fuzz
            }
        }
        Qemu.assertClean(image);
    }

    /**
     * Follows the stream roughly as the daemon's framing does, to know how to close what is open.
     * Where it is wrong, the newline after each message puts QEMU's lexer (which blockjobd's
     * follows) back in step: a string cannot hold a raw newline, and recovery stops at one.
     */
    static final class Framing {
        boolean inText;
        boolean scalar;
        boolean atStart;
        boolean inString;
        boolean escaped;
        int depth;

        void feed(String text) {
            for (char ch : text.toCharArray()) {
                step(ch);
            }
        }

        private void step(char ch) {
            boolean space = ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t';
            if (!inText) {
                if (space) {
                    return;
                }
                inText = true;
                scalar = ch != '{' && ch != '[';
                atStart = true;
                depth = 0;
            }
            boolean first = atStart;
            atStart = false;
            if (inString) {
                if (escaped) {
                    escaped = false;
                } else if (ch == '\\') {
                    escaped = true;
                } else if (ch == '"') {
                    inString = false;
                    if (scalar) {
                        inText = false;
                    }
                }
            } else if (scalar) {
                if (ch == '"' && first) {
                    inString = true;
                } else if (!first && (space || ch == '{' || ch == '[')) {
                    inText = false;
                    step(ch); // this byte starts the next text
                }
            } else if (ch == '"') {
                inString = true;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0) {
                    inText = false;
                }
            }
        }

        String closer() {
            if (!inText) {
                return "";
            }
            StringBuilder b = new StringBuilder();
            if (inString) {
                b.append(escaped ? "x\"" : "\"");
            }
            if (!scalar) {
                b.append("}".repeat(depth));
            }
            return b.toString();
        }
    }

    private static String message(SplittableRandom r) {
        String seed = SEEDS.get(r.nextInt(SEEDS.size()));
        switch (r.nextInt(6)) {
            case 0 -> { // random printable bytes
                StringBuilder b = new StringBuilder();
                int n = r.nextInt(60);
                for (int i = 0; i < n; i++) {
                    b.append((char) (32 + r.nextInt(95)));
                }
                return b.toString();
            }
            case 1 -> { // truncated
                return seed.substring(0, r.nextInt(seed.length()));
            }
            case 2 -> { // characters flipped
                char[] c = seed.toCharArray();
                for (int i = 0; i < 1 + r.nextInt(4); i++) {
                    c[r.nextInt(c.length)] = (char) (32 + r.nextInt(95));
                }
                return new String(c);
            }
            case 3 -> { // values swapped for other JSON types
                String[] values = {"1", "-1", "1e308", "true", "null", "\"\"", "[]", "{}", "\"\\u0000\"", "99999999999999999999"};
                return seed.replaceFirst("(:)(\"[^\"]*\"|true|false|null|\\d+)", "$1" + values[r.nextInt(values.length)]);
            }
            case 4 -> { // unicode and escapes in strings
                return seed.replace("disk", "d\\u00e9sk\\n\\\"" + "\u2603");
            }
            default -> {
                return seed;
            }
        }
    }
}
