package io.blockjobs.sdk.job;

import java.util.List;
import org.pf4j.ExtensionPoint;

/**
 * The extension point a job plugin implements (annotate the class with PF4J's
 * {@code @Extension}). The platform reads its commands once, when the plugin starts, and adds
 * them to QMP; they disappear when the plugin is unloaded.
 */
public interface JobType extends ExtensionPoint {

    /** The commands this job type adds. */
    List<JobCommand<?>> commands();
}
