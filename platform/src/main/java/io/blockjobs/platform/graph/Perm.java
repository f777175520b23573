package io.blockjobs.platform.graph;

import java.util.ArrayList;
import java.util.List;

/**
 * QEMU's block permissions ({@code BlockPermission}), as bits: what a parent takes on a child
 * ({@code perm}) and what it lets other parents take ({@code shared-perm}).
 */
public enum Perm {
    /** The data read is what the guest would read: no one may change it behind this reader. */
    CONSISTENT_READ("consistent read", "consistent-read"),
    /** Writes that change the data. */
    WRITE("write", "write"),
    /** Writes that leave the data as it reads (copy-on-read, stream). */
    WRITE_UNCHANGED("write unchanged", "write-unchanged"),
    /** Changing the node's size. */
    RESIZE("resize", "resize");

    /** Every permission. */
    public static final int ALL = (1 << values().length) - 1;

    private final String words;
    private final String qapi;

    Perm(String words, String qapi) {
        this.words = words;
        this.qapi = qapi;
    }

    /** The bit of this permission. */
    public int bit() {
        return 1 << ordinal();
    }

    /** Whether {@code mask} holds this permission. */
    public boolean in(int mask) {
        return (mask & bit()) != 0;
    }

    /** The names in messages, as QEMU's {@code bdrv_perm_names}: {@code write, resize}. */
    public static String words(int mask) {
        List<String> names = new ArrayList<>();
        for (Perm p : values()) {
            if (p.in(mask)) {
                names.add(p.words);
            }
        }
        return String.join(", ", names);
    }

    /** The QAPI names, for {@code x-debug-query-block-graph}. */
    public static List<String> qapiNames(int mask) {
        List<String> names = new ArrayList<>();
        for (Perm p : values()) {
            if (p.in(mask)) {
                names.add(p.qapi);
            }
        }
        return names;
    }

    /** A mask of these permissions. */
    public static int of(Perm... perms) {
        int m = 0;
        for (Perm p : perms) {
            m |= p.bit();
        }
        return m;
    }
}
