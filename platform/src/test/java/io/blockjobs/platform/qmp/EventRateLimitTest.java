package io.blockjobs.platform.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.event.Event;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.event.QmpEvent;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** QEMU's monitor rate limit on the quorum events, with the periods' ends run by hand. */
class EventRateLimitTest {
    final EventBus in = new EventBus();
    final EventBus out = new EventBus();
    final List<Runnable> timers = new ArrayList<>();
    final List<String> seen = new ArrayList<>();

    EventRateLimitTest() {
        EventRateLimit limit = new EventRateLimit(out, (task, ms) -> {
            assertThat(ms).isEqualTo(EventRateLimit.PERIOD_MS);
            timers.add(task);
        });
        in.subscribe(limit::accept);
        out.subscribe((Event e) -> seen.add(e.name() + " " + e.data().path("node-name").asString()
                + e.data().path("reference").asString() + " " + e.data().path("sector-num").asLong()));
    }

    private void bad(String node, long sector) {
        in.publish(new QmpEvent.QuorumReportBad(QmpEvent.QuorumOpType.READ, Optional.empty(), node, sector, 1));
    }

    private void endPeriods() {
        List<Runnable> due = new ArrayList<>(timers);
        timers.clear();
        due.forEach(Runnable::run);
    }

    @Test
    void theFirstGoesAtOnceTheLastOfAPeriodAtItsEndPerNodeName() {
        bad("c0", 1);
        bad("c0", 2);
        bad("c0", 3);
        bad("c1", 4); // another node has its own period
        in.publish(new QmpEvent.QuorumFailure("q", 5, 1));
        in.publish(new QmpEvent.BlockExportDeleted("e")); // not limited
        assertThat(seen).containsExactly("QUORUM_REPORT_BAD c0 1", "QUORUM_REPORT_BAD c1 4", "QUORUM_FAILURE q 5",
                "BLOCK_EXPORT_DELETED  0");
        seen.clear();
        endPeriods(); // c0's last waiting one goes, and a new period begins for c0; c1 and the failure are free
        assertThat(seen).containsExactly("QUORUM_REPORT_BAD c0 3");
        seen.clear();
        bad("c0", 6); // still inside c0's new period
        bad("c1", 7); // c1's period ended with nothing waiting: at once
        assertThat(seen).containsExactly("QUORUM_REPORT_BAD c1 7");
        endPeriods();
        assertThat(seen).containsExactly("QUORUM_REPORT_BAD c1 7", "QUORUM_REPORT_BAD c0 6");
        endPeriods();
        endPeriods();
        assertThat(timers).isEmpty();
        seen.clear();
        bad("c0", 8);
        assertThat(seen).containsExactly("QUORUM_REPORT_BAD c0 8");
    }
}
