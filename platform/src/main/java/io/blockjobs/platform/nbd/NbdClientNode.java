package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;

import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.ConnectionLostException;
import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.Pending;
import io.blockjobs.platform.nbd.NbdClientTransmissionHandler.Result;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A node that is an export of an NBD server (QEMU's {@code nbd} driver, {@code block/nbd.c}): every
 * request is one NBD request on one connection, many in flight at once.
 *
 * <p>A lost connection is retried in the background as QEMU's client retries it (after 1 s, then
 * doubling up to 16 s). For {@code reconnect-delay} seconds after the loss, requests wait (those
 * in flight when it was lost are sent again on the new connection); after that, and at once with
 * {@code reconnect-delay} 0, they fail with {@link Errno#EIO} until a connection is back.
 */
final class NbdClientNode implements DriverNode {
    private static final Logger LOG = LoggerFactory.getLogger(NbdClientNode.class);
    /** QEMU's client retries after 1 s, doubling up to 16 s ({@code nbd/client-connection.c}). */
    private static final long FIRST_RETRY_NANOS = TimeUnit.SECONDS.toNanos(1);
    private static final long MAX_RETRY_NANOS = TimeUnit.SECONDS.toNanos(16);

    /** QEMU's {@code NBDClientState}. */
    private enum State {
        CONNECTED, CONNECTING_WAIT, CONNECTING_NOWAIT, QUIT
    }

    /** How to reach the export again. */
    record Target(EventLoopGroup group, NbdAddress address, String export, String context) {
        NbdConnection open(java.util.function.Consumer<NbdConnection> onLost) throws IOException {
            return NbdConnection.open(group, address, export == null ? "" : export, context, onLost);
        }
    }

    private final Target target;
    private final String filename;
    private final long size;
    private final int exportFlags;
    private final boolean baseAllocation;
    private final long reconnectDelayNanos;
    private final Limits limits;
    private volatile boolean readOnly;
    private final AtomicLong cookies = new AtomicLong();
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private State state = State.CONNECTED;
    private NbdConnection connection;
    private long waitDeadline;
    private Thread reconnector;

    NbdClientNode(Target target, String filename, NbdConnection first, boolean readOnly, long reconnectDelaySeconds) {
        this.target = target;
        this.filename = filename;
        this.connection = first;
        NbdExportInfo info = first.info;
        this.size = info.size();
        this.exportFlags = info.flags();
        this.baseAllocation = info.hasContext();
        this.readOnly = readOnly;
        this.reconnectDelayNanos = TimeUnit.SECONDS.toNanos(reconnectDelaySeconds);
        this.limits = limits(info);
    }

    /** QEMU's {@code nbd_refresh_limits}. */
    private static Limits limits(NbdExportInfo info) {
        int min = info.minBlock();
        if (min == 0) {
            min = info.size() % 512 != 0 || info.hasContext() ? 1 : 512;
        }
        int max = info.maxBlock() == 0 ? MAX_REQUEST : Math.min(MAX_REQUEST, info.maxBlock());
        max -= max % min;
        return new Limits(min, max, 64 * 1024);
    }

    /** The connection's loss, reported by its handler on the event loop. */
    void lost(NbdConnection c) {
        lock.lock();
        try {
            if (c != connection || state == State.QUIT) {
                return;
            }
            connection = null;
            state = reconnectDelayNanos > 0 ? State.CONNECTING_WAIT : State.CONNECTING_NOWAIT;
            waitDeadline = System.nanoTime() + reconnectDelayNanos;
            LOG.warn("{}: connection lost; reconnecting{}", filename,
                    reconnectDelayNanos > 0 ? ", holding requests for " + reconnectDelayNanos / 1_000_000_000L + " s" : "");
            changed.signalAll();
            if (reconnector == null) {
                reconnector = Thread.ofVirtual().name("nbd-reconnect " + filename).start(this::reconnect);
            }
        } finally {
            lock.unlock();
        }
    }

    private void reconnect() {
        long backoff = FIRST_RETRY_NANOS;
        while (true) {
            NbdConnection c = null;
            String failure;
            try {
                c = target.open(this::lost);
                failure = c.info.size() != size ? "the export's size changed from " + size + " to " + c.info.size() : null;
            } catch (IOException e) {
                failure = e.getMessage();
            }
            lock.lock();
            try {
                if (state == State.QUIT) {
                    reconnector = null;
                    if (c != null) {
                        c.channel.close();
                    }
                    return;
                }
                if (failure == null) {
                    connection = c;
                    state = State.CONNECTED;
                    reconnector = null;
                    LOG.info("{}: reconnected", filename);
                    changed.signalAll();
                    if (!c.channel.isActive()) {
                        lost(c); // gone again already: another round (the lock is reentrant)
                    }
                    return;
                }
                if (c != null) {
                    c.channel.close();
                }
                LOG.debug("{}: reconnect failed: {}", filename, failure);
                long until = System.nanoTime() + backoff;
                for (long left = backoff; left > 0 && state != State.QUIT; left = until - System.nanoTime()) {
                    changed.awaitNanos(left);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                reconnector = null;
                return;
            } finally {
                lock.unlock();
            }
            backoff = Math.min(backoff * 2, MAX_RETRY_NANOS);
        }
    }

    /** The connection to send on, once there is one; EIO if requests are not to wait for it. */
    private NbdConnection connection() throws IOException {
        lock.lock();
        try {
            while (true) {
                switch (state) {
                    case CONNECTED -> {
                        return connection;
                    }
                    case CONNECTING_WAIT -> {
                        long left = waitDeadline - System.nanoTime();
                        if (left <= 0) {
                            state = State.CONNECTING_NOWAIT; // QEMU's reconnect_delay_timer
                            changed.signalAll();
                            LOG.warn("{}: not reconnected within the reconnect-delay; failing requests", filename);
                        } else {
                            changed.awaitNanos(left);
                        }
                    }
                    case CONNECTING_NOWAIT -> throw new BlockIoException(Errno.EIO, filename + ": not connected: "
                            + Errno.EIO.message());
                    case QUIT -> throw new BlockIoException(Errno.EIO, filename + ": the node was closed");
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BlockIoException(Errno.EIO, filename + ": interrupted");
        } finally {
            lock.unlock();
        }
    }

    /** Whether a request that lost its connection is to be sent again (QEMU's nbd_client_will_reconnect). */
    private boolean willRetry() {
        lock.lock();
        try {
            return state == State.CONNECTING_WAIT && waitDeadline - System.nanoTime() > 0 || state == State.CONNECTED;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Sends one request and waits for its reply, again on a new connection while
     * {@code reconnect-delay} holds requests.
     *
     * @param data for a write, the data (sent from its position, which does not move)
     * @param dst  for a read, where the data goes (from its position, which does not move)
     */
    private Result call(int type, int flags, long offset, long length, ByteBuffer data, ByteBuffer dst) throws IOException {
        while (true) {
            NbdConnection c = connection();
            long cookie = cookies.incrementAndGet();
            Pending p = new Pending(type, offset, length, dst);
            c.handler.register(cookie, p);
            NbdRequest request = data == null ? new NbdRequest(flags, type, cookie, offset, length)
                    : NbdRequest.write(flags, cookie, offset, Unpooled.wrappedBuffer(data.duplicate()));
            c.channel.writeAndFlush(request).addListener(f -> {
                if (!f.isSuccess() && c.handler.unregister(cookie) != null) {
                    p.done().completeExceptionally(new ConnectionLostException("send failed: " + f.cause()));
                    c.channel.close();
                }
            });
            try {
                Result r = p.done().get();
                if (r.errno() != 0) {
                    Errno e = NbdClientTransmissionHandler.errno(r.errno());
                    throw new BlockIoException(e, filename + ": " + what(type) + " at offset " + offset + " failed: "
                            + (r.message().isEmpty() ? e.message() : r.message()));
                }
                return r;
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof ConnectionLostException) || !willRetry()) {
                    throw new BlockIoException(Errno.EIO, filename + ": " + what(type) + " at offset " + offset
                            + " failed: " + Errno.EIO.message(), e.getCause());
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new BlockIoException(Errno.EIO, filename + ": interrupted");
            }
        }
    }

    private static String what(int type) {
        return switch (type) {
            case CMD_READ -> "read";
            case CMD_WRITE -> "write";
            case CMD_FLUSH -> "flush";
            case CMD_TRIM -> "discard";
            case CMD_WRITE_ZEROES -> "write zeroes";
            case CMD_BLOCK_STATUS -> "block status";
            default -> "request " + type;
        };
    }

    private boolean can(int flag) {
        return (exportFlags & flag) != 0;
    }

    // ---- DriverNode -------------------------------------------------------------------------------

    @Override
    public String driver() {
        return "nbd";
    }

    @Override
    public String filename() {
        return filename;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    @Override
    public Limits limits() {
        return limits;
    }

    @Override
    public void reopenReadWrite() throws IOException {
        if (can(TFLAG_READ_ONLY)) {
            throw new io.blockjobs.sdk.error.CommandException("Can't reopen read-only NBD mount as read/write");
        }
        readOnly = false;
    }

    private void checkRange(long offset, long length) throws IOException {
        if (offset < 0 || length < 0 || offset + length > size) {
            throw new BlockIoException(Errno.EINVAL, filename + ": request [" + offset + ", +" + length
                    + ") is past the end of the " + size + "-byte export");
        }
    }

    private void checkWritable() throws IOException {
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, filename + ": " + Errno.EPERM.message());
        }
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        checkRange(offset, length);
        if (length == 0) {
            return;
        }
        call(CMD_READ, 0, offset, length, null, dst);
        dst.position(dst.limit());
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int length = src.remaining();
        checkRange(offset, length);
        checkWritable();
        boolean fua = flags.contains(RequestFlag.FUA);
        if (length > 0) {
            call(CMD_WRITE, fua && can(TFLAG_SEND_FUA) ? CMD_FLAG_FUA : 0, offset, length, src, null);
            src.position(src.limit());
        }
        if (fua && !can(TFLAG_SEND_FUA)) {
            flush();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? Set.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    /** QEMU's {@code nbd_client_co_pwrite_zeroes}, in pieces of at most the max transfer. */
    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        checkRange(offset, length);
        checkWritable();
        boolean fua = flags.contains(RequestFlag.FUA);
        boolean fast = flags.contains(RequestFlag.NO_FALLBACK);
        if (!can(TFLAG_SEND_WRITE_ZEROES) || fast && !can(TFLAG_SEND_FAST_ZERO)) {
            if (fast) {
                throw new BlockIoException(Errno.ENOTSUP, filename + ": the server cannot write zeroes fast");
            }
            writeZeroBuffers(offset, length, fua);
            return;
        }
        int f = (flags.contains(RequestFlag.MAY_UNMAP) ? 0 : CMD_FLAG_NO_HOLE) | (fast ? CMD_FLAG_FAST_ZERO : 0)
                | (fua && can(TFLAG_SEND_FUA) ? CMD_FLAG_FUA : 0);
        for (long done = 0; done < length; ) {
            long n = Math.min(length - done, limits.maxTransfer());
            call(CMD_WRITE_ZEROES, f, offset + done, n, null, null);
            done += n;
        }
        if (fua && !can(TFLAG_SEND_FUA)) {
            flush();
        }
    }

    /** The block layer's fallback for a server without WRITE_ZEROES: plain writes of zeroes. */
    private void writeZeroBuffers(long offset, long length, boolean fua) throws IOException {
        ByteBuffer zeroes = ByteBuffer.allocate((int) Math.min(length, 1 << 20));
        for (long done = 0; done < length; ) {
            int n = (int) Math.min(length - done, zeroes.capacity());
            write(offset + done, zeroes.clear().limit(n), fua ? Set.of(RequestFlag.FUA) : RequestFlag.NONE);
            done += n;
        }
    }

    /** QEMU's {@code nbd_client_co_pdiscard}: nothing to do if the server takes no trims. */
    @Override
    public void discard(long offset, long length) throws IOException {
        checkRange(offset, length);
        checkWritable();
        if (!can(TFLAG_SEND_TRIM) || length == 0) {
            return;
        }
        long max = Integer.MAX_VALUE - Integer.MAX_VALUE % limits.requestAlignment();
        for (long done = 0; done < length; ) {
            long n = Math.min(length - done, max);
            call(CMD_TRIM, 0, offset + done, n, null, null);
            done += n;
        }
    }

    /** QEMU's {@code nbd_client_co_flush}: nothing to do if the server takes no flushes. */
    @Override
    public void flush() throws IOException {
        if (!can(TFLAG_SEND_FLUSH)) {
            return;
        }
        call(CMD_FLUSH, 0, 0, 0, null, null);
    }

    /**
     * QEMU's {@code nbd_client_co_block_status}: one extent ({@code NBD_CMD_FLAG_REQ_ONE}) of the
     * negotiated context, read as {@code base:allocation} flags (an {@code x-dirty-bitmap}'s dirty
     * bit reads as a hole, which is QEMU's trick); without a context, everything is data.
     */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        long length = Math.min(maxLength, size - offset);
        if (!baseAllocation) {
            return new BlockStatus(offset, length, true, false, 0);
        }
        length = Math.min(length, 0xffffffffL - limits.requestAlignment() + 1);
        Result r = call(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, offset, length, null, null);
        if (r.extent() == null) {
            throw new BlockIoException(Errno.EIO, filename + ": Server did not reply with any status extents");
        }
        long n = Math.min(r.extent().length(), length);
        int f = r.extent().flags();
        boolean hole = (f & STATE_HOLE) != 0;
        boolean zero = (f & STATE_ZERO) != 0;
        // A hole that reads as zeroes is defined here; one that does not is left undefined.
        return new BlockStatus(offset, n, !hole || zero, zero, !hole || zero ? 0 : 1);
    }

    @Override
    public void close() throws IOException {
        try {
            boolean connected;
            lock.lock();
            try {
                connected = state == State.CONNECTED;
            } finally {
                lock.unlock();
            }
            if (connected && !readOnly) {
                flush();
            }
        } catch (IOException e) {
            LOG.warn("{}: flush at close failed: {}", filename, e.getMessage());
        }
        NbdConnection c;
        Thread r;
        lock.lock();
        try {
            c = state == State.CONNECTED ? connection : null;
            state = State.QUIT;
            connection = null;
            r = reconnector;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        if (c != null) {
            ByteBuf none = Unpooled.EMPTY_BUFFER;
            c.channel.writeAndFlush(new NbdRequest(0, CMD_DISC, cookies.incrementAndGet(), 0, 0, none));
            c.channel.close().syncUninterruptibly();
        }
        if (r != null) {
            r.interrupt(); // an attempt may be blocked on a server that accepted and says nothing
            try {
                r.join(TimeUnit.SECONDS.toMillis(5));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    @Override
    public String toString() {
        return filename;
    }
}
