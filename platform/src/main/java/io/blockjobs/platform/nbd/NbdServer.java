package io.blockjobs.platform.nbd;

import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.Json;
import io.blockjobs.sdk.error.CommandException;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.util.concurrent.GlobalEventExecutor;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/** The NBD server: one listener, any number of exports and clients. */
public final class NbdServer implements AutoCloseable {
    private final EventLoopGroup group;
    private final BlockGraph graph;
    private final EventBus events;
    private final Bitmaps bitmaps;
    private final Map<String, NbdExport> byId = new ConcurrentHashMap<>();
    private final Map<String, NbdExport> byName = new ConcurrentHashMap<>();
    private final ChannelGroup clients = new DefaultChannelGroup(GlobalEventExecutor.INSTANCE);
    private final ExecutorService io = Executors.newVirtualThreadPerTaskExecutor();
    private Channel listener;
    private Path socketPath;

    public NbdServer(EventLoopGroup group, BlockGraph graph, EventBus events, Bitmaps bitmaps) {
        this.group = group;
        this.graph = graph;
        this.events = events;
        this.bitmaps = bitmaps;
    }

    public synchronized boolean running() {
        return listener != null;
    }

    /** Starts listening on a unix socket path or a TCP address. */
    public synchronized void start(SocketAddress address, int maxConnections) throws IOException, InterruptedException {
        if (listener != null) {
            throw new CommandException("NBD server already running");
        }
        ChannelInitializer<Channel> init = new ChannelInitializer<>() {
            @Override
            protected void initChannel(Channel ch) {
                if (maxConnections > 0 && clients.size() >= maxConnections) {
                    ch.close();
                    return;
                }
                clients.add(ch);
                NbdHandshakeHandler.addTo(ch.pipeline(), NbdServer.this::lookup, NbdServer.this::exports, io);
            }
        };
        ServerBootstrap b = new ServerBootstrap().group(group).childHandler(init);
        if (address instanceof UnixDomainSocketAddress unix) {
            Files.deleteIfExists(unix.getPath());
            b.channel(NioServerDomainSocketChannel.class);
            socketPath = unix.getPath();
        } else {
            b.channel(NioServerSocketChannel.class);
        }
        try {
            listener = b.bind(address).sync().channel();
        } catch (Exception e) {
            socketPath = null;
            throw new CommandException("Failed to start the NBD server on " + address + ": " + e.getMessage());
        }
    }

    /** The address actually bound (for TCP port 0). */
    public synchronized SocketAddress address() {
        return listener == null ? null : listener.localAddress();
    }

    /** QMP {@code nbd-server-stop}: closes the listener, every client and every export. */
    public synchronized void stop() {
        if (listener == null) {
            throw new CommandException("NBD server not running");
        }
        for (NbdExport e : new ArrayList<>(byId.values())) {
            removeExport(e.id(), true);
        }
        listener.close().syncUninterruptibly();
        listener = null;
        clients.close().syncUninterruptibly();
        if (socketPath != null) {
            try {
                Files.deleteIfExists(socketPath);
            } catch (IOException e) {
                // best effort
            }
            socketPath = null;
        }
    }

    /** QMP {@code block-export-add} for type nbd, without bitmaps or allocation depth. */
    public NbdExport addExport(String id, String nodeName, String name, String description, boolean writable) {
        return addExport(id, nodeName, name, description, writable, List.of(), false);
    }

    /**
     * QMP {@code block-export-add} for type nbd. Each of {@code exportBitmaps} is found as QEMU's
     * {@code nbd_export_create} finds it, checked with its messages, and busy until the export
     * goes ({@link #removeExport}, {@link #stop}, {@link #close}).
     *
     * @param exportBitmaps   bitmaps to offer as {@code qemu:dirty-bitmap:NAME}: by name alone, on
     *                        the exported node or the first layer below it that has one of that
     *                        name; or by node and name
     * @param allocationDepth whether to offer {@code qemu:allocation-depth}
     */
    public synchronized NbdExport addExport(String id, String nodeName, String name, String description, boolean writable,
                                            List<Bitmaps.Source> exportBitmaps, boolean allocationDepth) {
        if (listener == null) {
            throw new CommandException("NBD server not running");
        }
        if (byId.containsKey(id)) {
            throw new CommandException("Block export id '" + id + "' is already in use");
        }
        String exportName = name != null ? name : nodeName;
        if (exportName.length() > 4096) {
            throw new CommandException("export name '" + exportName.substring(0, 20) + "...' too long");
        }
        if (description != null && description.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > 4096) {
            throw new CommandException("description '" + description + "' too long");
        }
        if (byName.containsKey(exportName)) {
            throw new CommandException("NBD server already has export named '" + exportName + "'");
        }
        var node = graph.require(nodeName);
        if (writable && node.isReadOnly()) {
            throw new CommandException(node.readOnlyByFallback() ? node.writeRefusal() : "Cannot export read-only node as writable");
        }
        // QEMU's exports take consistent read (and write) and share everything but resize.
        int perm = Perm.CONSISTENT_READ.bit() | (writable ? Perm.WRITE.bit() : 0);
        Edge backend = graph.attachRoot(BlockGraph.RootUser.export(id), "root", node, perm,
                Perm.ALL & ~Perm.RESIZE.bit(), true);
        List<Bitmap> exported;
        try {
            exported = findBitmaps(node, exportBitmaps, writable);
        } catch (RuntimeException e) {
            graph.detachRoot(backend);
            throw e;
        }
        exported.forEach(b -> b.setBusy(true)); // after every check: nothing to undo on failure
        NbdExport export = new NbdExport(id, exportName, description, backend, writable, exported, allocationDepth);
        byId.put(id, export);
        byName.put(exportName, export);
        return export;
    }

