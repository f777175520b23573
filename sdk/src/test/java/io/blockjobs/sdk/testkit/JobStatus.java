package io.blockjobs.sdk.testkit;

import java.util.Locale;

/** QEMU's {@code JobStatus}, and which status may follow which ({@code job.c}'s JobSTT), as the platform has them. */
public enum JobStatus {
    UNDEFINED, CREATED, RUNNING, PAUSED, READY, STANDBY, WAITING, PENDING, ABORTING, CONCLUDED, NULL;

    //                                       U  C  R  P  Y  S  W  D  X  E  N
    private static final int[][] TRANSITIONS = {
        /* UNDEFINED */                     {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        /* CREATED   */                     {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
        /* RUNNING   */                     {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
        /* PAUSED    */                     {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
        /* READY     */                     {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
        /* STANDBY   */                     {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
        /* WAITING   */                     {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
        /* PENDING   */                     {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
        /* ABORTING  */                     {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
        /* CONCLUDED */                     {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
        /* NULL      */                     {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    };

    /** Whether QEMU lets a job go from this status to {@code next}. */
    public boolean canBecome(JobStatus next) {
        return TRANSITIONS[ordinal()][next.ordinal()] == 1;
    }

    /** The name as QMP spells it. */
    public String qmpName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Whether the job's run is over (it waits, finalizes, or is gone). */
    public boolean finished() {
        return this == WAITING || this == PENDING || this == ABORTING || this == CONCLUDED || this == NULL;
    }
}
