package io.blockjobs.platform.nbd;

import io.netty.channel.Channel;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.socket.nio.NioDomainSocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.channels.UnresolvedAddressException;
import java.util.concurrent.ExecutionException;

/**
 * One client connection to an NBD server, past the handshake: the socket is connected with the
 * JDK (its errors are the system's, as QEMU prints them), handed to Netty, and negotiated by an
 * {@link NbdClientHandshakeHandler}; the pipeline then becomes {@link NbdReplyDecoder},
 * {@link NbdRequestEncoder} and {@link NbdClientTransmissionHandler}.
 */
final class NbdConnection {
    private static final String DECODER = "decoder";
    private static final String ENCODER = "encoder";
    private static final String HANDLER = "handler";

    final Channel channel;
    final NbdExportInfo info;
    final NbdClientTransmissionHandler handler;

    private NbdConnection(Channel channel, NbdExportInfo info, NbdClientTransmissionHandler handler) {
        this.channel = channel;
        this.info = info;
        this.handler = handler;
    }

    /** A connection attempt that failed, with QEMU's message. */
    static final class ConnectException extends IOException {
        private static final long serialVersionUID = 1L;

        ConnectException(String message) {
            super(message);
        }
    }

    /**
     * Connects and negotiates; blocks the calling thread (never an event loop's).
     *
     * @param context the meta context block status is to report
     * @param onLost  run when the connection is gone, after its requests failed
     */
    static NbdConnection open(EventLoopGroup group, NbdAddress address, String export, String context,
                              java.util.function.Consumer<NbdConnection> onLost) throws IOException {
        SocketChannel socket = connect(address);
        Channel ch = address instanceof NbdAddress.Unix ? new NioDomainSocketChannel(socket) : new NioSocketChannel(socket);
        NbdClientHandshakeHandler handshake = new NbdClientHandshakeHandler(export, context);
        ChannelPipeline p = ch.pipeline();
        p.addLast("greeting", new NbdGreetingDecoder());
        p.addLast(DECODER, new NbdOptionReplyDecoder(64 * 1024));
        p.addLast(ENCODER, new NbdOptionEncoder());
        p.addLast(HANDLER, handshake);
        NbdExportInfo info;
        try {
            socket.configureBlocking(false);
            group.register(ch).sync();
            info = handshake.result().get();
        } catch (ExecutionException e) {
            ch.close();
            throw new ConnectException(e.getCause().getMessage());
        } catch (InterruptedException e) {
            ch.close();
            Thread.currentThread().interrupt();
            throw new ConnectException("interrupted");
        } catch (IOException | RuntimeException e) {
            ch.close();
            socket.close();
            throw new ConnectException("Failed to connect to '" + address.describe() + "': " + e.getMessage());
        }
        NbdConnection[] self = new NbdConnection[1];
        NbdClientTransmissionHandler handler = new NbdClientTransmissionHandler(info.contextId(), () -> onLost.accept(self[0]));
        self[0] = new NbdConnection(ch, info, handler);
        try {
            ch.eventLoop().submit(() -> {
                p.replace(ENCODER, ENCODER, new NbdRequestEncoder());
                p.replace(HANDLER, HANDLER, handler);
                p.replace(DECODER, DECODER, new NbdReplyDecoder(Nbd.MAX_REQUEST, handler::readLength));
                if (!ch.isActive()) {
                    handler.channelInactive(p.context(HANDLER)); // gone while switching: fail now
                }
            }).sync();
        } catch (InterruptedException e) {
            ch.close();
            Thread.currentThread().interrupt();
            throw new ConnectException("interrupted");
        }
        return self[0];
    }

    private static SocketChannel connect(NbdAddress address) throws IOException {
        switch (address) {
            case NbdAddress.Unix u -> {
                SocketChannel s = SocketChannel.open(StandardProtocolFamily.UNIX);
                try {
                    s.connect(UnixDomainSocketAddress.of(u.path()));
                    return s;
                } catch (IOException | RuntimeException e) {
                    s.close();
                    throw new ConnectException("Failed to connect to '" + u.path() + "': " + reason(e));
                }
            }
            case NbdAddress.Inet i -> {
                int port;
                try {
                    port = Integer.parseInt(i.port());
                } catch (NumberFormatException e) {
                    throw new ConnectException("address resolution failed for " + i.describe()
                            + ": Servname not supported for ai_socktype");
                }
                InetSocketAddress a = new InetSocketAddress(i.host(), port);
                if (a.isUnresolved()) {
                    throw new ConnectException("address resolution failed for " + i.describe() + ": Name or service not known");
                }
                SocketChannel s = SocketChannel.open();
                try {
                    s.connect(a);
                    s.socket().setTcpNoDelay(true);
                    return s;
                } catch (UnresolvedAddressException e) {
                    s.close();
                    throw new ConnectException("address resolution failed for " + i.describe() + ": Name or service not known");
                } catch (IOException | RuntimeException e) {
                    s.close();
                    throw new ConnectException("Failed to connect to '" + i.describe() + "': " + reason(e));
                }
            }
        }
    }

    private static String reason(Exception e) {
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }
}
