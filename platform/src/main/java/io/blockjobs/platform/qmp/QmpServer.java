package io.blockjobs.platform.qmp;

import io.blockjobs.platform.event.EventBus;
import io.netty.bootstrap.Bootstrap;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.local.LocalAddress;
import io.netty.channel.local.LocalChannel;
import io.netty.channel.local.LocalIoHandler;
import io.netty.channel.local.LocalServerChannel;
import io.netty.channel.socket.nio.NioDomainSocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.util.concurrent.GlobalEventExecutor;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.node.ObjectNode;

/**
 * QMP monitors: listening on unix sockets (created owner-only) and loopback TCP, connecting out
 * to a client that listens (QEMU's client-mode socket chardev, as QEMU's test harnesses use it),
 * or on the process's standard input and output.
 */
public final class QmpServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(QmpServer.class);
    /** Largest QMP message accepted. */
    public static final int MAX_MESSAGE = 1 << 20;
    /** Deepest nesting of objects and arrays in a message accepted: QEMU's MAX_NESTING. */
    public static final int MAX_NESTING = 1024;
    /**
     * Output that may wait for one monitor: past {@code pauseReading} its requests wait, and a
     * monitor whose output would pass {@code maxQueued} is disconnected.
     */
    static final QmpSession.Limits OUTPUT_LIMITS = new QmpSession.Limits(1 << 20, 8 << 20);

    private final EventLoopGroup group;
    private final QmpDispatcher dispatcher;
    private final EventBus events;
    private final ObjectNode greeting;
    private final List<Channel> listeners = new CopyOnWriteArrayList<>();
    private final List<Path> sockets = new CopyOnWriteArrayList<>();
    private final ChannelGroup connections = new DefaultChannelGroup(GlobalEventExecutor.INSTANCE);
    private final AtomicLong connectionCount = new AtomicLong();
    private final List<EventLoopGroup> ownGroups = new CopyOnWriteArrayList<>();
    private final AtomicBoolean closed = new AtomicBoolean();
    private final Map<String, Consumer<Channel>> watchers = new ConcurrentHashMap<>();

    public QmpServer(EventLoopGroup group, QmpDispatcher dispatcher, EventBus events, ObjectNode greeting) {
        this.group = group;
        this.dispatcher = dispatcher;
        this.events = EventRateLimit.monitorBus(events); // QEMU limits some events per monitor output
        this.greeting = greeting;
    }

    private ChannelInitializer<Channel> initializer(String monitor, boolean pretty) {
        return new ChannelInitializer<>() {
            @Override
            protected void initChannel(Channel ch) {
                connections.add(ch);
                Consumer<Channel> watcher = watchers.get(monitor);
                if (watcher != null) {
                    watcher.accept(ch);
                }
                String name = "monitor " + monitor + " connection " + connectionCount.incrementAndGet();
                ch.pipeline().addLast(new QmpFrameDecoder(MAX_MESSAGE, MAX_NESTING),
                        new QmpSession(dispatcher, events, greeting.deepCopy(), name, OUTPUT_LIMITS, pretty));
            }
        };
    }

    /** Tells {@code watcher} of every connection the monitor named {@code monitor} gets (before it listens or connects). */
    public void watch(String monitor, Consumer<Channel> watcher) {
        watchers.put(monitor, watcher);
    }

    /**
     * Listens on a unix socket at {@code path}, mode 0600 from the start: it is bound in a
     * private folder and moved into place.
     */
    public void listenUnix(Path path) throws IOException, InterruptedException {
        listenUnix(path, path.toString());
    }

    /** As {@link #listenUnix(Path)}, for the monitor named {@code monitor} in logs. */
    public void listenUnix(Path path, String monitor) throws IOException, InterruptedException {
        listenUnix(path, monitor, false);
    }

    /** As {@link #listenUnix(Path, String)}; {@code pretty}: output laid out as QEMU's {@code pretty=on}. */
    public void listenUnix(Path path, String monitor, boolean pretty) throws IOException, InterruptedException {
        Path target = path.toAbsolutePath();
        Files.deleteIfExists(target); // a stale socket from an earlier run, as QEMU does
        Path privateDir = Files.createTempDirectory(target.getParent(), ".qmp-",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Path temporary = privateDir.resolve("s");
        try {
            Channel ch = new ServerBootstrap().group(group).channel(NioServerDomainSocketChannel.class)
                    .childHandler(initializer(monitor, pretty)).bind(UnixDomainSocketAddress.of(temporary)).sync().channel();
            Files.setPosixFilePermissions(temporary, PosixFilePermissions.fromString("rw-------"));
            Files.move(temporary, target, StandardCopyOption.ATOMIC_MOVE);
            listeners.add(ch);
            sockets.add(target);
        } finally {
            Files.deleteIfExists(temporary);
            Files.deleteIfExists(privateDir);
        }
    }

    /** Listens on TCP; {@code host} should be a loopback address unless the operator says otherwise. */
    public InetSocketAddress listenTcp(String host, int port) throws InterruptedException {
        return listenTcp(host, port, host + ":" + port);
    }

    /** As {@link #listenTcp(String, int)}, for the monitor named {@code monitor} in logs. */
    public InetSocketAddress listenTcp(String host, int port, String monitor) throws InterruptedException {
        return listenTcp(host, port, monitor, false);
    }

    /** As {@link #listenTcp(String, int, String)}; {@code pretty}: output laid out as QEMU's {@code pretty=on}. */
    public InetSocketAddress listenTcp(String host, int port, String monitor, boolean pretty) throws InterruptedException {
        Channel ch = new ServerBootstrap().group(group).channel(NioServerSocketChannel.class)
                .childHandler(initializer(monitor, pretty)).bind(new InetSocketAddress(host, port)).sync().channel();
        listeners.add(ch);
        return (InetSocketAddress) ch.localAddress();
    }

    /**
     * Connects to a client listening at {@code address} (a {@link UnixDomainSocketAddress} or an
     * {@link InetSocketAddress}), as QEMU's socket chardev without {@code server=on}. With
     * {@code reconnectSeconds} 0 the first connection must succeed, else this throws QEMU's
     * "Failed to connect to 'ADDRESS': REASON"; a connection that ends is not made again. With
     * {@code reconnectSeconds} above 0 it connects in the background and, as QEMU, tries again
     * that many seconds after a failure (reported once) or a disconnection.
     *
     * @param shown the address as QEMU names it in messages: the path, or host:port
     */
    public void connect(SocketAddress address, String shown, String monitor, boolean pretty, long reconnectSeconds)
            throws IOException, InterruptedException {
        Bootstrap bootstrap = new Bootstrap().group(group)
                .channel(address instanceof UnixDomainSocketAddress ? NioDomainSocketChannel.class : NioSocketChannel.class)
                .handler(initializer(monitor, pretty));
        if (reconnectSeconds <= 0) {
            ChannelFuture f = bootstrap.connect(address).await();
            if (!f.isSuccess()) {
                throw new IOException("Failed to connect to '" + shown + "': " + reason(f.cause()));
            }
            return;
        }
        connectAgain(bootstrap, address, shown, monitor, reconnectSeconds, new AtomicBoolean());
    }

    private void connectAgain(Bootstrap bootstrap, SocketAddress address, String shown, String monitor, long seconds,
                              AtomicBoolean reported) {
        if (closed.get()) {
            return;
        }
        bootstrap.connect(address).addListener((ChannelFuture f) -> {
            if (closed.get()) {
                f.channel().close();
                return;
            }
            if (f.isSuccess()) {
                reported.set(false);
                f.channel().closeFuture().addListener(c -> retryLater(bootstrap, address, shown, monitor, seconds, reported));
                return;
            }
            if (reported.compareAndSet(false, true)) { // QEMU reports the first failure of a series only
                LOG.warn("Unable to connect character device {}: Failed to connect to '{}': {}", monitor, shown, reason(f.cause()));
            }
            retryLater(bootstrap, address, shown, monitor, seconds, reported);
        });
    }

    private void retryLater(Bootstrap bootstrap, SocketAddress address, String shown, String monitor, long seconds,
                            AtomicBoolean reported) {
        if (!closed.get() && !group.isShuttingDown()) {
            group.next().schedule(() -> connectAgain(bootstrap, address, shown, monitor, seconds, reported), seconds, TimeUnit.SECONDS);
        }
    }

    /** The system's words for a failed connect ("No such file or directory"), without Java's decorations. */
    private static String reason(Throwable cause) {
        String m = cause.getMessage() == null ? cause.toString() : cause.getMessage();
        int address = m.indexOf(": /");
        return address > 0 ? m.substring(0, address) : m;
    }

    /**
     * A monitor on {@code in} and {@code out} (the process's standard input and output, as QEMU's
     * stdio chardev): requests are read from {@code in} by a thread of their own and replies and
     * events written to {@code out}. At the end of {@code in} the daemon goes on, as
     * qemu-storage-daemon does; it stops with {@code quit} or a signal.
     */
    public void serveStreams(InputStream in, OutputStream out, String monitor, boolean pretty) throws InterruptedException {
        // An in-process channel pair, so the monitor is the same QmpSession as a socket's.
        EventLoopGroup local = new MultiThreadIoEventLoopGroup(1, LocalIoHandler.newFactory());
        ownGroups.add(local);
        LocalAddress address = new LocalAddress("qmp-" + monitor + "-" + System.identityHashCode(this));
        listeners.add(new ServerBootstrap().group(local).channel(LocalServerChannel.class)
                .childHandler(initializer(monitor, pretty)).bind(address).sync().channel());
        Channel peer = new Bootstrap().group(local).channel(LocalChannel.class).handler(new ChannelInboundHandlerAdapter() {
            @Override
            public void channelRead(ChannelHandlerContext ctx, Object msg) {
                ByteBuf buf = (ByteBuf) msg;
                try {
                    buf.readBytes(out, buf.readableBytes());
                    out.flush();
                } catch (IOException e) {
                    LOG.debug("QMP {}: cannot write its output: {}", monitor, e.toString());
                } finally {
                    buf.release();
                }
            }
        }).connect(address).sync().channel();
        connections.add(peer);
        Thread.ofPlatform().daemon().name("qmp-" + monitor + "-input").start(() -> {
            byte[] chunk = new byte[64 * 1024];
            try {
                int n;
                while ((n = in.read(chunk)) > 0) {
                    if (!peer.writeAndFlush(Unpooled.copiedBuffer(chunk, 0, n)).await().isSuccess()) { // one chunk at a time
                        break; // the daemon is stopping
                    }
                }
            } catch (IOException e) {
                LOG.debug("QMP {}: cannot read its input: {}", monitor, e.toString());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
    }

    @Override
    public void close() {
        closed.set(true);
        for (Channel ch : listeners) {
            ch.close().syncUninterruptibly();
        }
        connections.close().syncUninterruptibly();
        for (EventLoopGroup g : ownGroups) {
            g.shutdownGracefully(0, 2, TimeUnit.SECONDS).syncUninterruptibly();
        }
        for (Path p : sockets) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // best effort
            }
        }
    }
}
