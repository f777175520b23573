package io.blockjobs.platform.nbd;

import static io.blockjobs.sdk.driver.OptionSpec.optional;
import static io.blockjobs.sdk.driver.OptionSpec.required;

import io.blockjobs.platform.graph.Options;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.driver.OptionSpec;
import io.blockjobs.sdk.error.CommandException;
import io.netty.channel.EventLoopGroup;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.TimeUnit;
import tools.jackson.databind.JsonNode;

/**
 * QEMU's {@code nbd} block driver ({@code BlockdevOptionsNbd}, {@code block/nbd.c}): a node that is
 * an export of an NBD server, reached over a unix socket or TCP. Options, with QEMU's messages:
 * {@code server} ({@code {type: unix, path}} or {@code {type: inet, host, port}}), {@code export},
 * {@code x-dirty-bitmap} (the meta context block status then reports, as QEMU's), {@code
 * reconnect-delay}, {@code open-timeout}; {@code tls-creds} is refused (no TLS).
 *
 * <p>It lives in package {@code nbd} beside the codec it shares with the server; the daemon
 * registers it in the graph's driver registry at start, with the event loops it runs on.
 */
public final class NbdClientDriver implements BlockDriver {
    private final EventLoopGroup group;

    /** @param group the event loops connections run on (never blocked: callers wait on their own threads) */
    public NbdClientDriver(EventLoopGroup group) {
        this.group = group;
    }

    @Override
    public String name() {
        return "nbd";
    }

    @Override
    public List<OptionSpec> options() {
        return List.of(required("server", "any"), optional("export", "str"), optional("tls-creds", "str"),
                optional("tls-hostname", "str"), optional("x-dirty-bitmap", "str"), optional("reconnect-delay", "int"),
                optional("open-timeout", "int"));
    }

    @Override
    public DriverNode open(DriverContext ctx) throws IOException {
        DriverOptions o = ctx.options();
        NbdAddress address = address(o.object("server"));
        String export = o.optString("export");
        if (export != null && export.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > Nbd.MAX_STRING) {
            throw new CommandException("export name too long to send to server");
        }
        String tls = o.optString("tls-creds");
        o.ignore("tls-hostname"); // read by QEMU only with tls-creds
        String bitmap = o.optString("x-dirty-bitmap");
        if (bitmap != null && bitmap.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > Nbd.MAX_STRING) {
            throw new CommandException("x-dirty-bitmap query too long to send to server");
        }
        long reconnectDelay = uint32(o, "reconnect-delay");
        long openTimeout = uint32(o, "open-timeout");
        o.checkAllUsed(); // QEMU refuses unknown members before it connects
        if (tls != null) {
            throw new CommandException("NBD over TLS is not supported: cannot use tls-creds '" + tls + "'");
        }
        String context = bitmap != null ? bitmap : Nbd.BASE_ALLOCATION;
        NbdClientNode.Target target = new NbdClientNode.Target(group, address, export, context);
        NbdClientNode[] node = new NbdClientNode[1];
        NbdConnection first = connect(target, conn -> {
            if (node[0] != null) {
                node[0].lost(conn);
            }
        }, openTimeout);
        try {
            NbdExportInfo info = first.info;
            if (bitmap != null && !info.hasContext()) {
                // QEMU's "requested x-dirty-bitmap %s not found" is lost on the way: its open fails with EINVAL
                throw new CommandException("Could not open image: Invalid argument");
            }
            boolean readOnly = ctx.readOnly();
            if (info.has(Nbd.TFLAG_READ_ONLY) && !readOnly) {
                if (!ctx.flags().autoReadOnly()) {
                    throw new CommandException("Could not open image: Permission denied"); // QEMU: EACCES, message lost
                }
                readOnly = true;
            }
            node[0] = new NbdClientNode(target, filename(address, export), first, readOnly, reconnectDelay);
            if (!first.channel.isActive()) {
                node[0].lost(first); // gone before the node could hear of it
            }
            return node[0];
        } catch (RuntimeException e) {
            first.channel.close();
            throw e;
        }
    }

    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(NbdClientDriver.class);

