package io.blockjobs.platform.throttle;

import io.blockjobs.sdk.driver.ThrottleGroup;
import java.io.InterruptedIOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A {@code throttle-group} object: QEMU's {@code block/throttle-groups.c} over
 * {@link ThrottleState}. Each member keeps two FIFO queues, reads and writes; within a
 * direction a member's requests never overtake each other, and members with requests waiting
 * take turns (QEMU's round robin of tokens). At most one timer per direction is armed in the
 * group; when it fires, the member that holds the token lets its first waiting request go.
 * Waiting happens on the caller's (virtual) thread, on a condition: nothing spins.
 *
 * <p>QEMU also lifts a member's limits while its node is drained; blockjobs' drain has no hook
 * into drivers, so a drain waits for throttled requests at the throttled rate.
 */
public final class ThrottleGroupImpl implements ThrottleGroup {
    /** The {@code qom-type}. */
    public static final String QOM_TYPE = "throttle-group";
    private static final int READ = 0;
    private static final int WRITE = 1;

    private final String id;
    private final Timebase time;
    private final ReentrantLock lock = new ReentrantLock();
    private ThrottleState state;
    /** Round-robin order; QEMU puts a new member at the head. */
    private final List<MemberImpl> members = new ArrayList<>();
    private final MemberImpl[] tokens = new MemberImpl[2];
    private final boolean[] anyTimerArmed = new boolean[2];

    /**
     * A group with a validated configuration.
     *
     * @throws io.blockjobs.sdk.error.CommandException if the configuration is not valid
     */
    public ThrottleGroupImpl(String id, ThrottleConfig config, Timebase time) {
        config.validate();
        this.id = id;
        this.time = time;
        this.state = new ThrottleState(config, time.nanoTime());
    }

    @Override
    public String id() {
        return id;
    }

    /** The configuration ({@code qom-get limits}). */
    public ThrottleConfig config() {
        lock.lock();
        try {
            return state.config();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Replaces the configuration and empties every bucket, as QEMU's {@code qom-set limits}
     * ({@code throttle_config}) does; requests already waiting keep their timers.
     */
    public void reconfigure(ThrottleConfig config) {
        config.validate();
        lock.lock();
        try {
            state = new ThrottleState(config, time.nanoTime());
        } finally {
            lock.unlock();
        }
    }

    /** The names of the members, newest first (QEMU's {@code can_be_deleted} asks whether there are any). */
    public List<String> members() {
        lock.lock();
        try {
            return members.stream().map(m -> m.name).toList();
        } finally {
            lock.unlock();
        }
    }

    /** How many requests of a direction wait in the whole group (for tests and statistics). */
    public int waiting(boolean write) {
        lock.lock();
        try {
            return members.stream().mapToInt(m -> m.queues[write ? WRITE : READ].size()).sum();
        } finally {
            lock.unlock();
        }
    }

    /** QEMU's {@code throttle_group_register_tgm}. */
    @Override
    public Member join(String name) {
        lock.lock();
        try {
            MemberImpl m = new MemberImpl(name);
            for (int d = 0; d < 2; d++) {
                if (tokens[d] == null) {
                    tokens[d] = m;
                }
            }
            members.add(0, m);
            return m;
        } finally {
            lock.unlock();
        }
    }

    /** A request waiting in a member's queue. */
    private static final class Waiter {
        final Condition wake;
        final long bytes;
        boolean admitted;

        Waiter(Condition wake, long bytes) {
            this.wake = wake;
            this.bytes = bytes;
        }
    }

    /** An armed timer; the member's slot holds it until it fires or is cancelled. */
    private static final class Armed {
        Timebase.Timer timer;
    }

    private final class MemberImpl implements Member {
        final String name;
        @SuppressWarnings("unchecked")
        final ArrayDeque<Waiter>[] queues = new ArrayDeque[] {new ArrayDeque<Waiter>(), new ArrayDeque<Waiter>()};
        final Armed[] timers = new Armed[2];
        boolean left;

        MemberImpl(String name) {
            this.name = name;
        }

        /** QEMU's {@code tgm_has_pending_reqs}. */
        boolean hasQueued(int d) {
            return !queues[d].isEmpty();
        }

        @Override
        public void acquire(boolean write, long bytes) throws InterruptedIOException {
            if (bytes < 0) {
                throw new IllegalArgumentException("negative request size " + bytes);
            }
            intercept(this, write ? WRITE : READ, bytes);
        }

        @Override
        public void close() {
            leave(this);
        }

        @Override
        public String toString() {
            return "member " + name + " of throttle group " + id;
        }
    }

    /**
     * QEMU's {@code throttle_group_co_io_limits_intercept}. A request that waits is admitted by
     * whoever lets it go (a timer, or the request before it), under the lock and at that moment:
     * in QEMU the woken coroutine runs before anything else can be admitted, and so it is here,
     * though the woken thread takes a while to run.
     */
    private void intercept(MemberImpl m, int d, long bytes) throws InterruptedIOException {
        lock.lock();
        try {
            if (m.left) {
                throw new IllegalStateException(m + " has left the group");
            }
            MemberImpl token = nextToken(m, d);
            boolean mustWait = scheduleTimer(token, d);
            // Wait if a timer is armed, or if this member's earlier requests still wait: FIFO.
            if (mustWait || m.hasQueued(d)) {
                Waiter w = new Waiter(lock.newCondition(), bytes);
                m.queues[d].add(w);
                try {
                    while (!w.admitted) {
                        w.wake.await();
                    }
                } catch (InterruptedException e) {
                    if (w.admitted) {
                        Thread.currentThread().interrupt(); // admitted and accounted already: go
                        return;
                    }
                    m.queues[d].remove(w);
                    throw new InterruptedIOException("interrupted while throttled by group " + id);
                }
                return;
            }
            state.account(d == WRITE, bytes);
            scheduleNextRequest(m, d);
        } finally {
            lock.unlock();
        }
    }

    /** Admits a waiting request: QEMU's woken request accounting itself. */
    private void admit(MemberImpl m, int d, Waiter w) {
        w.admitted = true;
        w.wake.signal();
        if (!m.left) {
            state.account(d == WRITE, w.bytes);
        }
    }

    /** QEMU's {@code throttle_group_next_tgm}: the next member in the circle. */
    private MemberImpl nextMember(MemberImpl m) {
        int i = members.indexOf(m);
        return members.get(i + 1 < members.size() ? i + 1 : 0);
    }

    /**
     * QEMU's {@code next_throttle_token}: the next member after the token holder with requests
     * waiting in this direction, or {@code m} if none has.
     */
    private MemberImpl nextToken(MemberImpl m, int d) {
        MemberImpl start = tokens[d];
        MemberImpl token = nextMember(start);
        while (token != start && !token.hasQueued(d)) {
            token = nextMember(token);
        }
        if (token == start && !token.hasQueued(d)) {
            token = m;
        }
        return token;
    }

    /**
     * QEMU's {@code throttle_group_schedule_timer}: whether the next request of {@code m} must
     * wait; arms {@code m}'s timer and gives it the token if none is armed in the group.
     */
    private boolean scheduleTimer(MemberImpl m, int d) {
        if (anyTimerArmed[d]) {
            return true;
        }
        boolean mustWait = scheduleMemberTimer(m, d);
        if (mustWait) {
            tokens[d] = m;
            anyTimerArmed[d] = true;
        }
        return mustWait;
    }

    /** {@code throttle_schedule_timer} (util/throttle.c): leak, compute the wait, arm the member's timer. */
    private boolean scheduleMemberTimer(MemberImpl m, int d) {
        long now = time.nanoTime();
        long wait = state.computeTimer(d == WRITE, now);
        if (wait == 0) {
            return false;
        }
        if (m.timers[d] == null) {
            arm(m, d, now + wait);
        }
        return true;
    }

    /**
     * QEMU's {@code schedule_next_request}: lets the next waiting request go, or arms a timer for
     * it. A request let go from this member's own queue runs its own {@code schedule_next_request}
     * in turn, here in the loop.
     */
    private void scheduleNextRequest(MemberImpl m, int d) {
        while (true) {
            MemberImpl token = nextToken(m, d);
            if (!token.hasQueued(d) || scheduleTimer(token, d)) {
                return;
            }
            // Prefer the current member's queue; else the token's starts from its timer, at once.
            Waiter w = m.queues[d].poll();
            if (w == null) {
                arm(token, d, time.nanoTime());
                anyTimerArmed[d] = true;
                tokens[d] = token;
                return;
            }
            tokens[d] = m;
            admit(m, d, w);
        }
    }

    /** {@code timer_mod}: (re)arms the member's timer of a direction. */
    private void arm(MemberImpl m, int d, long deadline) {
        if (m.timers[d] != null) {
            m.timers[d].timer.cancel();
        }
        Armed a = new Armed();
        m.timers[d] = a;
        a.timer = time.schedule(deadline, () -> fired(m, d, a));
    }

    /** QEMU's {@code timer_cb} and {@code throttle_group_restart_queue_entry}. */
    private void fired(MemberImpl m, int d, Armed a) {
        lock.lock();
        try {
            if (m.timers[d] != a) {
                return; // cancelled or re-armed meanwhile
            }
            m.timers[d] = null;
            anyTimerArmed[d] = false;
            Waiter w = m.queues[d].poll();
            if (w != null) {
                admit(m, d, w);
            }
            scheduleNextRequest(m, d);
        } finally {
            lock.unlock();
        }
    }

    /**
     * QEMU's {@code throttle_group_unregister_tgm}. A member leaves once its node is closed; a
     * request still waiting then (which QEMU rules out by draining first) is let go.
     */
    private void leave(MemberImpl m) {
        lock.lock();
        try {
            if (m.left) {
                return;
            }
            m.left = true;
            boolean[] hadTimer = new boolean[2];
            for (int d = 0; d < 2; d++) {
                if (m.timers[d] != null) {
                    m.timers[d].timer.cancel();
                    m.timers[d] = null;
                    anyTimerArmed[d] = false;
                    hadTimer[d] = true;
                }
                for (Waiter w; (w = m.queues[d].poll()) != null; ) {
                    admit(m, d, w); // let go, unaccounted: the member is gone
                }
                if (tokens[d] == m) {
                    MemberImpl next = nextMember(m);
                    tokens[d] = next == m ? null : next;
                }
            }
            members.remove(m);
            for (int d = 0; d < 2; d++) {
                if (hadTimer[d] && tokens[d] != null) {
                    scheduleNextRequest(tokens[d], d); // the timer it held was others' turn too
                }
            }
        } finally {
            lock.unlock();
        }
    }
}
