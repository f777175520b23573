/** The GraalJS workflow engine: sandboxed runs of JavaScript modules, the {@code bj} API, cron schedules. */
package io.blockjobs.platform.workflow;
