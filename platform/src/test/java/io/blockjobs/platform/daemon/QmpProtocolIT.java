package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QmpClient;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/** The QMP wire protocol as QEMU's spec and QEMU 7.2 on the wire define it. */
class QmpProtocolIT {

    @TempDir
    static Path dir;
    static DaemonProcess daemon;

    @BeforeAll
    static void start() throws Exception {
        daemon = DaemonProcess.startWithMonitor(dir, List.of());
    }

    @AfterAll
    static void stop() throws Exception {
        daemon.close();
    }

    @Test
    void greetingAndNegotiation() throws Exception {
        try (QmpClient c = QmpClient.connectRaw(daemon.qmpSocket)) {
            JsonNode qmp = c.greeting().get("QMP");
            assertThat(qmp.at("/version/qemu/major").asInt()).isGreaterThanOrEqualTo(7);
            assertThat(qmp.at("/version/package").asString()).startsWith("blockjobs");
            assertThat(qmp.get("capabilities").isArray()).isTrue();

            JsonNode early = c.error("query-version", null);
            assertThat(early.get("class").asString()).isEqualTo("CommandNotFound");
            assertThat(early.get("desc").asString()).isEqualTo("Expecting capabilities negotiation with 'qmp_capabilities'");

            assertThat(c.ok("qmp_capabilities", Map.of("enable", List.of("oob"))).isEmpty()).isTrue();
            JsonNode again = c.error("qmp_capabilities", null);
            assertThat(again.get("class").asString()).isEqualTo("CommandNotFound");
            assertThat(again.get("desc").asString()).isEqualTo("Capabilities negotiation is already complete, command ignored");
            assertThat(c.ok("query-version").at("/qemu/minor").isInt()).isTrue();
        }
    }

    @Test
    void idIsEchoedVerbatim() throws Exception {
        try (QmpClient c = QmpClient.connect(daemon.qmpSocket)) {
            for (String id : List.of("1", "\"abc\"", "[1,2]", "{\"a\":[1]}", "null")) {
                c.sendRaw("{\"execute\":\"query-version\",\"id\":" + id + "}\n");
                JsonNode reply = c.nextReply();
                assertThat(reply.has("return")).isTrue();
                assertThat(reply.get("id").toString()).isEqualTo(id);
            }
            c.sendRaw("{\"execute\":\"no-such-command\",\"id\":7}\n");
            JsonNode r = c.nextReply();
            assertThat(r.at("/error/class").asString()).isEqualTo("CommandNotFound");
            assertThat(r.at("/error/desc").asString()).isEqualTo("The command no-such-command has not been found");
            assertThat(r.get("id").asInt()).isEqualTo(7);
        }
    }

    @Test
    void badInputGetsAnErrorAndTheConnectionGoesOn() throws Exception {
        try (QmpClient c = QmpClient.connect(daemon.qmpSocket)) {
            String[][] cases = {
                {"{\"execute\": }", "JSON parse error"},
                {"nonsense", "JSON parse error"},
                {"[1, 2]", "QMP input must be a JSON object"},
                {"42", "QMP input must be a JSON object"},
                {"{\"arguments\": {}}", "QMP input lacks member 'execute'"},
                {"{\"execute\": 1}", "QMP input member 'execute' must be a string"},
                {"{\"execute\": \"query-version\", \"arguments\": []}", "QMP input member 'arguments' must be an object"},
                {"{\"execute\": \"query-version\", \"bogus\": 1}", "QMP input member 'bogus' is unexpected"},
                {"{\"execute\": \"query-version\", \"arguments\": {\"x\": 1}}", "Parameter 'x' is unexpected"},
                {"{\"execute\": \"blockdev-del\"}", "Parameter 'node-name' is missing"},
                {"{\"execute\": \"blockdev-del\", \"arguments\": {\"node-name\": 5}}",
                    "Invalid parameter type for 'node-name', expected: string"},
                {"{\"execute\": \"query-named-block-nodes\", \"arguments\": {\"flat\": \"yes\"}}",
                    "Invalid parameter type for 'flat', expected: boolean"},
                {"{\"execute\": \"block-export-del\", \"arguments\": {\"id\": \"x\", \"mode\": \"gentle\"}}",
                    "Parameter 'mode' does not accept value 'gentle'"},
                {"{\"execute\": \"blockdev-del\", \"arguments\": {\"node-name\": \"ghost\"}}",
                    "Failed to find node with node-name='ghost'"},
            };
            for (String[] t : cases) {
                c.sendRaw(t[0] + "\n");
                JsonNode reply = c.nextReply();
                assertThat(reply.at("/error/class").asString()).as(t[0]).isEqualTo("GenericError");
                assertThat(reply.at("/error/desc").asString()).as(t[0]).contains(t[1]);
                assertThat(c.ok("query-version").has("qemu")).as("still usable after %s", t[0]).isTrue();
            }
        }
    }

