package io.blockjobs.platform.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

/**
 * {@code blockjobs restore}: {@code restore.js} with named options, followed as {@code run}
 * follows a workflow: a disk as it was at one backup, written into a new image.
 */
@Command(name = "restore", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Restores a disk as it was at one of its backups (blockjobs backups lists them) into a new image,",
                "by running the shipped restore.js in the daemon and following it as `run` does.",
                "Exit status 0 if it completed, 1 if it failed."})
final class RestoreCommand implements Callable<Integer> {
    @ParentCommand
    BlockjobsClient client;

    @Option(names = "--disk", required = true, paramLabel = "NODE", description = "the disk whose backup to restore")
    String disk;

    @Option(names = "--backup", required = true, paramLabel = "ID", description = "the backup's id")
    String backup;

    @Option(names = "--target", required = true, paramLabel = "PATH", description = "the new image (never an existing file)")
    Path target;

    @Option(names = "--format", paramLabel = "FORMAT", description = "qcow2 (default) or raw")
    String format;

    @Option(names = "--export", paramLabel = "NAME", description = "serve the restored disk over NBD under this name")
    String export;

    @Option(names = "--live", description = "with --export: serve it at once, while its data streams in")
    boolean live;

    @Option(names = "--speed", paramLabel = "BYTES", description = "bytes per second for the copy")
    Long speed;

    @Override
    public Integer call() throws Exception {
        RunCommand run = new RunCommand();
        run.client = client;
        run.script = "restore.js";
        List<String> args = new ArrayList<>(List.of("disk=" + disk, "backup=" + backup,
                "target=" + target.toAbsolutePath().normalize()));
        if (format != null) {
            args.add("format=" + format);
        }
        if (export != null) {
            args.add("export=" + export);
        }
        if (live) {
            args.add("live=true");
        }
        if (speed != null) {
            args.add("speed=" + speed);
        }
        run.arg = args;
        return run.call();
    }
}
