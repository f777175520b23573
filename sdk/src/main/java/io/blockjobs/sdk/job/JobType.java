package io.blockjobs.sdk.job;

import java.util.List;
import org.pf4j.ExtensionPoint;

/**
 * The first extension point for job plugins, kept so that plugins written for it still load;
 * new plugins implement {@link io.blockjobs.sdk.plugin.BlockjobsPlugin}, which can also
 * contribute drivers and plain commands. The platform reads its commands once, when the plugin
 * starts, and adds them to QMP; they disappear when the plugin is unloaded.
 */
public interface JobType extends ExtensionPoint {

    /** The commands this job type adds. */
    List<JobCommand<?>> commands();
}
