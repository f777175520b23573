package io.blockjobs.platform.job;

import java.util.Locale;

/**
 * QEMU's {@code JobVerb}, and in which status each is allowed ({@code job.c}'s JobVerbTable, as
 * in QEMU 7.2; {@code change} as QEMU 8.2 added it).
 */
public enum JobVerb {
    CANCEL, PAUSE, RESUME, SET_SPEED, COMPLETE, FINALIZE, DISMISS, CHANGE;

    //                                U  C  R  P  Y  S  W  D  X  E  N
    private static final int[][] ALLOWED = {
        /* CANCEL    */              {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
        /* PAUSE     */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* RESUME    */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* SET_SPEED */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* COMPLETE  */              {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
        /* FINALIZE  */              {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
        /* DISMISS   */              {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
        /* CHANGE    */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}, // QEMU 8.2's row; 7.2 has no change
    };

    /** Whether a job in {@code status} accepts this verb. */
    public boolean allowedIn(JobStatus status) {
        return ALLOWED[ordinal()][status.ordinal()] == 1;
    }

    /** The name as QEMU's messages spell it ({@code set-speed}). */
    public String qmpName() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }
}
