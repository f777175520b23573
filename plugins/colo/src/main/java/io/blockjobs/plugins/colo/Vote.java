package io.blockjobs.plugins.colo;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * The vote of a {@code quorum} read, as QEMU's {@code quorum_vote}: the children's reads are
 * grouped into versions by content; the version most children returned wins. QEMU keeps its
 * versions in a list it prepends to and takes the first with the highest count, so among equal
 * counts the version seen last wins, and it reports losers version by version in that order,
 * each version's children newest first: this keeps both orders, so the events come out alike.
 *
 * @param winner  the first child that returned the winning data, or -1 if no read succeeded
 * @param votes   how many children returned it
 * @param losers  the children whose data differs from the winner's, in QEMU's report order
 */
record Vote(int winner, int votes, List<Integer> losers) {

    /**
     * Counts the votes of the children's reads; {@code reads[i]} is null where child i failed.
     * Buffers are compared from position to limit.
     */
    static Vote of(ByteBuffer[] reads) {
        int first = -1;
        for (int i = 0; i < reads.length; i++) {
            if (reads[i] != null) {
                first = i;
                break;
            }
        }
        if (first < 0) {
            return new Vote(-1, 0, List.of());
        }
        // QEMU first checks whether every successful read agrees with the first one.
        boolean agree = true;
        int successes = 1;
        for (int j = first + 1; j < reads.length; j++) {
            if (reads[j] != null) {
                successes++;
                if (!reads[first].equals(reads[j])) {
                    agree = false;
                }
            }
        }
        if (agree) {
            return new Vote(first, successes, List.of());
        }
        List<List<Integer>> versions = new ArrayList<>(); // in order of first appearance
        for (int i = 0; i < reads.length; i++) {
            if (reads[i] == null) {
                continue;
            }
            List<Integer> version = null;
            for (List<Integer> v : versions) {
                if (reads[v.get(0)].equals(reads[i])) {
                    version = v;
                    break;
                }
            }
            if (version == null) {
                version = new ArrayList<>();
                versions.add(version);
            }
            version.add(i);
        }
        List<Integer> winner = null;
        for (int v = versions.size() - 1; v >= 0; v--) { // QEMU's list order: newest version first
            if (winner == null || versions.get(v).size() > winner.size()) {
                winner = versions.get(v);
            }
        }
        List<Integer> losers = new ArrayList<>();
        for (int v = versions.size() - 1; v >= 0; v--) {
            List<Integer> version = versions.get(v);
            if (version != winner) {
                for (int k = version.size() - 1; k >= 0; k--) {
                    losers.add(version.get(k));
                }
            }
        }
        return new Vote(winner.get(0), winner.size(), losers);
    }

    /**
     * The error a failed request returns, as QEMU's {@code quorum_vote_error}: the errno most
     * children failed with (among equal counts, the one seen last).
     *
     * @param errors the children's errors, null where a child succeeded
     * @return the winning error, or null if none failed
     */
    static <E> E error(List<E> errors, java.util.function.BiPredicate<E, E> same) {
        List<List<E>> versions = new ArrayList<>();
        for (E e : errors) {
            if (e == null) {
                continue;
            }
            List<E> version = null;
            for (List<E> v : versions) {
                if (same.test(v.get(0), e)) {
                    version = v;
                    break;
                }
            }
            if (version == null) {
                version = new ArrayList<>();
                versions.add(version);
            }
            version.add(e);
        }
        List<E> winner = null;
        for (int v = versions.size() - 1; v >= 0; v--) {
            if (winner == null || versions.get(v).size() > winner.size()) {
                winner = versions.get(v);
            }
        }
        return winner == null ? null : winner.get(0);
    }
}