    /** One attempt, or (with {@code open-timeout}) attempts until one succeeds or the time is up. */
    private static NbdConnection connect(NbdClientNode.Target target, java.util.function.Consumer<NbdConnection> onLost,
                                         long openTimeout) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(openTimeout);
        long backoff = TimeUnit.SECONDS.toNanos(1);
        while (true) {
            try {
                return target.open(onLost);
            } catch (IOException e) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new CommandException(e.getMessage());
                }
                LOG.info("{}: {}; trying again for up to {} s (open-timeout)", target.address().describe(), e.getMessage(),
                        TimeUnit.NANOSECONDS.toSeconds(left));
                try {
                    TimeUnit.NANOSECONDS.sleep(Math.min(backoff, left)); // QEMU's retry back-off
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new CommandException(e.getMessage());
                }
                backoff = Math.min(backoff * 2, TimeUnit.SECONDS.toNanos(16));
            }
        }
    }

    /** QEMU's {@code SocketAddress} (the flat form {@code blockdev-add} takes). */
    private static NbdAddress address(DriverOptions s) {
        String type = s.string("type");
        NbdAddress a = switch (type) {
            case "unix" -> {
                String path = s.string("path");
                if (s.bool("abstract", false)) {
                    throw new CommandException("abstract unix sockets are not supported");
                }
                s.ignore("tight");
                yield new NbdAddress.Unix(path);
            }
            case "inet" -> {
                String host = s.string("host");
                String port = s.string("port");
                s.ignore("numeric", "to", "ipv4", "ipv6", "keep-alive", "mptcp");
                yield new NbdAddress.Inet(host, port);
            }
            case "fd", "vsock" -> throw new CommandException("NBD server addresses of type '" + type + "' are not supported");
            default -> throw new CommandException("Parameter 'type' does not accept value '" + type + "'");
        };
        s.checkAllUsed();
        return a;
    }

    /** An optional {@code uint32} member, with QEMU's messages; 0 when absent. */
    private static long uint32(DriverOptions o, String key) {
        JsonNode raw = o instanceof Options opts ? opts.raw(key) : null;
        if (raw != null && !raw.isNull() && !raw.isIntegralNumber() && !raw.isString()) {
            throw new CommandException("Parameter '" + key + "' expects uint64");
        }
        Long v;
        try {
            v = o.optInteger(key);
        } catch (CommandException e) {
            throw new CommandException("Parameter '" + key + "' expects uint64");
        }
        if (v == null) {
            return 0;
        }
        if (v < 0 || v > 0xffffffffL) {
            throw new CommandException("Parameter '" + key + "' expects uint32_t");
        }
        return v;
    }

    /**
     * Connects to an export on a unix socket as a writable node of its own, outside any graph:
     * a plain NBD client for tools (the demo's client writing through an export).
     */
    public static io.blockjobs.sdk.block.BlockNode connectUnix(EventLoopGroup group, String socket, String export)
            throws IOException {
        NbdAddress address = new NbdAddress.Unix(socket);
        NbdClientNode.Target target = new NbdClientNode.Target(group, address, export, Nbd.BASE_ALLOCATION);
        NbdClientNode[] node = new NbdClientNode[1];
        NbdConnection first = target.open(conn -> {
            if (node[0] != null) {
                node[0].lost(conn);
            }
        });
        node[0] = new NbdClientNode(target, filename(address, export), first, false, 0);
        return node[0];
    }

    /** QEMU's {@code nbd_refresh_filename}. */
    static String filename(NbdAddress address, String export) {
        return switch (address) {
            case NbdAddress.Unix u -> export != null ? "nbd+unix:///" + export + "?socket=" + u.path()
                    : "nbd+unix://?socket=" + u.path();
            case NbdAddress.Inet i -> export != null ? "nbd://" + i.host() + ":" + i.port() + "/" + export
                    : "nbd://" + i.host() + ":" + i.port();
        };
    }
}
