package io.blockjobs.platform.image;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.LinkedList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * blkdebug's rules and state machine, as QEMU 7.2's {@code block/blkdebug.c} runs them.
 *
 * <ul>
 *   <li>The state starts at 1; a rule's {@code state} 0 matches any state.</li>
 *   <li>An event runs the rules of that event whose state matches the state <em>at the
 *       event</em> (no chaining within one event). If any {@code inject-error} rule matches, the
 *       matching ones <em>replace</em> the whole active set. Of matching {@code set-state} rules
 *       the first defined wins.</li>
 *   <li>A request is checked against the active rules in definition order; the first whose
 *       sector (or any, for -1) lies in the request and whose iotypes hold the request's kind
 *       decides. Its errno fails the request; errno 0 lets it pass and hides later rules.
 *       Active rules stay active for every later request until another event replaces them;
 *       a {@code once} rule goes for good once it failed a request.</li>
 * </ul>
 *
 * <p>Thread-safe: events and checks come from concurrent requests.
 */
public final class BlkdebugRules {

    /** QEMU's {@code BlkdebugIOType}: the kinds of request a rule applies to. */
    public enum IoType {
        READ, WRITE, WRITE_ZEROES, DISCARD, FLUSH, BLOCK_STATUS;

        /** What a rule without {@code iotype} applies to: everything but block status. */
        public static final Set<IoType> DEFAULT = Set.copyOf(EnumSet.of(READ, WRITE, WRITE_ZEROES, DISCARD, FLUSH));

        /** The QAPI name ({@code write-zeroes}). */
        public String qapiName() {
            return name().toLowerCase(Locale.ROOT).replace('_', '-');
        }

        /** The kind of this QAPI name, or null. */
        public static IoType byName(String name) {
            for (IoType t : values()) {
                if (t.qapiName().equals(name)) {
                    return t;
                }
            }
            return null;
        }
    }

    /**
     * One {@code inject-error} rule.
     *
     * @param event       the event that activates it
     * @param state       the state it activates in, 0 for any
     * @param iotypes     the kinds of request it fails
     * @param errno       the error it fails them with (0: none, and later rules are hidden)
     * @param sector      the 512-byte sector a request must contain, -1 for any
     * @param once        whether it goes after failing one request
     * @param immediately QEMU's choice between failing at once and after one trip through the
     *                    event loop; blockjobs has no completion callbacks, so both fail the
     *                    request before it returns
     */
    public record InjectError(BlkdebugEvent event, int state, Set<IoType> iotypes, int errno, long sector,
                              boolean once, boolean immediately) {
        /** Copies the set. */
        public InjectError {
            iotypes = Set.copyOf(iotypes);
        }
    }

    /** One {@code set-state} rule: on {@code event} in {@code state} (0: any), go to {@code newState}. */
    public record SetState(BlkdebugEvent event, int state, int newState) {
    }

    /** A rule as held: its identity is what {@code once} removes. */
    private static final class Rule {
        final InjectError inject;
        final SetState setState;

        Rule(InjectError inject, SetState setState) {
            this.inject = inject;
            this.setState = setState;
        }

        int state() {
            return inject != null ? inject.state() : setState.state();
        }
    }

    private final Map<BlkdebugEvent, LinkedList<Rule>> byEvent = new EnumMap<>(BlkdebugEvent.class);
    private final List<Rule> active = new ArrayList<>();
    private int state = 1;

    /**
     * The rules in definition order (those of the config file first). As QEMU, each is put at
     * the head of its event's list, inject-error rules before set-state rules.
     */
    public BlkdebugRules(List<InjectError> injectErrors, List<SetState> setStates) {
        for (InjectError r : injectErrors) {
            byEvent.computeIfAbsent(r.event(), e -> new LinkedList<>()).addFirst(new Rule(r, null));
        }
        for (SetState r : setStates) {
            byEvent.computeIfAbsent(r.event(), e -> new LinkedList<>()).addFirst(new Rule(null, r));
        }
    }

    /** The current state. */
    public synchronized int state() {
        return state;
    }

    /** QEMU's {@code blkdebug_debug_event}. */
    public synchronized void event(BlkdebugEvent event) {
        List<Rule> rules = byEvent.get(event);
        if (rules == null) {
            return;
        }
        int newState = state;
        int injects = 0;
        for (Rule r : rules) {
            if (r.state() != 0 && r.state() != state) {
                continue;
            }
            if (r.inject != null) {
                if (++injects == 1) {
                    active.clear();
                }
                active.addFirst(r); // rules run newest first: the active set ends in definition order
            } else {
                newState = r.setState.newState();
            }
        }
        state = newState;
    }

    /**
     * QEMU's {@code rule_check}: the errno the request fails with, or 0 (a negative errno, which
     * QEMU returns as a positive result, lets the request pass too).
     *
     * @param bytes the request's length (0 for a flush, which only rules without a sector match)
     */
    public synchronized int check(long offset, long bytes, IoType type) {
        Rule hit = null;
        for (Rule r : active) {
            if (covers(r.inject.sector(), offset, bytes) && r.inject.iotypes().contains(type)) {
                hit = r;
                break;
            }
        }
        if (hit == null || hit.inject.errno() == 0) {
            return 0;
        }
        if (hit.inject.once()) {
            active.remove(hit);
            byEvent.get(hit.inject.event()).remove(hit);
        }
        return hit.inject.errno();
    }

    private static boolean covers(long sector, long offset, long bytes) {
        if (sector == -1) {
            return true;
        }
        if (sector < 0 || sector > Long.MAX_VALUE / 512) {
            return false; // QEMU compares sector * 512 as an unsigned number: never inside a request
        }
        long at = sector * 512;
        return bytes != 0 && at >= offset && at - offset < bytes;
    }
}
