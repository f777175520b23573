package io.blockjobs.platform.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.Json;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import tools.jackson.databind.JsonNode;

/** The client's pieces that need no daemon: how a job's ending is told, the table, --arg values. */
class ClientPartsTest {
    private static final long MS = TimeUnit.MILLISECONDS.toNanos(1);

    private static JsonNode json(String text) {
        return Json.MAPPER.readTree(text.replace('\'', '"'));
    }

    private static JsonNode status(String id, String status) {
        return json("{'event':'JOB_STATUS_CHANGE','data':{'id':'" + id + "','status':'" + status + "'}}");
    }

    private static JsonNode jobs(String... entries) {
        return json("[" + String.join(",", entries) + "]");
    }

    private static String job(String id, String status, long current, long total) {
        return "{'id':'" + id + "','type':'stream','status':'" + status + "','current-progress':" + current
                + ",'total-progress':" + total + "}";
    }

    @Test
    void anAutoDismissedJobEndsByItsEventsWhicheverArrivesFirst() {
        JobTable t = new JobTable();
        t.update(jobs(job("a", "running", 0, 100)), 0);
        t.update(jobs(), 200 * MS); // gone from query-jobs before its events arrived
        assertThat(t.allEnded()).isFalse();
        assertThat(t.row("a").label()).isEqualTo("running");
        t.event(json("{'event':'BLOCK_JOB_COMPLETED','data':{'type':'stream','device':'a','len':100,'offset':100,'speed':0}}"));
        t.event(status("a", "concluded"));
        assertThat(t.allEnded()).isTrue();
        assertThat(t.anyFailed()).isFalse();
        assertThat(JobTable.line(t.row("a"))).isEqualTo("a stream completed 100%");
    }

    @Test
    void failedCancelledAndAbortedJobsAreTold() {
        JobTable t = new JobTable();
        t.update(jobs(job("f", "running", 10, 100), job("c", "running", 20, 100), job("x", "running", 0, 10)), 0);
        for (String id : List.of("f", "c", "x")) {
            t.event(status(id, "aborting"));
        }
        t.event(json("{'event':'BLOCK_JOB_COMPLETED','data':{'type':'stream','device':'f','len':100,'offset':40,'speed':0,"
                + "'error':'Input/output error'}}"));
        t.event(json("{'event':'BLOCK_JOB_CANCELLED','data':{'type':'stream','device':'c','len':100,'offset':30,'speed':0}}"));
        for (String id : List.of("f", "c", "x")) {
            t.event(status(id, "concluded"));
        }
        assertThat(t.allEnded()).isTrue();
        assertThat(t.anyFailed()).isTrue();
        assertThat(JobTable.line(t.row("f"))).isEqualTo("f stream failed 40% error: Input/output error");
        assertThat(JobTable.line(t.row("c"))).isEqualTo("c stream cancelled 30%");
        // Not a block job (no BLOCK_JOB_* event): aborting without an error is a cancel, until
        // query-jobs shows the concluded job's error.
        assertThat(t.row("x").label()).isEqualTo("cancelled");
        t.update(jobs("{'id':'x','type':'create','status':'concluded','current-progress':0,'total-progress':10,"
                + "'error':'No space left on device'}"), 300 * MS);
        assertThat(JobTable.line(t.row("x"))).isEqualTo("x create failed 0% error: No space left on device");
    }

    @Test
    void onceEventsTellAStatusAnOlderOrNewerReplyDoesNotChangeIt() {
        JobTable t = new JobTable();
        t.update(jobs(job("a", "running", 0, 100)), 0);
        t.event(status("a", "paused"));
        t.update(jobs(job("a", "running", 10, 100)), 200 * MS); // sent before the pause, read after it
        assertThat(t.row("a").label()).isEqualTo("paused");
        assertThat(t.row("a").current).isEqualTo(10);
        // A concluded job in a reply waits for its events, which say how it ended.
        t.event(status("a", "running"));
        t.update(jobs(job("a", "concluded", 20, 100)), 400 * MS);
        assertThat(t.allEnded()).isFalse();
        t.event(status("a", "aborting"));
        t.event(json("{'event':'BLOCK_JOB_CANCELLED','data':{'type':'stream','device':'a','len':100,'offset':20,'speed':0}}"));
        t.event(status("a", "concluded"));
        assertThat(t.row("a").label()).isEqualTo("cancelled");
    }

    @Test
    void aLateEventChangesTheVerdict() {
        JobTable t = new JobTable();
        t.update(jobs(job("d", "concluded", 5, 10)), 0); // concluded before the client came: no events told it
        assertThat(t.row("d").label()).isEqualTo("completed");
        t.event(json("{'event':'BLOCK_JOB_CANCELLED','data':{'type':'stream','device':'d','len':10,'offset':5,'speed':0}}"));
        assertThat(t.row("d").label()).isEqualTo("cancelled");
        assertThat(t.anyFailed()).isTrue();
    }

