package io.blockjobs.sdk.testkit;

import java.util.Locale;

/** QEMU's {@code JobVerb}, and in which status each is allowed ({@code job.c}'s JobVerbTable). */
enum JobVerb {
    CANCEL, PAUSE, RESUME, SET_SPEED, COMPLETE, FINALIZE, DISMISS, CHANGE;

    //                                U  C  R  P  Y  S  W  D  X  E  N
    private static final int[][] ALLOWED = {
        /* CANCEL    */              {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
        /* PAUSE     */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* RESUME    */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* SET_SPEED */              {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* COMPLETE  */              {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
        /* FINALIZE  */              {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
        /* DISMISS   */              {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
        /* CHANGE    */              {0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    };

    boolean allowedIn(JobStatus status) {
        return ALLOWED[ordinal()][status.ordinal()] == 1;
    }

    /** The name as QEMU's messages spell it ({@code set-speed}). */
    String qmpName() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }
}
