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
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ServerChannelRecvByteBufAllocator;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.util.concurrent.GlobalEventExecutor;
import java.io.IOException;
import java.net.InetAddress;
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
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The NBD server: listeners (one per address), any number of exports and clients. A client's
 * handshake must finish within {@value #HANDSHAKE_MAX_SECONDS} seconds (QEMU's default
 * {@code handshake-max-seconds}); its unsent replies stop it from sending more requests above
 * {@value #HIGH_WATER} bytes until they drain below {@value #LOW_WATER} (see
 * {@link NbdTransmissionHandler}).
 */
public final class NbdServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(NbdServer.class);
    /** QEMU's {@code NBD_DEFAULT_HANDSHAKE_MAX_SECS}. */
    static final int HANDSHAKE_MAX_SECONDS = 10;
    /** Unsent reply bytes above which a client's requests wait. */
    static final int HIGH_WATER = 32 << 20;
    /** ... and below which they go on. */
    static final int LOW_WATER = 8 << 20;
    private final EventLoopGroup group;
    private final BlockGraph graph;
    private final EventBus events;
    private final Bitmaps bitmaps;
    private final Map<String, NbdExport> byId = new ConcurrentHashMap<>();
    private final Map<String, NbdExport> byName = new ConcurrentHashMap<>();
    private final ChannelGroup clients = new DefaultChannelGroup(GlobalEventExecutor.INSTANCE);
    private final ExecutorService io = Executors.newVirtualThreadPerTaskExecutor();
    private final List<Channel> listeners = new ArrayList<>();
    private Path socketPath;

    public NbdServer(EventLoopGroup group, BlockGraph graph, EventBus events, Bitmaps bitmaps) {
        this.group = group;
        this.graph = graph;
        this.events = events;
        this.bitmaps = bitmaps;
    }

    public synchronized boolean running() {
        return !listeners.isEmpty();
    }

    /** Starts listening on a unix socket path or a TCP address, with no limit on connections. */
    public void start(SocketAddress address) throws IOException, InterruptedException {
        start(address instanceof UnixDomainSocketAddress u ? new NbdListen.Unix(u.getPath())
                : new NbdListen.Inet(((InetSocketAddress) address).getHostString(),
                        Integer.toString(((InetSocketAddress) address).getPort()), null, null, null, false), 0);
    }

    /**
     * QMP {@code nbd-server-start} and {@code --nbd-server}: listens on {@code listen}, each
     * address it resolves to (as QEMU's {@code qio_net_listener_open_sync}). With
     * {@code maxConnections} above 0, at that many clients the server accepts no more until one
     * goes (they wait in the listen backlog), as QEMU's {@code nbd_update_server_watch}; at 1 the
     * exports do not offer {@code NBD_FLAG_CAN_MULTI_CONN}.
     */
    public synchronized void start(NbdListen listen, int maxConnections) throws IOException, InterruptedException {
        if (!listeners.isEmpty()) {
            throw new CommandException("NBD server already running");
        }
        if (maxConnections < 0) {
            throw new CommandException("max-connections must be 0 or more");
        }
        boolean multiConn = maxConnections != 1;
        long timeout = HANDSHAKE_MAX_SECONDS * 1000L;
        ChannelInitializer<Channel> init = new ChannelInitializer<>() {
            @Override
            protected void initChannel(Channel ch) {
                clients.add(ch);
                NbdHandshakeHandler.addTo(ch.pipeline(), NbdServer.this::lookup, NbdServer.this::exports, io, multiConn,
                        timeout);
            }
        };
        ServerBootstrap b = new ServerBootstrap().group(group).childHandler(init)
                .handler(new ConnectionCounter(maxConnections))
                // One accept at a time, so that the counter stops accepting at the limit exactly.
                .option(ChannelOption.RCVBUF_ALLOCATOR, new ServerChannelRecvByteBufAllocator().maxMessagesPerRead(1))
                .childOption(ChannelOption.WRITE_BUFFER_WATER_MARK, new WriteBufferWaterMark(LOW_WATER, HIGH_WATER));
        List<Channel> bound = new ArrayList<>();
        try {
            switch (listen) {
                case NbdListen.Unix u -> {
                    Files.deleteIfExists(u.path());
                    b.channel(NioServerDomainSocketChannel.class);
                    bound.add(bind(b, UnixDomainSocketAddress.of(u.path()), u.path().toString()));
                    socketPath = u.path();
                }
                case NbdListen.Inet i -> {
                    b.channel(NioServerSocketChannel.class);
                    bound.addAll(bindInet(b, i));
                }
            }
        } catch (IOException | InterruptedException | RuntimeException e) {
            bound.forEach(ch -> ch.close().syncUninterruptibly());
            socketPath = null;
            throw e;
        }
        listeners.addAll(bound);
        for (Channel ch : bound) { // as the QMP monitor's warning, with the host the operator gave
            if (ch.localAddress() instanceof InetSocketAddress a && !a.getAddress().isLoopbackAddress()
                    && listen instanceof NbdListen.Inet i) {
                LOG.warn("NBD listens on {}, which is not a loopback address",
                        i.host().isEmpty() ? a.getAddress().getHostAddress() : i.host());
            }
        }
    }

    private static Channel bind(ServerBootstrap b, SocketAddress address, String name) throws InterruptedException {
        try {
            return b.bind(address).sync().channel();
        } catch (InterruptedException e) {
            throw e;
        } catch (Exception e) {
            throw new CommandException("Failed to start the NBD server on " + name + ": " + e.getMessage());
        }
    }

    /**
     * Binds every address {@code i} resolves to, each to the first free port from {@code port}
     * to {@code to}, as QEMU's {@code inet_listen_saddr}: one that is in use is skipped, any
     * other failure fails the start. A wildcard IPv6 address takes IPv4 clients too unless
     * {@code ipv4} is off (QEMU's {@code IPV6_V6ONLY}; here IPv4 clients are then disconnected
     * at once, since the JDK cannot set that option).
     */
    private List<Channel> bindInet(ServerBootstrap b, NbdListen.Inet i) throws InterruptedException {
        List<InetAddress> addresses = i.resolve();
        int first = i.portNumber();
        int last = i.to() == null ? first : i.to();
        if (last < first) {
            throw new CommandException("Failed to create a socket: the port range " + first + "-" + last + " is empty");
        }
        List<Channel> bound = new ArrayList<>();
        for (InetAddress a : addresses) {
            Channel ch = null;
            String inUse = null;
            for (int port = first; port <= last && ch == null; port++) {
                ChannelFuture f = b.clone().bind(new InetSocketAddress(a, port)).await();
                if (f.isSuccess()) {
                    ch = f.channel();
                } else if (f.cause() instanceof java.net.BindException e && e.getMessage() != null
                        && e.getMessage().contains("in use")) {
                    inUse = e.getMessage();
                } else {
                    bound.forEach(c -> c.close().syncUninterruptibly());
                    throw new CommandException("Failed to bind socket: " + f.cause().getMessage());
                }
            }
            if (ch == null) {
                bound.forEach(c -> c.close().syncUninterruptibly());
                throw new CommandException("Failed to find an available port: " + (inUse == null ? "Address already in use" : inUse));
            }
            if (i.v6only(a)) {
                ch.pipeline().addFirst(new V6Only());
            }
            bound.add(ch);
        }
        return bound;
    }

    /**
     * On each listener: counts clients, and stops every listener accepting at max-connections
     * (under a lock: listeners may run on different event loops, and clients close on theirs).
     */
    @ChannelHandler.Sharable
    private final class ConnectionCounter extends ChannelInboundHandlerAdapter {
        private final List<Channel> counted = new CopyOnWriteArrayList<>();
        private final int max;
        private int connections; // guarded by this

        ConnectionCounter(int max) {
            this.max = max;
        }

        @Override
        public void handlerAdded(ChannelHandlerContext ctx) {
            counted.add(ctx.channel());
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            change(+1);
            ((Channel) msg).closeFuture().addListener(f -> change(-1));
            ctx.fireChannelRead(msg);
        }

        private synchronized void change(int delta) {
            connections += delta;
            boolean accept = max == 0 || connections < max;
            for (Channel l : counted) {
                l.config().setAutoRead(accept);
            }
        }
    }

    /** Refuses IPv4 clients of a wildcard IPv6 listener that was asked for IPv6 only. */
    private static final class V6Only extends ChannelInboundHandlerAdapter {
        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            Channel child = (Channel) msg;
            if (child.remoteAddress() instanceof InetSocketAddress r && r.getAddress() instanceof java.net.Inet4Address) {
                child.unsafe().closeForcibly();
                return;
            }
            ctx.fireChannelRead(msg);
        }
    }

    /** The addresses actually bound (for TCP port 0, or a port range). */
    public synchronized List<SocketAddress> addresses() {
        return listeners.stream().map(Channel::localAddress).toList();
    }

    /** The first address actually bound, or null when the server is not running. */
    public synchronized SocketAddress address() {
        return listeners.isEmpty() ? null : listeners.get(0).localAddress();
    }

    /** QMP {@code nbd-server-stop}: closes the listener, every client and every export. */
    public synchronized void stop() {
        if (listeners.isEmpty()) {
            throw new CommandException("NBD server not running");
        }
        for (NbdExport e : new ArrayList<>(byId.values())) {
            removeExport(e.id(), true);
        }
        listeners.forEach(l -> l.close().syncUninterruptibly());
        listeners.clear();
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
        if (listeners.isEmpty()) {
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

    private List<Channel> users(NbdExport export) {
        List<Channel> users = new ArrayList<>();
        for (Channel ch : clients) {
            NbdTransmissionHandler c = ch.pipeline().get(NbdTransmissionHandler.class);
            if (c != null && c.export() == export && ch.isOpen()) {
                users.add(ch);
            }
        }
        return users;
    }

    /**
     * Lets each client's event loop take in what has already arrived for it: a client that has
     * disconnected (NBD_CMD_DISC, or closed its socket) just before a safe-mode delete is gone
     * then, as it would be in QEMU's single main loop, instead of being found "still in use".
     * Two rounds: one in which the loop reads and closes, one for the close to complete.
     */
    private static void settle(List<Channel> users) {
        for (int round = 0; round < 2; round++) {
            for (Channel ch : users) {
                if (!ch.eventLoop().inEventLoop()) {
                    ch.eventLoop().submit(() -> { }).awaitUninterruptibly(1, java.util.concurrent.TimeUnit.SECONDS);
                }
            }
        }
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
        List<Channel> users = users(export);
        if (!users.isEmpty() && !hard) {
            settle(users);
            users = users(export);
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

    /** The graph the exports' nodes are in. */
    public BlockGraph graph() {
        return graph;
    }

    public List<NbdExport> exports() {
        return new ArrayList<>(byId.values());
    }

    @Override
    public synchronized void close() {
        if (!listeners.isEmpty()) {
            stop();
        }
        io.shutdownNow();
    }
}
