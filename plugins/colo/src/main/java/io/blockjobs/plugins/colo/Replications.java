package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.plugin.Command;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Every open {@code replication} node, newest first as QEMU's {@code replication_states} list
 * holds them, and the commands that drive them all at once outside COLO migration, as QEMU names
 * them ({@code replication.c}'s {@code replication_*_all}, {@code migration/colo.c}'s
 * {@code qmp_xen_set_replication} and the rest). Each stops at the first node that refuses.
 */
final class Replications {
    private final List<ReplicationNode> nodes = new ArrayList<>();

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

    /** QEMU's qmp_xen_set_replication. */
    void set(SetArgs a) {
        if (a.failover().isPresent() && a.enable()) {
            throw new CommandException("Parameter 'failover' is only for stopping replication");
        }
        if (a.enable()) {
            for (ReplicationNode n : all()) {
                n.start(a.primary());
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
        return new Status(false, Optional.empty());
    }

    /** QEMU's replication_do_checkpoint_all (no NIC filters here to notify). */
    void checkpoint() {
        for (ReplicationNode n : all()) {
            n.checkpoint();
        }
    }

    /** The three commands. */
    List<Command<?>> commands() {
        return List.of(new Command<>("xen-set-replication", SetArgs.class, null, a -> {
            set(a);
            return null;
        }), new Command<>("query-xen-replication-status", Void.class, Status.class, a -> status()),
                new Command<>("xen-colo-do-checkpoint", Void.class, null, a -> {
                    checkpoint();
                    return null;
                }));
    }
}
