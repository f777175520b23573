package io.blockjobs.platform.qmp;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.image.BackupStore;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

/**
 * The backup store's commands ({@code x-backup-store-*}, {@code x-query-backup-store}): what a
 * backup policy needs of the file system, and no more. Names are relative to the store's folder;
 * the store refuses anything that would reach outside it or remove an image still in use.
 */
public final class BackupStoreCommands {
    private final BlockGraph graph;
    private volatile BackupStore store;

    private BackupStoreCommands(BlockGraph graph) {
        this.graph = graph;
    }

    /** {@code x-backup-store-set}'s arguments. */
    public record SetArgs(String dir) {
    }

    /** {@code x-query-backup-store}'s answer. */
    public record StoreInfo(String dir) {
    }

    /** {@code x-backup-store-list}'s answer. */
    public record Listing(String dir, List<BackupStore.Entry> files) {
    }

    /** The arguments of the commands that name one file. */
    public record NameArgs(String name) {
    }

    /** {@code x-backup-store-create}'s arguments. */
    public record CreateArgs(String name, long size, Optional<String> backing, Optional<Integer> clusterSize) {
    }

    /** {@code x-backup-store-create}'s answer: the image's absolute file name, for blockdev-add. */
    public record Created(String name, String filename) {
    }

    /** {@code x-backup-store-write}'s arguments. */
    public record WriteArgs(String name, String data) {
    }

    /** {@code x-backup-store-read}'s answer. */
    public record Text(String data) {
    }

    /** Registers the commands; the store has no folder until {@link #open} or {@code x-backup-store-set}. */
    public static BackupStoreCommands register(QmpDispatcher d, BlockGraph graph) {
        BackupStoreCommands c = new BackupStoreCommands(graph);
        d.register(QmpCommand.of("x-backup-store-set", SetArgs.class, null, a -> {
            c.open(Path.of(a.dir()));
            return null;
        }));
        d.register(QmpCommand.of("x-query-backup-store", Void.class, StoreInfo.class,
                a -> new StoreInfo(c.store().root().toString())));
        d.register(QmpCommand.of("x-backup-store-list", Void.class, Listing.class, a -> {
            BackupStore s = c.store();
            return new Listing(s.root().toString(), io(() -> s.list()));
        }));
        d.register(QmpCommand.of("x-backup-store-create", CreateArgs.class, Created.class, a -> {
            if (a.size() < 0) {
                throw new CommandException("Parameter 'size' expects a non-negative size");
            }
            BackupStore s = c.store();
            Path p = io(() -> s.create(a.name(), a.size(), a.backing(), a.clusterSize()));
            return new Created(s.nameOf(p), p.toString());
        }));
        d.register(QmpCommand.of("x-backup-store-seal", NameArgs.class, BackupStore.Digest.class,
                a -> io(() -> c.store().seal(a.name()))));
        d.register(QmpCommand.of("x-backup-store-digest", NameArgs.class, BackupStore.Digest.class,
                a -> io(() -> c.store().digest(a.name()))));
        d.register(QmpCommand.of("x-backup-store-delete", NameArgs.class, null, a -> {
            io(() -> {
                c.store().delete(a.name(), c::openBy);
                return null;
            });
            return null;
        }));
        d.register(QmpCommand.of("x-backup-store-read", NameArgs.class, Text.class,
                a -> new Text(io(() -> c.store().read(a.name())))));
        d.register(QmpCommand.of("x-backup-store-write", WriteArgs.class, null, a -> {
            io(() -> {
                c.store().write(a.name(), a.data());
                return null;
            });
            return null;
        }));
        return c;
    }

    /** Names (and creates, if missing) the store's folder. */
    public void open(Path dir) {
        try {
            store = new BackupStore(dir);
        } catch (IOException e) {
            throw new CommandException("Cannot use '" + dir + "' as the backup store: " + reason(e));
        }
    }

    private BackupStore store() {
        BackupStore s = store;
        if (s == null) {
            throw new CommandException("No backup store is configured: start blockjobd with --backup-dir DIR, "
                    + "or name one with x-backup-store-set");
        }
        return s;
    }

    /** The node that has a file open, or null. */
    private String openBy(Path file) {
        for (GraphNode n : graph.all()) {
            String name = n.filename();
            if (name == null || name.isEmpty()) {
                continue;
            }
            try {
                if (java.nio.file.Files.isSameFile(Path.of(name), file)) {
                    return n.name();
                }
            } catch (IOException | RuntimeException e) {
                // a node whose file is gone or not a path (nbd://...) cannot be this file
            }
        }
        return null;
    }

    private interface IoCall<T> {
        T call() throws IOException;
    }

    private static <T> T io(IoCall<T> call) {
        try {
            return call.call();
        } catch (IOException e) {
            throw new CommandException(reason(e));
        }
    }

    private static String reason(IOException e) {
        if (e instanceof java.nio.file.NoSuchFileException) {
            return e.getMessage() + ": No such file or directory";
        }
        if (e instanceof java.nio.file.AccessDeniedException) {
            return e.getMessage() + ": Permission denied";
        }
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }
}
