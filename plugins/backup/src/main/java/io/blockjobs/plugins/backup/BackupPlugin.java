package io.blockjobs.plugins.backup;

import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.plugin.BlockjobsPlugin;
import java.util.List;
import org.pf4j.Extension;

/**
 * The backup plugin's contributions: the {@code blockdev-backup} and {@code drive-backup} job commands and the
 * {@code copy-before-write} and {@code snapshot-access} block drivers.
 */
@Extension
public final class BackupPlugin implements BlockjobsPlugin {

    @Override
    public List<JobCommand<?>> jobCommands() {
        return List.of(new JobCommand<>("blockdev-backup", "backup", BackupJob.Args.class, BackupJob::prepare),
                new JobCommand<>("drive-backup", "backup", BackupJob.DriveArgs.class, BackupJob::prepareDrive));
    }

    @Override
    public List<BlockDriver> blockDrivers() {
        return List.of(new CopyBeforeWrite(), new SnapshotAccess());
    }
}
