package io.blockjobs.platform.nbd;

import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.qmp.QmpCommand;
import io.blockjobs.platform.qmp.QmpDispatcher;
import io.blockjobs.sdk.error.CommandException;
import java.util.List;
import java.util.Optional;

/**
 * {@code nbd-server-add} and {@code nbd-server-remove}, the export commands older libvirt uses,
 * on top of {@code block-export-add}/{@code -del} as QEMU 7.2's {@code blockdev-nbd.c} maps them.
 */
public final class NbdLegacyCommands {
    private NbdLegacyCommands() {
    }

    /** QMP's {@code NbdServerAddOptions}. */
    public record ServerAddArgs(String device, Optional<String> name, Optional<String> description,
                                Optional<Boolean> writable, Optional<String> bitmap) {
    }

    /** {@code nbd-server-remove}'s arguments. */
    public record ServerRemoveArgs(String name, Optional<NbdCommands.ExportRemoveMode> mode) {
    }

    public static void register(QmpDispatcher d, NbdServer server, BlockGraph graph) {
        d.register(QmpCommand.of("nbd-server-add", ServerAddArgs.class, null, a -> {
            GraphNode node = graph.find(a.device()); // bdrv_lookup_bs(device, device)
            if (node == null) {
                throw new CommandException("Cannot find device='" + a.device() + "' nor node-name='" + a.device() + "'");
            }
            String name = a.name().orElse(a.device()); // the export's id and name
            // QEMU downgrades a read-only node to a read-only export here (block-export-add refuses).
            boolean writable = a.writable().orElse(false) && !node.isReadOnly();
            List<Bitmaps.Source> bitmaps = a.bitmap().map(b -> List.of(new Bitmaps.Source(Optional.empty(), b)))
                    .orElse(List.of());
            server.addExport(name, node.name(), name, a.description().orElse(null), writable, bitmaps, false);
            return null;
        }));
        d.register(QmpCommand.of("nbd-server-remove", ServerRemoveArgs.class, null, a -> {
            server.removeExport(a.name(), a.mode().orElse(NbdCommands.ExportRemoveMode.SAFE)
                    == NbdCommands.ExportRemoveMode.HARD);
            return null;
        }));
    }
}