    @Test
    void aJobAlreadyConcludedCountsAsEnded() {
        JobTable t = new JobTable();
        t.update(jobs(job("d", "concluded", 5, 5)), 0);
        assertThat(t.allEnded()).isTrue();
        assertThat(t.anyFailed()).isFalse();
    }

    @Test
    void speedAndEtaComeFromProgressOverTime() {
        JobTable t = new JobTable();
        long mib = 1 << 20;
        t.update(jobs(job("s", "running", 0, 100 * mib)), 0);
        assertThat(JobTable.table(t.rows()).get(1)).as("no speed from one sample").doesNotContain("/s");
        t.update(jobs(job("s", "running", 2 * mib, 100 * mib)), 500 * MS);
        t.update(jobs(job("s", "running", 4 * mib, 100 * mib)), 1000 * MS);
        assertThat(t.row("s").speed).isEqualTo(4.0 * mib);
        assertThat(t.row("s").eta()).isEqualTo(24);
        List<String> table = JobTable.table(t.rows());
        assertThat(table.get(0)).startsWith("ID TYPE     STATUS    PROGRESS");
        assertThat(table.get(1)).isEqualTo("s  stream   running   [#-------------------]   4%    4.0 MiB/s     0:24");
        assertThat(table).allMatch(l -> l.length() < 80);
    }

    @Test
    void theTableFitsItsWidthWithLongIdsSlowSpeedsAndLongEtas() {
        JobTable t = new JobTable();
        long gib = 1L << 30;
        t.update(jobs(job("libvirt-12-format", "running", 0, 100 * gib),
                job("libvirt-12-storage", "running", 0, 100 * gib)), 0);
        t.update(jobs(job("libvirt-12-format", "running", 1040000, 100 * gib),
                job("libvirt-12-storage", "running", 1040000, 100 * gib)), 1000 * MS);
        List<String> table = JobTable.table(t.rows(), 79);
        assertThat(table.get(1)).startsWith("libvirt-12-format  ").contains("1015.6 KiB/s").endsWith("28:40:44");
        assertThat(table.get(2)).startsWith("libvirt-12-storage ");
        assertThat(table).allMatch(l -> l.length() <= 79);
        assertThat(JobTable.table(t.rows(), 60)).as("the bar gives way, to a point").allMatch(l -> l.contains("[") || l.startsWith("ID"))
                .anyMatch(l -> l.contains("[" + "-".repeat(10) + "]"));
    }

    @Test
    void newJobsAreFollowedFromTheirEvents() {
        JobTable t = new JobTable();
        t.update(jobs(job("a", "running", 0, 10)), 0);
        t.event(status("b", "created"));
        t.event(status("a", "null"));
        assertThat(t.allEnded()).as("b has not ended").isFalse();
        t.event(status("b", "running"));
        t.event(status("b", "null"));
        assertThat(t.allEnded()).isTrue();
        assertThat(t.rows()).extracting(r -> r.id).containsExactly("a", "b");
    }

    @Test
    void formats() {
        assertThat(Terminal.bar(0.5, 10)).isEqualTo("[#####-----]");
        assertThat(Terminal.bar(1.7, 4)).isEqualTo("[####]");
        assertThat(Terminal.bytes(512)).isEqualTo("512 B");
        assertThat(Terminal.bytes(1536)).isEqualTo("1.5 KiB");
        assertThat(Terminal.bytes(3L << 30)).isEqualTo("3.0 GiB");
        assertThat(Terminal.duration(42)).isEqualTo("0:42");
        assertThat(Terminal.duration(3 * 3600 + 2 * 60 + 11)).isEqualTo("3:02:11");
        assertThat(Terminal.fit("abcdef", 4)).isEqualTo("abc~");
    }

    @Test
    void argValuesAreJsonIfTheyParseElseStrings() throws Exception {
        JsonNode args = RunCommand.arguments("{\"keep\": 3, \"n\": 0}",
                List.of("n=42", "on=true", "name=disk0", "list=[1,2]", "path=/a/b=c", "empty=", "quoted=\"7\"", "half={x"));
        assertThat(args.toString()).isEqualTo("{\"keep\":3,\"n\":42,\"on\":true,\"name\":\"disk0\",\"list\":[1,2],"
                + "\"path\":\"/a/b=c\",\"empty\":\"\",\"quoted\":\"7\",\"half\":\"{x\"}");
        assertThatThrownBy(() -> RunCommand.arguments(null, List.of("novalue"))).hasMessageContaining("KEY=VALUE");
        assertThatThrownBy(() -> RunCommand.arguments("[1]", List.of())).hasMessageContaining("JSON object");
    }
}
