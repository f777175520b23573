package io.blockjobs.platform.qmp;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.platform.plugin.PluginHost;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobCommand;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/**
 * QMP {@code transaction}: all actions are prepared (arguments checked, nodes claimed) before any
 * starts; if one cannot be prepared, none starts. Actions are {@code abort} and any job
 * command a plugin adds (backup and bitmap actions arrive with their issues).
 */
public final class TransactionCommand {
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

    public static void register(QmpDispatcher d, JobManager jobs, PluginHost plugins) {
        d.register(QmpCommand.of("transaction", Args.class, null, a -> {
            boolean grouped = a.properties().flatMap(Properties::completionMode).orElse(CompletionMode.INDIVIDUAL)
                    == CompletionMode.GROUPED;
            List<JobManager.Prepared> prepared = new ArrayList<>();
            try {
                for (int i = 0; i < a.actions().size(); i++) {
                    Action action = a.actions().get(i);
                    if (action.type().equals("abort")) {
                        throw new CommandException("Transaction aborted using Abort action");
                    }
                    JobCommand<?> command = plugins.jobCommand(action.type()).orElseThrow(() -> new CommandException(
                            "Parameter 'actions[" + prepared.size() + "].type' does not accept value '" + action.type() + "'"));
                    prepared.add(prepare(jobs, command, action.data().orElse(Json.object()), "actions[" + i + "].data"));
                }
            } catch (RuntimeException e) {
                jobs.discard(prepared);
                throw e;
            }
            jobs.startAll(prepared, grouped);
            return null;
        }));
    }

    private static <A extends JobArgs> JobManager.Prepared prepare(JobManager jobs, JobCommand<A> command,
                                                                   JsonNode data, String path) {
        JsonNode checked = QmpTypes.check(data, command.arguments(), path, false);
        A args = Json.MAPPER.treeToValue(checked, command.arguments());
        return jobs.prepare(command, args);
    }
}
