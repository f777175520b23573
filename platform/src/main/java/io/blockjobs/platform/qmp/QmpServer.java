package io.blockjobs.platform.qmp;

import io.blockjobs.platform.event.EventBus;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.util.concurrent.GlobalEventExecutor;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;
import tools.jackson.databind.node.ObjectNode;

/** QMP monitors on unix sockets (created owner-only) and loopback TCP. */
public final class QmpServer implements AutoCloseable {
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

    public QmpServer(EventLoopGroup group, QmpDispatcher dispatcher, EventBus events, ObjectNode greeting) {
        this.group = group;
        this.dispatcher = dispatcher;
        this.events = events;
        this.greeting = greeting;
    }

    private ChannelInitializer<Channel> initializer(String monitor) {
        return new ChannelInitializer<>() {
            @Override
            protected void initChannel(Channel ch) {
                connections.add(ch);
                String name = "monitor " + monitor + " connection " + connectionCount.incrementAndGet();
                ch.pipeline().addLast(new QmpFrameDecoder(MAX_MESSAGE, MAX_NESTING),
                        new QmpSession(dispatcher, events, greeting.deepCopy(), name, OUTPUT_LIMITS));
            }
        };
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
        Path target = path.toAbsolutePath();
        Files.deleteIfExists(target); // a stale socket from an earlier run, as QEMU does
        Path privateDir = Files.createTempDirectory(target.getParent(), ".qmp-",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Path temporary = privateDir.resolve("s");
        try {
            Channel ch = new ServerBootstrap().group(group).channel(NioServerDomainSocketChannel.class)
                    .childHandler(initializer(monitor)).bind(UnixDomainSocketAddress.of(temporary)).sync().channel();
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
        Channel ch = new ServerBootstrap().group(group).channel(NioServerSocketChannel.class)
                .childHandler(initializer(monitor)).bind(new InetSocketAddress(host, port)).sync().channel();
        listeners.add(ch);
        return (InetSocketAddress) ch.localAddress();
    }

    @Override
    public void close() {
        for (Channel ch : listeners) {
            ch.close().syncUninterruptibly();
        }
        connections.close().syncUninterruptibly();
        for (Path p : sockets) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // best effort
            }
        }
    }
}
