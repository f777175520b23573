package io.blockjobs.platform.workflow;

import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/**
 * A workflow run as {@code query-workflows} shows it.
 *
 * @param id       the run's id
 * @param script   the script as it was named in {@code workflow-run}
 * @param state    running, completed, failed or cancelled
 * @param started  when it started (ISO-8601)
 * @param finished when it ended
 * @param schedule the schedule that started it
 * @param jobs     ids of the jobs it started
 * @param log      the last lines it logged
 * @param result   what its function returned
 * @param error    why it failed or was cancelled
 */
public record WorkflowInfo(String id, String script, String state, String started, Optional<String> finished,
                           Optional<String> schedule, List<String> jobs, List<String> log,
                           Optional<JsonNode> result, Optional<WorkflowError> error) {
}
