package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.driver.DriverEvents;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.plugin.Command;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Every open {@code replication} node, newest first as QEMU's {@code replication_states} list
 * holds them, and the commands that drive them all at once outside COLO migration, as QEMU names
 * them ({@code replication.c}'s {@code replication_*_all}, {@code migration/colo.c}'s
 * {@code qmp_xen_set_replication} and the rest). Each stops at the first node that refuses.
 *
 * <p>It also keeps the side's COLO state, as {@code query-colo-status} reports it: while
 * replication runs the side is in COLO mode ({@code primary} or {@code secondary}), and
 * {@code x-colo-lost-heartbeat} fails it over, with {@code COLO_EXIT} when that is done.
 */
final class Replications {
    private final List<ReplicationNode> nodes = new ArrayList<>();
    private volatile DriverEvents events;
    private String mode = "none"; // QEMU's COLOMode, guarded by this
    private String lastMode = "none";
    private String reason = "none"; // QEMU's COLOExitReason

    /** Where COLO_EXIT goes (any node's sink: they all lead to the daemon's monitor). */
    void useEvents(DriverEvents sink) {
        events = sink;
    }

    synchronized void add(ReplicationNode n) {
        nodes.add(0, n);
    }

    synchronized void remove(ReplicationNode n) {
        nodes.remove(n);
    }

    private synchronized List<ReplicationNode> all() {
        return new ArrayList<>(nodes);
    }

    /** {@code xen-set-replication}'s arguments. */
    record SetArgs(boolean enable, boolean primary, Optional<Boolean> failover) {
    }

    /** QEMU's {@code ReplicationStatus}. */
    record Status(boolean error, Optional<String> desc) {
    }

    /** QEMU's {@code COLOStatus}. */
    record ColoStatus(String mode, String lastMode, String reason) {
    }

    /** QEMU's qmp_xen_set_replication. */
    void set(SetArgs a) {
        if (a.failover().isPresent() && a.enable()) {
            throw new CommandException("Parameter 'failover' is only for stopping replication");
        }
        if (a.enable()) {
            for (ReplicationNode n : all()) {
                n.start(a.primary());
            }
            synchronized (this) {
                if (!all().isEmpty()) {
                    mode = a.primary() ? "primary" : "secondary";
                    reason = "none";
                }
            }
            return;
        }
        boolean failover = a.failover().orElse(false);
        for (ReplicationNode n : all()) {
            try {
                n.stop(failover);
            } catch (CommandException e) {
                if (!failover) {
                    throw e;
                }
                return; // QEMU stops at the refusal but, for a failover, reports nothing
            }
        }
        left("request");
    }

    private synchronized void left(String why) {
        if (!mode.equals("none")) {
            lastMode = mode;
            mode = "none";
        }
        reason = why;
    }

    /** QEMU's qmp_query_colo_status. */
    synchronized ColoStatus coloStatus() {
        return new ColoStatus(mode, lastMode, reason);
    }

    /**
     * QEMU's qmp_x_colo_lost_heartbeat: the side fails over (the primary stops forwarding; the
     * secondary commits its active and hidden disks into the secondary disk in the background) and
     * sends {@code COLO_EXIT} when it is done. Refused outside COLO mode, twice, or when a node
     * cannot fail over, with the reason.
     */
    void lostHeartbeat() {
        String side;
        synchronized (this) {
            if (mode.equals("none")) {
                throw new CommandException("The feature 'colo' is not enabled");
            }
            if (reason.equals("processing")) {
                throw new CommandException("COLO failover is already actived");
            }
            side = mode;
            reason = "processing";
        }
        List<java.util.concurrent.CompletableFuture<String>> done = new ArrayList<>();
        for (ReplicationNode n : all()) {
            java.util.concurrent.CompletableFuture<String> d = new java.util.concurrent.CompletableFuture<>();
            try {
                n.stop(true, d::complete); // null when done, else why it failed
            } catch (CommandException e) {
                synchronized (this) {
                    reason = "none";
                }
                throw e;
            }
            done.add(d);
        }
        java.util.concurrent.CompletableFuture.allOf(done.toArray(java.util.concurrent.CompletableFuture[]::new))
                .thenRun(() -> {
                    String why = done.stream().allMatch(d -> d.join() == null) ? "request" : "error";
                    left(why);
                    DriverEvents sink = events;
                    if (sink != null) {
                        sink.send("COLO_EXIT", Map.of("mode", side, "reason", why));
                    }
                });
    }

    /** QEMU's qmp_query_xen_replication_status. */
    Status status() {
        for (ReplicationNode n : all()) {
            try {
                n.error();
            } catch (CommandException e) {
                return new Status(true, Optional.of(e.getMessage()));
            }
        }
        for (ReplicationNode n : all()) {
            String progress = n.failoverProgress();
            if (progress != null) {
                return new Status(false, Optional.of(progress)); // progress, not QEMU's "I/O error occurred"
            }
        }
        return new Status(false, Optional.empty());
    }

    /** QEMU's replication_do_checkpoint_all (no NIC filters here to notify). */
    void checkpoint() {
        for (ReplicationNode n : all()) {
            n.checkpoint();
        }
    }

    /** The commands. */
    List<Command<?>> commands() {
        return List.of(new Command<>("xen-set-replication", SetArgs.class, null, a -> {
            set(a);
            return null;
        }), new Command<>("query-xen-replication-status", Void.class, Status.class, a -> status()),
                new Command<>("xen-colo-do-checkpoint", Void.class, null, a -> {
                    checkpoint();
                    return null;
                }), new Command<>("query-colo-status", Void.class, ColoStatus.class, a -> coloStatus()),
                new Command<>("x-colo-lost-heartbeat", Void.class, null, a -> {
                    lostHeartbeat();
                    return null;
                }));
    }
}
