package io.blockjobs.platform.nbd;

import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.graph.Options;
import io.blockjobs.platform.qmp.BlockDirtyBitmapOrStr;
import io.blockjobs.platform.qmp.CoreCommands;
import io.blockjobs.platform.qmp.QmpCommand;
import io.blockjobs.platform.qmp.QmpDispatcher;
import io.blockjobs.sdk.error.CommandException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/** nbd-server-start/-stop, block-export-add/-del, query-block-exports. */
public final class NbdCommands {
    private NbdCommands() {
    }

    /** {@code nbd-server-start}'s arguments; {@code addr} is QEMU's SocketAddressLegacy or SocketAddress. */
    public record ServerStartArgs(JsonNode addr, Optional<String> tlsCreds, Optional<String> tlsAuthz,
                                  Optional<Long> maxConnections) {
    }

    /**
     * {@code block-export-add}'s arguments (type nbd); {@code bitmaps} are QEMU's
     * {@code BlockDirtyBitmapOrStr} list, offered as {@code qemu:dirty-bitmap:NAME} contexts.
     */
    public record ExportAddArgs(String type, String id, String nodeName, Optional<String> name,
                                Optional<String> description, Optional<Boolean> writable,
                                Optional<Boolean> writethrough, Optional<String> iothread,
                                Optional<Boolean> fixedIothread, Optional<List<BlockDirtyBitmapOrStr>> bitmaps,
                                Optional<Boolean> allocationDepth) {
    }

    /** {@code block-export-del}'s arguments. */
    public record ExportDelArgs(String id, Optional<ExportRemoveMode> mode) {
    }

    /** QMP's {@code BlockExportRemoveMode}. */
    public enum ExportRemoveMode {
        SAFE, HARD
    }

    /** QMP's {@code BlockExportInfo}. */
    public record ExportInfo(String type, String id, String nodeName, boolean shuttingDown) {
    }

    public static void register(QmpDispatcher d, NbdServer server) {
        d.register(QmpCommand.of("nbd-server-start", ServerStartArgs.class, null, a -> {
            if (a.tlsCreds().isPresent() || a.tlsAuthz().isPresent()) {
                throw new CommandException("TLS is not supported by this NBD server");
            }
            long max = a.maxConnections().orElse(0L);
            if (max < 0 || max > 0xffffffffL) {
                throw new CommandException("Parameter 'max-connections' expects uint32_t");
            }
            server.start(address(a.addr()), (int) Math.min(max, Integer.MAX_VALUE));
            return null;
        }));
        d.register(QmpCommand.of("nbd-server-stop", Void.class, null, a -> {
            server.stop();
            return null;
        }));
        d.register(QmpCommand.of("block-export-add", ExportAddArgs.class, null, a -> {
            if (!a.type().equals("nbd")) {
                throw new CommandException("Parameter 'type' does not accept value '" + a.type() + "'");
            }
            List<Bitmaps.Source> bitmaps = a.bitmaps().orElse(List.of()).stream()
                    .map(b -> new Bitmaps.Source(b.node(), b.name())).toList();
            // QEMU looks the iothread up after the id and the node, before the NBD server; blockjobs needs none.
            if (a.iothread().isPresent() && server.exports().stream().noneMatch(e -> e.id().equals(a.id()))
                    && server.graph().find(a.nodeName()) != null) {
                io.blockjobs.platform.qmp.EventLoopObject.iothread(server.graph(), a.iothread().get(), "iothread \"%s\" not found");
            }
            server.addExport(a.id(), a.nodeName(), a.name().orElse(null), a.description().orElse(null),
                    a.writable().orElse(false), bitmaps, a.allocationDepth().orElse(false));
            return null;
        }));
        d.register(QmpCommand.of("block-export-del", ExportDelArgs.class, null, a -> {
            server.removeExport(a.id(), a.mode().orElse(ExportRemoveMode.SAFE) == ExportRemoveMode.HARD);
            return null;
        }));
        d.register(QmpCommand.of("query-block-exports", Void.class, io.blockjobs.platform.qmp.QmpTypes.listOf(ExportInfo.class), a ->
                server.exports().stream()
                        .map(e -> new ExportInfo("nbd", e.id(), e.backend().child().name(), false)).toList()));
    }

    /**
     * A SocketAddress in QEMU's flat form ({@code type, path}) or legacy form ({@code type, data});
     * of an inet address, {@code numeric}, {@code to}, {@code ipv4} and {@code ipv6} are honoured
     * ({@link NbdListen.Inet}), {@code keep-alive} and {@code mptcp} ignored.
     */
    public static NbdListen address(JsonNode addr) {
        Options o = new Options(addr, "addr.");
        String type = o.string("type");
        Options fields = o.has("data") ? o.object("data") : o;
        NbdListen result = switch (type) {
            case "unix" -> {
                String path = fields.string("path");
                fields.ignore("abstract", "tight");
                yield new NbdListen.Unix(Path.of(path));
            }
            case "inet" -> {
                String host = fields.string("host");
                String port = fields.optString("port");
                if (port == null) {
                    throw fields.missing("port");
                }
                Long to = fields.optInteger("to");
                if (to != null && (to < 0 || to > 65535)) {
                    throw new CommandException("Parameter '" + fields.prefix() + "to' expects uint16_t");
                }
                Boolean ipv4 = optBool(fields, "ipv4");
                Boolean ipv6 = optBool(fields, "ipv6");
                Boolean numeric = optBool(fields, "numeric");
                fields.ignore("keep-alive", "mptcp");
                yield new NbdListen.Inet(host, port, to == null ? null : to.intValue(), ipv4, ipv6,
                        Boolean.TRUE.equals(numeric));
            }
            default -> throw new CommandException("Parameter 'addr.type' does not accept value '" + type + "'");
        };
        fields.checkAllUsed();
        o.checkAllUsed();
        return result;
    }

    /** A boolean member that may be absent (QEMU's {@code has_X}). */
    private static Boolean optBool(Options o, String key) {
        return o.has(key) ? o.bool(key, false) : null;
    }
}