    /**
     * QMP {@code block-export-del}. In {@code safe} mode an export with clients stays; in
     * {@code hard} mode its clients are disconnected.
     */
    public synchronized void removeExport(String id, boolean hard) {
        NbdExport export = byId.get(id);
        if (export == null) {
            throw new CommandException("Export '" + id + "' is not found");
        }
        List<Channel> users = new ArrayList<>();
        for (Channel ch : clients) {
            NbdTransmissionHandler c = ch.pipeline().get(NbdTransmissionHandler.class);
            if (c != null && c.export() == export) {
                users.add(ch);
            }
        }
        if (!users.isEmpty() && !hard) {
            throw new CommandException("export '" + id + "' still in use; use mode='hard' to force client disconnect");
        }
        users.forEach(ch -> ch.close().syncUninterruptibly());
        byId.remove(id);
        byName.remove(export.name());
        graph.detachRoot(export.backend());
        export.bitmaps().forEach(b -> b.setBusy(false)); // as QEMU's nbd_export_delete, before the event
        events.publish(new io.blockjobs.platform.event.QmpEvent.BlockExportDeleted(id));
    }

    /**
     * The bitmaps of an export, as QEMU's {@code nbd_export_create}: a name alone is looked for on
     * the node, then on each layer below ({@code bdrv_filter_or_cow_bs}); an enabled bitmap of a
     * writable node so found is refused for a read-only export. A node and name is QMP's lookup.
     * Every bitmap must not be busy or inconsistent ({@code BDRV_BITMAP_ALLOW_RO}).
     */
    private List<Bitmap> findBitmaps(GraphNode node, List<Bitmaps.Source> sources, boolean writable) {
        List<Bitmap> found = new ArrayList<>();
        for (Bitmaps.Source s : sources) {
            Bitmap bitmap = null;
            if (s.node().isEmpty()) {
                GraphNode holder = node;
                while (holder != null && (bitmap = named(holder, s.name())) == null) {
                    holder = holder.filterOrCow();
                }
                if (bitmap == null) {
                    throw new CommandException("Bitmap '" + s.name() + "' is not found");
                }
                if (!writable && !holder.isReadOnly() && bitmap.enabled()) {
                    throw new CommandException("Enabled bitmap '" + s.name() + "' incompatible with readonly export");
                }
            } else {
                bitmap = bitmaps.lookup(s.node().get(), s.name());
            }
            bitmap.check(Bitmap.Check.ALLOW_RO);
            found.add(bitmap);
        }
        return found;
    }

    /** The node's bitmap named {@code name}, or null (QEMU's {@code bdrv_find_dirty_bitmap}). */
    private Bitmap named(GraphNode node, String name) {
        for (Bitmap b : bitmaps.list(node)) {
            if (b.name().filter(name::equals).isPresent()) {
                return b;
            }
        }
        return null;
    }

    NbdExport lookup(String name) {
        return byName.get(name);
    }

    public List<NbdExport> exports() {
        return new ArrayList<>(byId.values());
    }

    @Override
    public synchronized void close() {
        if (listener != null) {
            stop();
        }
        io.shutdownNow();
    }

    /** A TCP address from QMP's host and port strings. */
    public static SocketAddress inet(String host, String port) {
        try {
            return new InetSocketAddress(host, Integer.parseInt(port));
        } catch (NumberFormatException e) {
            throw new CommandException("Invalid port '" + port + "'");
        }
    }
}
