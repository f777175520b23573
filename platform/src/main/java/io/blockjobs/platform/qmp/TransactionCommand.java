package io.blockjobs.platform.qmp;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.platform.plugin.PluginHost;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobCommand;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;

/**
 * QMP {@code transaction}, as QEMU's {@code qmp_transaction}: every action is prepared in order;
 * if one fails, those prepared are aborted, newest first, and only the first error is returned;
 * otherwise all commit. Every action is cleaned up last. Actions: {@code abort},
 * {@code blockdev-snapshot}, {@code blockdev-snapshot-sync}, {@code blockdev-snapshot-internal-sync}
 * ({@link InternalSnapshotCommands}), the dirty bitmap actions
 * ({@link BitmapCommands}), and (a blockjobs extension) any job
 * command a plugin adds; the jobs start together when the transaction commits.
 */
public final class TransactionCommand {
    private static final Logger LOG = LoggerFactory.getLogger(TransactionCommand.class);
    /** Actions that start no job, which {@code completion-mode: grouped} refuses as QEMU does. */
    private static final java.util.Set<String> NON_JOB_ACTIONS = java.util.Set.of("abort", "blockdev-snapshot",
            "blockdev-snapshot-sync", "blockdev-snapshot-internal-sync");

    private TransactionCommand() {
    }

    /** {@code transaction}'s arguments. */
    public record Args(List<Action> actions, Optional<Properties> properties) {
    }

    /** One {@code TransactionAction}. */
    public record Action(String type, Optional<JsonNode> data) {
    }

    /** {@code TransactionProperties}. */
    public record Properties(Optional<CompletionMode> completionMode) {
    }

    /** {@code ActionCompletionMode}. */
    public enum CompletionMode {
        INDIVIDUAL, GROUPED
    }

    /** One action's part in a transaction (QEMU's {@code TransactionActionDrv}). */
    interface TxnAction {
        /** Checks and does the action so that it can still be undone. */
        void prepare();

        /** Every action prepared: make it final. */
        default void commit() {
        }

        /** Another action failed: undo {@link #prepare}. */
        default void abort() {
        }

        /** After commit or abort. */
        default void clean() {
        }
    }

    public static void register(QmpDispatcher d, JobManager jobs, PluginHost plugins, BlockGraph graph, Bitmaps bitmaps) {
        d.register(QmpCommand.of("transaction", Args.class, null, a -> {
            boolean grouped = a.properties().flatMap(Properties::completionMode).orElse(CompletionMode.INDIVIDUAL)
                    == CompletionMode.GROUPED;
            if (grouped) { // QEMU: only jobs (its backups) know how to finish together
                for (Action action : a.actions()) {
                    if (NON_JOB_ACTIONS.contains(action.type()) || action.type().startsWith("block-dirty-bitmap-")) {
                        throw new CommandException("Action '" + action.type()
                                + "' does not support Transaction property completion-mode = grouped");
                    }
                }
            }
            List<JobManager.Prepared> starting = new ArrayList<>();
            List<TxnAction> actions = new ArrayList<>();
            for (int i = 0; i < a.actions().size(); i++) {
                actions.add(action(a.actions().get(i), "actions[" + i + "].data", jobs, plugins, graph, bitmaps, starting));
            }
            List<TxnAction> prepared = new ArrayList<>();
            try {
                for (TxnAction action : actions) {
                    action.prepare();
                    prepared.add(action);
                }
            } catch (RuntimeException e) {
                for (int i = prepared.size() - 1; i >= 0; i--) {
                    try {
                        prepared.get(i).abort();
                    } catch (RuntimeException ae) {
                        LOG.warn("transaction abort: {}", ae.getMessage());
                    }
                }
                prepared.forEach(TxnAction::clean);
                throw e;
            }
            prepared.forEach(TxnAction::commit);
            jobs.startAll(starting, grouped);
            prepared.forEach(TxnAction::clean);
            return null;
        }));
    }

    private static TxnAction action(Action action, String path, JobManager jobs, PluginHost plugins, BlockGraph graph,
                                    Bitmaps bitmaps, List<JobManager.Prepared> starting) {
        JsonNode data = action.data().orElse(Json.object());
        switch (action.type()) {
            case "abort" -> {
                return () -> {
                    throw new CommandException("Transaction aborted using Abort action");
                };
            }
            case "blockdev-snapshot" -> {
                BlockCommands.SnapshotArgs args = args(data, BlockCommands.SnapshotArgs.class, path);
                return undoable(() -> BlockCommands.snapshot(graph, jobs, args));
            }
            case "blockdev-snapshot-sync" -> {
                BlockCommands.SnapshotSyncArgs args = args(data, BlockCommands.SnapshotSyncArgs.class, path);
                return undoable(() -> BlockCommands.snapshotSync(graph, jobs, args));
            }
            case "blockdev-snapshot-internal-sync" -> {
                InternalSnapshotCommands.CreateArgs args = args(data, InternalSnapshotCommands.CreateArgs.class, path);
                return undoable(() -> InternalSnapshotCommands.create(graph, jobs, args));
            }
            default -> {
                TxnAction bitmapAction = BitmapCommands.action(action.type(), data, path, bitmaps);
                if (bitmapAction != null) {
                    return bitmapAction;
                }
                JobCommand<?> command = plugins.jobCommand(action.type()).orElseThrow(() -> new CommandException(
                        "Parameter 'type' does not accept value '" + action.type() + "'"));
                return jobAction(jobs, command, data, path, starting);
            }
        }
    }

    /** An action whose prepare returns its own undo. */
    private static TxnAction undoable(java.util.function.Supplier<BlockGraph.Undo> prepare) {
        return new TxnAction() {
            private BlockGraph.Undo undo;

            @Override
            public void prepare() {
                undo = prepare.get();
            }

            @Override
            public void abort() {
                if (undo != null) {
                    undo.undo();
                }
            }
        };
    }

    private static <A extends JobArgs> TxnAction jobAction(JobManager jobs, JobCommand<A> command, JsonNode data,
                                                           String path, List<JobManager.Prepared> starting) {
        A args = args(data, command.arguments(), path);
        return new TxnAction() {
            private JobManager.Prepared prepared;

            @Override
            public void prepare() {
                prepared = jobs.prepare(command, args);
            }

            @Override
            public void commit() {
                starting.add(prepared);
            }

            @Override
            public void abort() {
                if (prepared != null) {
                    jobs.discard(List.of(prepared));
                }
            }
        };
    }

    static <T> T args(JsonNode data, Class<T> type, String path) {
        JsonNode checked = QmpTypes.check(data, type, path, false);
        return Json.MAPPER.treeToValue(checked, type);
    }
}
