package io.blockjobs.platform.workflow;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.cronutils.model.time.ExecutionTime;
import io.blockjobs.sdk.error.CommandException;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import org.junit.jupiter.api.Test;

/** Cron schedules read as crontab reads them, on the local wall clock, daylight-saving days included. */
class WorkflowSchedulerTest {
    private static final ZoneId BERLIN = ZoneId.of("Europe/Berlin");

    private static ZonedDateTime at(String local) {
        return LocalDateTime.parse(local).atZone(BERLIN);
    }

    private static String next(String schedule, String from) {
        ExecutionTime times = WorkflowScheduler.parse(schedule);
        return WorkflowScheduler.nextAfter(times, at(from), BERLIN).toOffsetDateTime().toString();
    }

    @Test
    void fiveFieldsSixWithSecondsAndNicknames() {
        assertThat(next("0 2 * * *", "2025-06-01T10:00")).isEqualTo("2025-06-02T02:00+02:00");
        assertThat(next("*/15 * * * *", "2025-06-01T10:07")).isEqualTo("2025-06-01T10:15+02:00");
        assertThat(next("30 * * * * *", "2025-06-01T10:00:10")).isEqualTo("2025-06-01T10:00:30+02:00");
        assertThat(next("@daily", "2025-06-01T10:00")).isEqualTo("2025-06-02T00:00+02:00");
        assertThat(next("0 3 * * 0", "2025-06-02T10:00")).as("Sunday").isEqualTo("2025-06-08T03:00+02:00");
        assertThat(next("@weekly", "2025-06-02T10:00")).isEqualTo("2025-06-08T00:00+02:00");
    }

    @Test
    void aTimeTheClockSkipsRunsRightAfterTheChange() {
        // 2025-03-30: Berlin's clocks go from 02:00 to 03:00; 02:30 does not exist that night.
        assertThat(next("30 2 * * *", "2025-03-29T03:00")).isEqualTo("2025-03-30T03:30+02:00");
        assertThat(next("30 2 * * *", "2025-03-30T03:31")).isEqualTo("2025-03-31T02:30+02:00");
    }

    @Test
    void aTimeTheClockRepeatsRunsOnce() {
        // 2025-10-26: 03:00 becomes 02:00 again; 02:30 happens twice, the schedule runs at the first.
        assertThat(next("30 2 * * *", "2025-10-25T12:00")).isEqualTo("2025-10-26T02:30+02:00");
        ZonedDateTime afterFirst = ZonedDateTime.ofLocal(LocalDateTime.parse("2025-10-26T02:30:01"), BERLIN, null);
        assertThat(WorkflowScheduler.nextAfter(WorkflowScheduler.parse("30 2 * * *"), afterFirst, BERLIN)
                .toOffsetDateTime().toString()).isEqualTo("2025-10-27T02:30+01:00");
    }

    @Test
    void badSchedulesAreRefusedWithAHint() {
        assertThatThrownBy(() -> WorkflowScheduler.parse("61 * * * *")).isInstanceOf(CommandException.class)
                .hasMessageContaining("Invalid schedule '61 * * * *'").hasMessageContaining("'0 2 * * *'");
        assertThatThrownBy(() -> WorkflowScheduler.parse("every day")).isInstanceOf(CommandException.class);
        assertThatThrownBy(() -> WorkflowScheduler.parse("")).isInstanceOf(CommandException.class);
    }
}
