package io.blockjobs.platform.job;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link JobStatus#canBecome} and {@link JobVerb#allowedIn} against QEMU's own tables, cell by
 * cell. The tables below are transcribed from QEMU's source by hand, row by row, and keyed by
 * QEMU's names rather than by this project's enum order, so a slip in either copy fails a cell.
 */
class JobTablesTest {
    /** QEMU 7.2 {@code qapi/job.json} lines 80-82: {@code JobStatus}, in QEMU's order (the tables' columns). */
    private static final List<String> QEMU_STATUSES = List.of("undefined", "created", "running", "paused", "ready",
            "standby", "waiting", "pending", "aborting", "concluded", "null");

    /**
     * QEMU 7.2 {@code job.c} lines 59-72, {@code JobSTT[from][to]}; rows and columns in the
     * order of {@link #QEMU_STATUSES} (U, C, R, P, Y, S, W, D, X, E, N).
     */
    private static final int[][] QEMU_JOB_STT = {
        /*                  U, C, R, P, Y, S, W, D, X, E, N */
        /* U: undefined */ {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        /* C: created   */ {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
        /* R: running   */ {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
        /* P: paused    */ {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
        /* Y: ready     */ {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
        /* S: standby   */ {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
        /* W: waiting   */ {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
        /* D: pending   */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
        /* X: aborting  */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
        /* E: concluded */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
        /* N: null      */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    };

    /** QEMU 7.2 {@code qapi/job.json} lines 105-107: {@code JobVerb}, in QEMU's order. */
    private static final List<String> QEMU_VERBS = List.of("cancel", "pause", "resume", "set-speed", "complete",
            "dismiss", "finalize");

    /**
     * QEMU 7.2 {@code job.c} lines 74-83, {@code JobVerbTable[verb][status]}; each row is
     * keyed by the verb's name (job.c writes them by enum index, not in job.json's order).
     */
    private static final Object[][] QEMU_JOB_VERB_TABLE = {
        /* verb                  U, C, R, P, Y, S, W, D, X, E, N */
        {"cancel",    new int[] {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}},
        {"pause",     new int[] {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}},
        {"resume",    new int[] {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}},
        {"set-speed", new int[] {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}},
        {"complete",  new int[] {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}},
        {"finalize",  new int[] {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}},
        {"dismiss",   new int[] {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}},
        // Not in QEMU 7.2: block-job-change (JOB_VERB_CHANGE) came with QEMU 8.2, whose job.c
        // adds this row after DISMISS.
        {"change",    new int[] {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}},
    };

    private static JobStatus status(String qemuName) {
        return JobStatus.valueOf(qemuName.toUpperCase(Locale.ROOT));
    }

    private static JobVerb verb(String qemuName) {
        return JobVerb.valueOf(qemuName.toUpperCase(Locale.ROOT).replace('-', '_'));
    }

    static Stream<Arguments> statusPairs() {
        List<Arguments> pairs = new ArrayList<>();
        for (int from = 0; from < QEMU_STATUSES.size(); from++) {
            for (int to = 0; to < QEMU_STATUSES.size(); to++) {
                pairs.add(Arguments.of(QEMU_STATUSES.get(from), QEMU_STATUSES.get(to), QEMU_JOB_STT[from][to] == 1));
            }
        }
        return pairs.stream();
    }

    @ParameterizedTest(name = "{0} -> {1}: {2}")
    @MethodSource("statusPairs")
    void transitionAsInQemu(String from, String to, boolean allowed) {
        assertThat(status(from).canBecome(status(to))).as("%s -> %s", from, to).isEqualTo(allowed);
    }

    static Stream<Arguments> verbStatusPairs() {
        List<Arguments> pairs = new ArrayList<>();
        for (Object[] row : QEMU_JOB_VERB_TABLE) {
            int[] cells = (int[]) row[1];
            for (int s = 0; s < QEMU_STATUSES.size(); s++) {
                pairs.add(Arguments.of(row[0], QEMU_STATUSES.get(s), cells[s] == 1));
            }
        }
        return pairs.stream();
    }

    @ParameterizedTest(name = "{0} in {1}: {2}")
    @MethodSource("verbStatusPairs")
    void verbAsInQemu(String verb, String status, boolean allowed) {
        assertThat(verb(verb).allowedIn(status(status))).as("%s in %s", verb, status).isEqualTo(allowed);
    }

    @Test
    void namesAndOrderAsInQemu() {
        assertThat(Arrays.stream(JobStatus.values()).map(JobStatus::qmpName)).containsExactlyElementsOf(QEMU_STATUSES);
        List<String> verbs = new ArrayList<>(QEMU_VERBS);
        verbs.add("change");
        assertThat(Arrays.stream(JobVerb.values()).map(JobVerb::qmpName)).containsExactlyInAnyOrderElementsOf(verbs);
        assertThat(Arrays.stream(QEMU_JOB_VERB_TABLE).map(r -> (String) r[0])).containsExactlyInAnyOrderElementsOf(verbs);
        for (int[] row : QEMU_JOB_STT) {
            assertThat(row).hasSize(QEMU_STATUSES.size());
        }
        assertThat(QEMU_JOB_STT.length).isEqualTo(QEMU_STATUSES.size());
        for (Object[] row : QEMU_JOB_VERB_TABLE) {
            assertThat((int[]) row[1]).hasSize(QEMU_STATUSES.size());
        }
    }
}