    @Test
    void oversizedMessagesAreRefusedAndSkipped() throws Exception {
        try (QmpClient c = QmpClient.connect(daemon.qmpSocket)) {
            String big = "x".repeat(2 << 20);
            c.sendRaw("{\"execute\":\"query-version\",\"id\":\"" + big + "\"}\n");
            JsonNode reply = c.nextReply();
            assertThat(reply.at("/error/desc").asString())
                    .isEqualTo("JSON token size limit exceeded (a QMP message may be at most 1 MiB)");
            String deep = "[".repeat(5000) + "]".repeat(5000);
            c.sendRaw(deep + "\n");
            assertThat(c.nextReply().at("/error/desc").asString())
                    .isEqualTo("JSON nesting depth limit exceeded (objects and arrays may nest at most 1024 levels deep)");
            assertThat(c.ok("query-version").has("qemu")).isTrue();
        }
    }

    @Test
    void messagesSplitAndJoinedArbitrarily() throws Exception {
        try (QmpClient c = QmpClient.connect(daemon.qmpSocket)) {
            String two = "{\"execute\":\"query-version\",\"id\":1}{\"execute\":\"query-version\",\"id\":2}";
            for (int i = 0; i < two.length(); i++) {
                c.sendRaw(two.substring(i, i + 1)); // byte by byte
            }
            assertThat(c.nextReply().get("id").asInt()).isEqualTo(1);
            assertThat(c.nextReply().get("id").asInt()).isEqualTo(2);
            c.sendRaw("{\"execute\":\"query-version\",\"id\":\"}{\\\"\"}\n"); // braces inside a string
            assertThat(c.nextReply().get("id").asString()).isEqualTo("}{\"");
            // An error found at once waits for the reply before it: answers come in the order asked.
            StringBuilder batch = new StringBuilder();
            for (int i = 0; i < 20; i++) {
                batch.append("{\"execute\":\"query-qmp-schema\",\"id\":").append(2 * i).append('}');
                batch.append("{\"execute\":\"query-version\",\"arguments\":[],\"id\":").append(2 * i + 1).append('}');
            }
            c.sendRaw(batch.toString());
            for (int i = 0; i < 40; i++) {
                assertThat(c.nextReply().get("id").asInt()).isEqualTo(i);
            }
        }
    }

