package io.blockjobs.platform.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/** A unix-socket relay between an NBD client and server; {@link #cut()} drops every link and refuses new ones. */
final class NbdLinkProxy implements AutoCloseable {
    final Path socket;
    private final Path target;
    private final ServerSocketChannel server;
    private final List<SocketChannel> open = new CopyOnWriteArrayList<>();
    private volatile boolean cut;

    NbdLinkProxy(Path socket, Path target) throws IOException {
        this.socket = socket;
        this.target = target;
        Files.deleteIfExists(socket);
        server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(socket));
        Thread t = new Thread(this::accept, "nbd-link-proxy");
        t.setDaemon(true);
        t.start();
    }

    private void accept() {
        while (server.isOpen()) {
            try {
                SocketChannel a = server.accept();
                if (cut) {
                    a.close();
                    continue;
                }
                SocketChannel b = SocketChannel.open(UnixDomainSocketAddress.of(target));
                open.add(a);
                open.add(b);
                pump(a, b);
                pump(b, a);
            } catch (IOException e) {
                return;
            }
        }
    }

    private void pump(SocketChannel from, SocketChannel to) {
        Thread t = new Thread(() -> {
            ByteBuffer buf = ByteBuffer.allocate(1 << 20);
            try {
                while (from.read(buf) >= 0) {
                    buf.flip();
                    while (buf.hasRemaining()) {
                        to.write(buf);
                    }
                    buf.clear();
                }
            } catch (IOException ignored) {
                // the link is gone
            } finally {
                closeQuietly(from);
                closeQuietly(to);
            }
        }, "nbd-link-pump");
        t.setDaemon(true);
        t.start();
    }

    /** Drops the link: every open connection closes, new ones are refused. */
    void cut() {
        cut = true;
        open.forEach(NbdLinkProxy::closeQuietly);
    }

    private static void closeQuietly(SocketChannel c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // closing
        }
    }

    @Override
    public void close() throws IOException {
        cut();
        server.close();
        Files.deleteIfExists(socket);
    }
}
