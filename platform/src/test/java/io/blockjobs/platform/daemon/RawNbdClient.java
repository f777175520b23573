package io.blockjobs.platform.daemon;

import java.io.EOFException;
import java.io.IOException;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * An NBD client written out by hand for the daemon tests: it sends what a test tells it to,
 * well-formed or not, and reads replies only when told to (a hostile client never does).
 */
final class RawNbdClient implements AutoCloseable {
    static final int FIXED_NEWSTYLE = 1;
    static final int NO_ZEROES = 2;
    static final int CMD_READ = 0;
    static final int CMD_WRITE = 1;
    static final int CMD_DISC = 2;
    static final int CMD_FLUSH = 3;
    static final int CMD_TRIM = 4;
    static final int CMD_CACHE = 5;
    static final int CMD_WRITE_ZEROES = 6;
    static final int CMD_BLOCK_STATUS = 7;

    /** A reply: simple, or the last structured chunk ({@code message} set for an error chunk). */
    record Reply(long cookie, int errno, String message, int payload) {
    }

    private final SocketChannel ch;
    private boolean structured;

    private RawNbdClient(SocketChannel ch) {
        this.ch = ch;
    }

    /** Connects to a unix socket path or a TCP address; nothing is read or sent. */
    static RawNbdClient connect(SocketAddress address) throws IOException {
        SocketChannel ch = address instanceof UnixDomainSocketAddress
                ? SocketChannel.open(StandardProtocolFamily.UNIX) : SocketChannel.open();
        ch.connect(address);
        return new RawNbdClient(ch);
    }

    /** Connects, reads the greeting, and negotiates {@code export} with or without structured replies. */
    static RawNbdClient open(SocketAddress address, String export, boolean structured) throws IOException {
        RawNbdClient c = connect(address);
        c.greeting(Duration.ofSeconds(30));
        c.send(ByteBuffer.allocate(4).putInt(FIXED_NEWSTYLE | NO_ZEROES).flip());
        if (structured) {
            c.option(8, new byte[0]);
            c.optionReply();
            c.structured = true;
        }
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        c.option(7, ByteBuffer.allocate(6 + name.length).putInt(name.length).put(name).putShort((short) 0).array());
        while (c.optionReply() != 1) { // NBD_REP_ACK ends GO
            // NBD_REP_INFO
        }
        return c;
    }

    /** Reads the 18-byte greeting within {@code timeout}. */
    void greeting(Duration timeout) throws IOException {
        ByteBuffer g = read(18, timeout);
        if (g.getLong(0) != 0x4e42444d41474943L) {
            throw new IOException("not an NBD greeting");
        }
    }

    /** Starts reading the greeting; the future completes when it is in (a test waits on it as it likes). */
    CompletableFuture<Void> greetingLater() {
        CompletableFuture<Void> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try {
                ByteBuffer b = ByteBuffer.allocate(18);
                while (b.hasRemaining()) {
                    if (ch.read(b) < 0) {
                        throw new EOFException("closed before the greeting");
                    }
                }
                f.complete(null);
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        return f;
    }

    void send(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    void clientFlags(int flags) throws IOException {
        send(ByteBuffer.allocate(4).putInt(flags).flip());
    }

    void option(int option, byte[] data) throws IOException {
        send(ByteBuffer.allocate(16 + data.length).putLong(0x49484156454F5054L).putInt(option).putInt(data.length)
                .put(data).flip());
    }

    /** Reads one option reply; returns its type. */
    int optionReply() throws IOException {
        ByteBuffer h = read(20, Duration.ofSeconds(30));
        int type = h.getInt(12);
        read(h.getInt(16), Duration.ofSeconds(30));
        if (type < 0) {
            throw new IOException("option refused: " + Integer.toHexString(type));
        }
        return type;
    }

    void request(int flags, int type, long cookie, long offset, long length) throws IOException {
        request(flags, type, cookie, offset, length, new byte[0]);
    }

    void request(int flags, int type, long cookie, long offset, long length, byte[] data) throws IOException {
        send(ByteBuffer.allocate(28 + data.length).putInt(0x25609513).putShort((short) flags).putShort((short) type)
                .putLong(cookie).putLong(offset).putInt((int) length).put(data).flip());
    }

    /**
     * Reads the next reply whole; for a simple reply to a read, {@code readLength} bytes of data
     * follow a successful one.
     */
    Reply reply(long readLength, Duration timeout) throws IOException {
        ByteBuffer m = read(4, timeout);
        int magic = m.getInt(0);
        if (magic == 0x67446698) {
            ByteBuffer h = read(12, timeout);
            int errno = h.getInt(0);
            long cookie = h.getLong(4);
            if (errno == 0 && readLength > 0) {
                skip(readLength, timeout);
            }
            return new Reply(cookie, errno, null, errno == 0 ? (int) readLength : 0);
        }
        if (magic != 0x668e33ef) {
            throw new IOException("bad reply magic " + Integer.toHexString(magic));
        }
        while (true) {
            ByteBuffer h = read(16, timeout);
            int flags = h.getShort(0) & 0xffff;
            int type = h.getShort(2) & 0xffff;
            long cookie = h.getLong(4);
            int length = h.getInt(12);
            if ((type & 0x8000) != 0) {
                ByteBuffer p = read(length, timeout);
                int errno = p.getInt(0);
                int ml = p.getShort(4) & 0xffff;
                String message = StandardCharsets.UTF_8.decode(p.slice(6, ml)).toString();
                return new Reply(cookie, errno, message, 0);
            }
            skip(length, timeout);
            if ((flags & 1) != 0) {
                return new Reply(cookie, 0, null, length);
            }
            read(4, timeout); // the next chunk's magic
        }
    }

    /** Whether the server closed the connection within {@code timeout} (EOF or a reset, no byte read). */
    boolean closedWithin(Duration timeout) throws IOException {
        try {
            ByteBuffer b = ByteBuffer.allocate(1);
            int n = within(timeout, () -> ch.read(b));
            return n < 0;
        } catch (IOException e) {
            return true; // reset by the peer
        }
    }

    private ByteBuffer read(int n, Duration timeout) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        within(timeout, () -> {
            while (b.hasRemaining()) {
                if (ch.read(b) < 0) {
                    throw new EOFException("the server closed the connection");
                }
            }
            return n;
        });
        return b.flip();
    }

    private void skip(long n, Duration timeout) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(1 << 20);
        within(timeout, () -> {
            long left = n;
            while (left > 0) {
                b.clear().limit((int) Math.min(b.capacity(), left));
                int r = ch.read(b);
                if (r < 0) {
                    throw new EOFException("the server closed the connection");
                }
                left -= r;
            }
            return 0;
        });
    }

    private interface Io<T> {
        T run() throws IOException;
    }

    /** Runs blocking I/O with a time limit; on timeout the connection is closed (it cannot go on). */
    private <T> T within(Duration timeout, Io<T> io) throws IOException {
        CompletableFuture<T> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try {
                f.complete(io.run());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        try {
            return f.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            ch.close();
            throw new java.net.SocketTimeoutException("nothing within " + timeout);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io2) {
                throw io2;
            }
            throw new IOException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
