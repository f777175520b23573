package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.Map;
import java.util.Set;

/**
 * QEMU's {@code null-co} and {@code null-aio} protocol drivers ({@code block/null.c}): a disk of
 * {@code size} bytes that drops what is written and reads as zeroes, each read, write and flush
 * taking {@code latency-ns}.
 *
 * <p>With {@code read-zeroes=off} (QEMU 7.2's default) QEMU leaves the reader's buffer as it
 * was, which hands a client whatever the server's buffer held before. This node zeroes it
 * anyway, and only reports what QEMU reports: block status "not allocated, not known to be
 * zero" (a hole that is not a zero hole to an NBD client), as opposed to "allocated and zero"
 * with {@code read-zeroes=on}.
 */
public final class NullCoNode implements DriverNode {
    private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(1 << 20).asReadOnlyBuffer();

    private final String driver;
    private final long size;
    private final long latencyNs;
    private final boolean readZeroes;
    private final String filename;

    /**
     * @param driver     {@code null-co} or {@code null-aio}
     * @param size       the size asked for; the node is that rounded up to 512 bytes, as QEMU's
     * @param latencyNs  how long each read, write and flush takes
     * @param readZeroes what block status says: allocated zeroes, or not allocated
     * @param given      the options given besides {@code driver}, for the QEMU filename
     */
    public NullCoNode(String driver, long size, long latencyNs, boolean readZeroes, Map<String, Object> given) {
        this.driver = driver;
        this.size = (size + 511) & -512L;
        this.latencyNs = latencyNs;
        this.readZeroes = readZeroes;
        this.filename = filename(driver, given);
    }

    /**
     * QEMU's {@code null_refresh_filename}: {@code null-co://} when only {@code latency-ns} was
     * given, else the {@code json:} filename of the options, in the order QEMU's dictionary
     * keeps them.
     */
    private static String filename(String driver, Map<String, Object> given) {
        if (given.keySet().stream().allMatch(k -> k.equals("latency-ns"))) {
            return driver + "://";
        }
        return QemuJson.filename(driver, given);
    }

    public boolean readZeroes() {
        return readZeroes;
    }

    public long latencyNs() {
        return latencyNs;
    }

    private void latency() throws IOException {
        if (latencyNs == 0) {
            return;
        }
        try {
            Thread.sleep(Duration.ofNanos(latencyNs)); // the emulated device's latency, as QEMU's timer
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BlockIoException(Errno.ECANCELED, Errno.ECANCELED.message());
        }
    }

    @Override
    public String driver() {
        return driver;
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
        return false;
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        ByteBuffer zero = ZEROES.duplicate();
        while (dst.hasRemaining()) {
            zero.clear().limit(Math.min(zero.capacity(), dst.remaining()));
            dst.put(zero);
        }
        latency();
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        src.position(src.limit());
        latency();
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        write(offset, src); // FUA: nothing to make durable
    }

    /** No write-zeroes of its own, as QEMU's: the block layer writes a zero buffer instead. */
    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        latency();
    }

    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        if (flags.contains(RequestFlag.NO_FALLBACK)) {
            throw new BlockIoException(Errno.ENOTSUP, Errno.ENOTSUP.message());
        }
        latency();
    }

    /** No discard of its own: QEMU's block layer lets it succeed without a wait. */
    @Override
    public void discard(long offset, long length) {
    }

    @Override
    public void flush() throws IOException {
        latency();
    }

    @Override
    public BlockStatus blockStatus(long offset, long maxLength) {
        return new BlockStatus(offset, maxLength, readZeroes, readZeroes, readZeroes ? 0 : 1);
    }

    @Override
    public void reopenReadWrite() {
        // always writable
    }

    @Override
    public void close() {
    }

    @Override
    public String toString() {
        return filename;
    }
}
