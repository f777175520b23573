package io.blockjobs.platform.image;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import io.blockjobs.platform.image.Librbd.Rados;
import io.blockjobs.platform.image.Librbd.Rbd;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.Limits;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * QEMU's {@code rbd} protocol driver ({@code block/rbd.c}): an image of a Ceph cluster, through
 * librbd. Reads, writes, discards, write-zeroes and flushes are librbd's asynchronous requests
 * ({@link Librbd#await}), any number in flight; block status comes from
 * {@code rbd_diff_iterate2}, so that holes read as zeroes and jobs skip them; resizing is
 * {@code rbd_resize}. An image opened at a {@code snapshot} is read-only.
 */
public final class RbdNode implements DriverNode, Resizable, ReadOnlyReopen {

    /**
     * Where the image is and how to reach its cluster ({@code BlockdevOptionsRbd}).
     *
     * @param pool       the pool
     * @param namespace  the pool's namespace, or null
     * @param image      the image
     * @param conf       the Ceph configuration file, or null for librados' default places
     * @param snapshot   the snapshot to open (read-only), or null
     * @param user       the cephx user without {@code client.}, or null for librados' default
     * @param authModes  {@code auth-client-required}: {@code cephx}, {@code none}; empty for librados' choice
     * @param key        the cephx key in base64 ({@code key-secret}'s value), or null
     * @param servers    monitors as {@code host:port}, or empty for the configuration's
     * @param settings   other librados settings, name and value ({@code rbd:} names' {@code :opt=val})
     * @param cache      librbd's cache ({@code rbd_cache}), off with {@code cache.direct=on}
     * @param strong     the options QEMU's {@code json:} filename shows, in the order given
     */
    public record Config(String pool, String namespace, String image, String conf, String snapshot, String user,
                         List<String> authModes, String key, List<String> servers, List<String[]> settings,
                         boolean cache, Map<String, Object> strong) {
    }

    /** blockjobs' {@code client_mount_timeout} in seconds, where the configuration keeps librados' 300. */
    static final String MOUNT_TIMEOUT = "20";

    private final Config config;
    private final Pointer cluster;
    private final Pointer ioctx;
    private final Pointer image;
    private final int objectSize;
    private volatile boolean readOnly;
    private final String filename;
    private final String nodeName;

    private RbdNode(Config config, String nodeName, Pointer cluster, Pointer ioctx, Pointer image, int objectSize,
                    boolean readOnly) {
        this.config = config;
        this.nodeName = nodeName;
        this.cluster = cluster;
        this.ioctx = ioctx;
        this.image = image;
        this.objectSize = objectSize;
        this.readOnly = readOnly;
        this.filename = QemuJson.filename("rbd", config.strong());
    }

    /**
     * Connects to the cluster and opens the image, with QEMU's messages ({@code error connecting:
     * Permission denied}, {@code error opening pool P: No such file or directory}, ...).
     *
     * @param nodeName     the node's name, for messages
     * @param readOnly     open read-only
     * @param autoReadOnly a snapshot opened without {@code read-only} becomes read-only rather than refused
     */
    public static RbdNode open(Config c, String nodeName, boolean readOnly, boolean autoReadOnly) {
        try {
            Librbd.require();
        } catch (IllegalStateException e) {
            throw new CommandException(e.getMessage());
        }
        Pointer cluster = connect(c);
        Pointer ioctx = null;
        PointerByReference ref = new PointerByReference();
        try {
            check(Rados.rados_ioctx_create(cluster, c.pool(), ref), "error opening pool " + c.pool());
            ioctx = ref.getValue();
            if (c.namespace() != null) {
                Rados.rados_ioctx_set_namespace(ioctx, c.namespace());
            }
            check(Rbd.rbd_open(ioctx, c.image(), ref, c.snapshot()), "error reading header from " + c.image());
            Pointer image = ref.getValue();
            try (Memory info = new Memory(256)) { // rbd_image_info_t: size, obj_size, ...
                check(Rbd.rbd_stat(image, info, info.size()), "error getting image info from " + c.image());
                int objectSize = (int) Math.min(1 << 30, info.getLong(8));
                boolean ro = readOnly;
                if (c.snapshot() != null && !ro) {
                    if (!autoReadOnly) {
                        throw new CommandException("rbd snapshots are read-only");
                    }
                    ro = true;
                }
                return new RbdNode(c, nodeName, cluster, ioctx, image, objectSize, ro);
            } catch (RuntimeException e) {
                Rbd.rbd_close(image);
                throw e;
            }
        } catch (RuntimeException e) {
            if (ioctx != null) {
                Rados.rados_ioctx_destroy(ioctx);
            }
            Rados.rados_shutdown(cluster);
            throw e;
        }
    }

    /**
     * QEMU's {@code qemu_rbd_co_create}: a new image of {@code size} bytes, with objects of
     * {@code objectSize} bytes (0: librbd's default, 4 MiB).
     */
    public static void create(Config c, long size, long objectSize) {
        if (objectSize != 0) {
            if (Long.bitCount(objectSize) != 1) {
                throw new CommandException("obj size needs to be power of 2");
            }
            if (objectSize < 4096) {
                throw new CommandException("obj size too small");
            }
        }
        try {
            Librbd.require();
        } catch (IllegalStateException e) {
            throw new CommandException(e.getMessage());
        }
        Pointer cluster = connect(c);
        PointerByReference ref = new PointerByReference();
        try {
            check(Rados.rados_ioctx_create(cluster, c.pool(), ref), "error opening pool " + c.pool());
            Pointer ioctx = ref.getValue();
            try {
                if (c.namespace() != null) {
                    Rados.rados_ioctx_set_namespace(ioctx, c.namespace());
                }
                IntByReference order = new IntByReference(objectSize == 0 ? 0 : Long.numberOfTrailingZeros(objectSize));
                check(Rbd.rbd_create(ioctx, c.image(), size, order), "error rbd create");
            } finally {
                Rados.rados_ioctx_destroy(ioctx);
            }
        } finally {
            Rados.rados_shutdown(cluster);
        }
    }

    /** QEMU's {@code qemu_rbd_connect}: a cluster handle, configured and connected. */
    private static Pointer connect(Config c) {
        PointerByReference ref = new PointerByReference();
        check(Rados.rados_create(ref, c.user()), "error initializing");
        Pointer cluster = ref.getValue();
        try {
            int r = Rados.rados_conf_read_file(cluster, c.conf()); // no conf: librados' default places, failure ignored
            if (c.conf() != null) {
                check(r, "error reading conf file " + c.conf());
            }
            for (String[] s : c.settings()) {
                check(Rados.rados_conf_set(cluster, s[0], s[1]), "invalid conf option " + s[0]);
            }
            if (!c.servers().isEmpty()) {
                check(Rados.rados_conf_set(cluster, "mon_host", String.join(";", c.servers())), "Could not set 'mon_host'");
            }
            if (c.key() != null) {
                check(Rados.rados_conf_set(cluster, "key", c.key()), "Could not set 'key'");
            }
            if (!c.authModes().isEmpty()) {
                check(Rados.rados_conf_set(cluster, "auth_client_required", String.join(";", c.authModes())),
                        "Could not set 'auth_client_required'");
            }
            Rados.rados_conf_set(cluster, "rbd_cache", c.cache() ? "true" : "false");
            // blockdev-add runs on the main loop: a cluster whose monitors do not answer fails
            // the open after MOUNT_TIMEOUT, not after librados' five minutes (unless configured)
            byte[] value = new byte[32];
            if (Rados.rados_conf_get(cluster, "client_mount_timeout", value, value.length) == 0
                    && isDefaultMountTimeout(Native.toString(value))) {
                Rados.rados_conf_set(cluster, "client_mount_timeout", MOUNT_TIMEOUT);
            }
            check(Rados.rados_connect(cluster), "error connecting");
            return cluster;
        } catch (RuntimeException e) {
            Rados.rados_shutdown(cluster);
            throw e;
        }
    }

    private static boolean isDefaultMountTimeout(String value) {
        try {
            return Double.parseDouble(value.strip()) == 300;
        } catch (NumberFormatException e) {
            return false;
        }
    }

    /** QEMU's {@code error_setg_errno}: the message, then the errno's text. */
    private static void check(int r, String what) {
        if (r < 0) {
            throw new CommandException(what + ": " + Strerror.of(-r));
        }
    }

    /** The options the node was opened with. */
    public Config config() {
        return config;
    }

    @Override
    public String driver() {
        return "rbd";
    }

    /** QEMU's name for the node: the {@code json:} form of its options (rbd has no plain one). */
    @Override
    public String filename() {
        return filename;
    }

    @Override
    public long size() throws IOException {
        LongByReference size = new LongByReference();
        checkIo(Rbd.rbd_get_size(image, size), "get size", 0);
        return size.getValue();
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    /**
     * QEMU's {@code qemu_rbd_get_specific_info}: {@code luks} or {@code luks2} when the image
     * starts with librbd's LUKS header, else null. An image whose start cannot be read shows
     * none, where QEMU fails the whole query: one unreadable image should not hide the others.
     */
    public String encryptionFormat() {
        ByteBuffer start = ByteBuffer.allocateDirect(LUKS_MAGIC.length + 2);
        try {
            if (size() < start.capacity()) {
                return null;
            }
            read(0, start);
        } catch (IOException e) {
            return null;
        }
        byte[] b = new byte[start.capacity()];
        start.flip().get(b);
        if (!java.util.Arrays.equals(b, 0, LUKS_MAGIC.length, LUKS_MAGIC, 0, LUKS_MAGIC.length) || b[6] != 0) {
            return null;
        }
        return b[7] == 1 ? "luks" : b[7] == 2 ? "luks2" : null;
    }

    /** A LUKS header's magic, then its version in two bytes (QEMU's rbd_luks_header_verification). */
    private static final byte[] LUKS_MAGIC = {'L', 'U', 'K', 'S', (byte) 0xBA, (byte) 0xBE};

    /** The image's object size: QEMU's {@code cluster-size} for rbd. */
    @Override
    public int clusterSize() {
        return objectSize;
    }

    @Override
    public Limits limits() {
        return new Limits(1, 0, objectSize);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        int n = dst.remaining();
        if (n == 0) {
            return;
        }
        if (!dst.isDirect()) {
            ByteBuffer bounce = BounceBuffers.take(n, 1);
            try {
                bounce.limit(n);
                read(offset, bounce);
                dst.put(bounce.flip());
            } finally {
                BounceBuffers.give(bounce);
            }
            return;
        }
        Pointer buf = Native.getDirectBufferPointer(dst).share(dst.position());
        long r = Librbd.await(c -> Rbd.rbd_aio_read(image, offset, n, buf, c));
        checkIo(r, "read", offset);
        if (r < n) { // past the image's end (it shrank meanwhile): zeroes, as QEMU pads short reads
            buf.setMemory(r, n - r, (byte) 0);
        }
        dst.position(dst.position() + n);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        checkWritable();
        int n = src.remaining();
        if (n > 0) {
            if (!src.isDirect()) {
                ByteBuffer bounce = BounceBuffers.take(n, 1);
                try {
                    bounce.put(src).flip();
                    write(offset, bounce, flags);
                } finally {
                    BounceBuffers.give(bounce);
                }
                return;
            }
            Pointer buf = Native.getDirectBufferPointer(src).share(src.position());
            checkIo(Librbd.await(c -> Rbd.rbd_aio_write(image, offset, n, buf, c)), "write", offset);
            src.position(src.position() + n);
        }
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? EnumSet.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    /**
     * librbd zeroes natively, thin, with or without {@code MAY_UNMAP}, as QEMU's rbd driver does:
     * its {@code #ifdef RBD_WRITE_ZEROES_FLAG_THICK_PROVISION} tests an enum constant of
     * {@code librbd.h}, not a macro, so QEMU never asks for thick zeroes. A mirror's zeroing of a
     * new RBD image then leaves it sparse, as with qemu-storage-daemon, instead of writing zeroes.
     */
    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        checkWritable();
        int zeroFlags = 0;
        checkIo(Librbd.await(c -> Rbd.rbd_aio_write_zeroes(image, offset, length, c, zeroFlags, 0)), "write zeroes",
                offset);
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        checkWritable();
        checkIo(Librbd.await(c -> Rbd.rbd_aio_discard(image, offset, length, c)), "discard", offset);
    }

    @Override
    public void flush() throws IOException {
        if (!readOnly) {
            checkIo(Librbd.await(c -> Rbd.rbd_aio_flush(image, c)), "flush", 0);
        }
    }

    /**
     * Makes a node opened read-only (a backing file) writable, as a commit into it needs;
     * refused, with QEMU's message, on a snapshot.
     */
    @Override
    public void reopenReadWrite() {
        if (config.snapshot() != null) {
            throw new CommandException("Cannot change node '" + nodeName + "' to r/w when using RBD snapshot");
        }
        readOnly = false;
    }

    /** Flushes, then refuses writes. */
    @Override
    public void reopenReadOnly() throws IOException {
        flush();
        readOnly = true;
    }

    /** {@code block_resize}: {@code rbd_resize}, QEMU's "Failed to resize file" on failure. */
    @Override
    public void truncate(long size) throws IOException {
        checkWritable();
        int r = Rbd.rbd_resize(image, size);
        if (r < 0) {
            throw new BlockIoException(Errno.ofCode(-r), "Failed to resize file: " + Strerror.of(-r));
        }
    }

    /**
     * QEMU's {@code qemu_rbd_co_block_status}: with the {@code fast-diff} feature (and a valid
     * object map), {@code rbd_diff_iterate2} over whole objects tells data from holes, which
     * read as zeroes; without it everything is data.
     */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        long size = size();
        long length = Math.min(maxLength, size - offset);
        if (length <= 0) {
            return new BlockStatus(offset, Math.max(1, maxLength), true, true, 0);
        }
        BlockStatus data = new BlockStatus(offset, length, true, false, 0);
        LongByReference v = new LongByReference();
        if (Rbd.rbd_get_features(image, v) < 0 || (v.getValue() & Rbd.FEATURE_FAST_DIFF) == 0
                || Rbd.rbd_get_flags(image, v) < 0 || (v.getValue() & Rbd.FLAG_FAST_DIFF_INVALID) != 0) {
            return data;
        }
        // Whole objects: start at the object holding offset; the first extent decides.
        long start = offset - offset % objectSize;
        long[] run = {-1, -1}; // first allocated extent's start and end
        int r = Librbd.firstAllocatedRun(image, start, offset + length - start, run);
        if (r < 0 && r != Librbd.STOP && run[0] < 0) {
            return data; // as QEMU: an iteration that failed says nothing
        }
        if (run[0] < 0 || run[0] >= offset + length) {
            return new BlockStatus(offset, length, true, true, 0); // a hole to the end
        }
        if (run[0] > offset) {
            return new BlockStatus(offset, run[0] - offset, true, true, 0); // a hole, then data
        }
        return new BlockStatus(offset, Math.min(run[1], offset + length) - offset, true, false, 0);
    }

    @Override
    public void close() throws IOException {
        Rbd.rbd_close(image);
        Rados.rados_ioctx_destroy(ioctx);
        Rados.rados_shutdown(cluster);
    }

    private void checkIo(long r, String what, long offset) throws IOException {
        if (r < 0) {
            int errno = (int) -r;
            throw new BlockIoException(Errno.ofCode(errno), config.pool() + "/" + config.image() + ": " + what
                    + " at offset " + offset + " failed: " + Strerror.of(errno));
        }
    }

    private void checkWritable() throws IOException {
        if (readOnly) {
            throw new BlockIoException(Errno.EPERM, config.pool() + "/" + config.image() + ": is open read-only");
        }
    }

    @Override
    public String toString() {
        return "rbd:" + config.pool() + "/" + config.image();
    }

    /** {@code rbd:} names' settings list, for parsing: name and value pairs. */
    static List<String[]> pairs(List<String> flat) {
        List<String[]> out = new ArrayList<>();
        for (int i = 0; i + 1 < flat.size(); i += 2) {
            out.add(new String[] {flat.get(i), flat.get(i + 1)});
        }
        return out;
    }
}
