package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonProperty;
import io.blockjobs.platform.Json;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import tools.jackson.databind.node.ObjectNode;

/** {@code query-version}, {@code query-commands}, {@code query-qmp-schema} and {@code quit}. */
public final class CoreCommands {
    /** The QEMU version blockjobs answers as: its QMP behaviour follows QEMU 7.2. */
    public static final VersionTriple QEMU_VERSION = new VersionTriple(7, 2, 0);

    private CoreCommands() {
    }

    /** QMP's {@code VersionTriple}. */
    public record VersionTriple(int major, int minor, int micro) {
    }

    /** QMP's {@code VersionInfo}. */
    public record VersionInfo(VersionTriple qemu, @JsonProperty("package") String pkg) {
    }

    /** QMP's {@code CommandInfo}. */
    public record CommandInfo(String name) {
    }

    /** The greeting every monitor sends first. */
    public static ObjectNode greeting(String version) {
        ObjectNode g = Json.object();
        ObjectNode qmp = g.putObject("QMP");
        qmp.set("version", Json.MAPPER.valueToTree(new VersionInfo(QEMU_VERSION, "blockjobs " + version)));
        qmp.putArray("capabilities").add("oob");
        return g;
    }

    /** The events {@code query-qmp-schema} lists: every typed event, with its payload. */
    private static Map<String, Class<?>> events() {
        Map<String, Class<?>> events = new LinkedHashMap<>();
        for (Class<? extends io.blockjobs.platform.event.QmpEvent> t : io.blockjobs.platform.event.QmpEvent.types()) {
            events.put(io.blockjobs.platform.event.QmpEvent.nameOf(t), t);
        }
        return events;
    }

    public static void register(QmpDispatcher d, String version, Runnable quit) {
        register(d, version, quit, null);
    }

    /** As above; {@code drivers} makes {@code query-qmp-schema} list the registered block drivers. */
    public static void register(QmpDispatcher d, String version, Runnable quit,
                                io.blockjobs.platform.graph.DriverRegistry drivers) {
        d.register(QmpCommand.of("query-version", Void.class, VersionInfo.class,
                a -> new VersionInfo(QEMU_VERSION, "blockjobs " + version)));
        d.register(QmpCommand.of("query-commands", Void.class, QmpTypes.listOf(CommandInfo.class), a -> {
            List<CommandInfo> list = new java.util.ArrayList<>();
            list.add(new CommandInfo("qmp_capabilities"));
            d.commands().forEach(c -> list.add(new CommandInfo(c.name())));
            return list;
        }));
        d.register(QmpCommand.of("query-qmp-schema", Void.class, QmpTypes.listOf(tools.jackson.databind.JsonNode.class), a -> {
            Map<String, List<io.blockjobs.sdk.driver.OptionSpec>> variants = new LinkedHashMap<>();
            if (drivers != null) {
                for (String name : drivers.names()) {
                    variants.put(name, drivers.get(name).options());
                }
            }
            return QmpSchema.of(d.commands(), events(), variants);
        }));
        d.register(QmpCommand.of("quit", Void.class, null, a -> {
            quit.run();
            return null;
        }));
    }
}
