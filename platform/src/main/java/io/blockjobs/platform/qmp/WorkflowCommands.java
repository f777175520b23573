package io.blockjobs.platform.qmp;

import io.blockjobs.platform.workflow.WorkflowEngine;
import io.blockjobs.platform.workflow.WorkflowError;
import io.blockjobs.platform.workflow.WorkflowInfo;
import io.blockjobs.platform.workflow.WorkflowScheduler;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/**
 * Workflows over QMP: {@code workflow-run}, {@code query-workflows}, {@code workflow-cancel},
 * {@code workflow-schedule}, {@code query-workflow-schedules}, {@code workflow-unschedule}, and
 * the events {@code WORKFLOW_STARTED}, {@code WORKFLOW_LOG}, {@code WORKFLOW_FINISHED}.
 */
public final class WorkflowCommands {
    private WorkflowCommands() {
    }

    /** {@code workflow-run}'s arguments: a script in the distribution's scripts/ or a path. */
    public record RunArgs(String script, Optional<JsonNode> args, Optional<String> id, Optional<Long> timeout,
                          Optional<Long> maxStatements, Optional<Long> cpuTime) {
    }

    /** {@code workflow-run}'s reply. */
    public record RunReply(String id) {
    }

    /** Arguments naming a workflow run. */
    public record IdArgs(String id) {
    }

    /** {@code workflow-schedule}'s arguments. */
    public record ScheduleArgs(String name, String script, String schedule, Optional<JsonNode> args,
                               Optional<Long> timeout, Optional<Long> maxStatements, Optional<Long> cpuTime) {
    }

    /** Arguments naming a schedule. */
    public record NameArgs(String name) {
    }

    public static void register(QmpDispatcher d, WorkflowEngine engine, WorkflowScheduler scheduler) {
        d.register(QmpCommand.of("workflow-run", RunArgs.class, RunReply.class, a -> new RunReply(engine.start(
                new WorkflowEngine.Request(a.script(), a.args().orElse(null), a.id(), a.timeout(), a.maxStatements(),
                        a.cpuTime(), Optional.empty())))));
        d.register(QmpCommand.of("query-workflows", Void.class, QmpTypes.listOf(WorkflowInfo.class), a -> engine.query()));
        d.register(QmpCommand.of("workflow-cancel", IdArgs.class, null, a -> {
            engine.cancel(a.id());
            return null;
        }));
        d.register(QmpCommand.of("workflow-schedule", ScheduleArgs.class, WorkflowScheduler.ScheduleInfo.class,
                a -> scheduler.add(a.name(), a.schedule(), new WorkflowEngine.Request(a.script(), a.args().orElse(null),
                        Optional.empty(), a.timeout(), a.maxStatements(), a.cpuTime(), Optional.of(a.name())))));
        d.register(QmpCommand.of("query-workflow-schedules", Void.class,
                QmpTypes.listOf(WorkflowScheduler.ScheduleInfo.class), a -> scheduler.query()));
        d.register(QmpCommand.of("workflow-unschedule", NameArgs.class, null, a -> {
            scheduler.remove(a.name(), true);
            return null;
        }));
    }
}