    @Test
    void introspection() throws Exception {
        try (QmpClient c = QmpClient.connect(daemon.qmpSocket)) {
            List<String> commands = c.ok("query-commands").findValuesAsString("name");
            assertThat(commands).contains("qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
                    "query-named-block-nodes", "blockdev-add", "blockdev-del", "blockdev-create", "blockdev-snapshot",
                    "blockdev-snapshot-sync", "nbd-server-start", "nbd-server-stop", "block-export-add",
                    "block-export-del", "query-block-exports", "query-jobs", "job-dismiss", "quit");
            JsonNode schema = c.ok("query-qmp-schema");
            JsonNode del = null;
            for (JsonNode e : schema) {
                if (e.get("name").asString().equals("blockdev-del")) {
                    del = e;
                }
            }
            assertThat(del).isNotNull();
            assertThat(del.get("meta-type").asString()).isEqualTo("command");
            String argType = del.get("arg-type").asString();
            JsonNode args = null;
            for (JsonNode e : schema) {
                if (e.get("name").asString().equals(argType)) {
                    args = e;
                }
            }
            assertThat(args.get("members").get(0).get("name").asString()).isEqualTo("node-name");
            assertThat(args.get("members").get(0).get("type").asString()).isEqualTo("str");
            assertThat(schema.findValuesAsString("meta-type")).contains("event", "builtin", "object", "enum");

            // blockdev-add's argument is QEMU's BlockdevOptions union: one variant per registered driver.
            JsonNode union = type(schema, entry(schema, "blockdev-add").get("arg-type").asString());
            assertThat(union.get("tag").asString()).isEqualTo("driver");
            List<String> cases = union.get("variants").findValuesAsString("case");
            assertThat(cases).contains("file", "raw", "qcow2", "blkdebug", "copy-on-read", "null-co", "null-aio")
                    .doesNotContain("commit_top", "mirror_top");
            JsonNode driverEnum = type(schema, union.get("members").get(0).get("type").asString());
            assertThat(driverEnum.get("meta-type").asString()).isEqualTo("enum");
            assertThat(driverEnum.get("values").toString()).contains("\"qcow2\"", "\"copy-on-read\"");
            JsonNode file = null;
            for (JsonNode v : union.get("variants")) {
                if (v.get("case").asString().equals("file")) {
                    file = type(schema, v.get("type").asString());
                }
            }
            assertThat(file.get("members").findValuesAsString("name")).contains("filename", "locking", "aio");
            // The events are the typed ones, with their payloads.
            List<String> events = new java.util.ArrayList<>();
            for (JsonNode e : schema) {
                if (e.get("meta-type").asString().equals("event")) {
                    events.add(e.get("name").asString());
                }
            }
            assertThat(events).contains("JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED",
                    "BLOCK_JOB_READY", "BLOCK_JOB_PENDING", "BLOCK_JOB_ERROR", "BLOCK_EXPORT_DELETED", "SHUTDOWN");
            JsonNode completed = type(schema, entry(schema, "BLOCK_JOB_COMPLETED").get("arg-type").asString());
            assertThat(completed.get("members").findValuesAsString("name"))
                    .containsExactly("type", "device", "len", "offset", "speed", "error");
        }
    }

    private static JsonNode entry(JsonNode schema, String name) {
        for (JsonNode e : schema) {
            if (e.get("name").asString().equals(name)) {
                return e;
            }
        }
        throw new AssertionError("no schema entry " + name);
    }

    private static JsonNode type(JsonNode schema, String name) {
        return entry(schema, name);
    }

    @Test
    void eventsGoToEveryNegotiatedMonitor() throws Exception {
        try (QmpClient a = QmpClient.connect(daemon.qmpSocket);
             QmpClient b = QmpClient.connect(daemon.qmpSocket);
             QmpClient quiet = QmpClient.connectRaw(daemon.qmpSocket)) {
            Path file = dir.resolve("events.raw");
            a.ok("blockdev-create", Map.of("job-id", "ev", "options", Map.of("driver", "file", "filename", file.toString(), "size", 1 << 20)));
            for (QmpClient c : List.of(a, b)) {
                JsonNode e = c.awaitEvent("JOB_STATUS_CHANGE", d -> d.get("status").asString().equals("concluded"));
                assertThat(e.at("/timestamp/seconds").asLong()).isPositive();
                assertThat(e.at("/timestamp/microseconds").asLong()).isBetween(0L, 999_999L);
            }
            a.ok("job-dismiss", Map.of("id", "ev"));
            // The unnegotiated monitor got no events: its first message is the reply to this.
            quiet.sendRaw("{\"execute\":\"qmp_capabilities\"}\n");
            assertThat(quiet.nextReply().has("return")).isTrue();
        }
    }
}
