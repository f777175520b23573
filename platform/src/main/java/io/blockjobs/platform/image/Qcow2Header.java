package io.blockjobs.platform.image;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The qcow2 header and its extensions ({@code docs/interop/qcow2.txt}), parsed from and
 * encoded into the image's first cluster. The bitmaps extension's fields are kept here for
 * {@link Qcow2Bitmaps}, which validates and maintains them; extensions blockjobs does not interpret
 * are kept byte for byte and written back unchanged.
 */
final class Qcow2Header {

    static final int MAGIC = 0x514649fb; // "QFI\xfb"
    static final int V2_LENGTH = 72;
    static final int V3_LENGTH = 112; // with the compression-type byte, padded to 8

    static final int EXT_END = 0;
    static final int EXT_BACKING_FORMAT = 0xe2792aca;
    static final int EXT_FEATURE_NAMES = 0x6803f857;
    static final int EXT_BITMAPS = 0x23852875;
    static final int BITMAPS_EXT_LENGTH = 24;

    static final long INCOMPAT_DIRTY = 1;
    static final long INCOMPAT_CORRUPT = 1 << 1;
    static final long INCOMPAT_DATA_FILE = 1 << 2;
    static final long INCOMPAT_COMPRESSION = 1 << 3;
    static final long INCOMPAT_EXTL2 = 1 << 4;
    static final long INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
    static final long COMPAT_LAZY_REFCOUNTS = 1;
    static final long AUTOCLEAR_BITMAPS = 1;
    static final long AUTOCLEAR_DATA_FILE_RAW = 1 << 1;
    /** QEMU's {@code QCOW2_AUTOCLEAR_MASK}: the autoclear bits a writer keeps; it clears the others. */
    static final long AUTOCLEAR_KNOWN = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

    /** One header extension kept as read. */
    record Extension(int type, byte[] data) {
    }

    /**
     * The bitmaps extension's fields ({@code docs/interop/qcow2.txt}, "Bitmaps extension"), as
     * read or as {@link Qcow2Bitmaps} last wrote them.
     */
    record BitmapsExtension(int count, int reserved, long directorySize, long directoryOffset) {
    }

    int version;
    int clusterBits;
    long size;
    int cryptMethod;
    int l1Size;
    long l1TableOffset;
    long refcountTableOffset;
    int refcountTableClusters;
    int snapshotCount;
    long snapshotsOffset;
    long incompatibleFeatures;
    long compatibleFeatures;
    long autoclearFeatures;
    int refcountOrder = 4;
    int headerLength;
    int compressionType;
    byte[] newerHeaderFields = new byte[0];

    String backingFile; // null: none
    String backingFormat; // null: not recorded
    BitmapsExtension bitmaps; // null: none
    final List<Extension> keptExtensions = new ArrayList<>(); // written back as they were

    int clusterSize() {
        return 1 << clusterBits;
    }

    /**
     * Parses a header from the start of {@code buf} (the image's first cluster, or as much of it
     * as the file has).
     *
     * @throws ImageException naming {@code file} if the header is not a valid qcow2 header
     */
    static Qcow2Header parse(String file, ByteBuffer buf) throws ImageException {
        int available = buf.remaining();
        if (available < 8 || buf.getInt(0) != MAGIC) {
            throw new ImageException(file, "not a qcow2 image (wrong magic)");
        }
        Qcow2Header h = new Qcow2Header();
        h.version = buf.getInt(4);
        if (h.version != 2 && h.version != 3) {
            throw new ImageException(file, "unsupported qcow2 version " + h.version + " (2 and 3 are supported)");
        }
        int minLength = h.version == 2 ? V2_LENGTH : 104;
        if (available < minLength) {
            throw new ImageException(file, "truncated qcow2 header: " + available + " bytes, version "
                    + h.version + " needs " + minLength);
        }
        long backingOffset = buf.getLong(8);
        int backingSize = buf.getInt(16);
        h.clusterBits = buf.getInt(20);
        if (h.clusterBits < 9 || h.clusterBits > 21) {
            throw new ImageException(file, "unsupported cluster size 2^" + h.clusterBits
                    + " (qcow2 allows 512 B to 2 MiB)");
        }
        h.size = buf.getLong(24);
        h.cryptMethod = buf.getInt(32);
        h.l1Size = buf.getInt(36);
        h.l1TableOffset = buf.getLong(40);
        h.refcountTableOffset = buf.getLong(48);
        h.refcountTableClusters = buf.getInt(56);
        h.snapshotCount = buf.getInt(60);
        h.snapshotsOffset = buf.getLong(64);
        if (h.version == 3) {
            h.incompatibleFeatures = buf.getLong(72);
            h.compatibleFeatures = buf.getLong(80);
            h.autoclearFeatures = buf.getLong(88);
            h.refcountOrder = buf.getInt(96);
            h.headerLength = buf.getInt(100);
            if (h.headerLength < 104 || h.headerLength % 8 != 0) {
                throw new ImageException(file, "invalid qcow2 header length " + h.headerLength);
            }
            if (h.headerLength > available) {
                throw new ImageException(file, "truncated qcow2 header: header length " + h.headerLength
                        + " but the file has " + available + " bytes");
            }
            if (h.refcountOrder > 6) {
                throw new ImageException(file, "invalid refcount order " + h.refcountOrder + " (at most 6)");
            }
            if (h.headerLength > 104) {
                h.compressionType = buf.get(104) & 0xff;
            }
            if (h.headerLength > V3_LENGTH) { // fields newer than this driver: keep them
                h.newerHeaderFields = new byte[h.headerLength - V3_LENGTH];
                buf.get(V3_LENGTH, h.newerHeaderFields);
            }
        } else {
            h.headerLength = V2_LENGTH;
        }
        int cluster = h.clusterSize();
        if (h.size < 0 || h.size > (1L << 56)) {
            throw new ImageException(file, "invalid virtual size " + h.size);
        }
        // Header extensions, up to the end of the first cluster.
        int pos = h.headerLength;
        int limit = Math.min(available, cluster);
        while (true) {
            if (pos + 8 > limit) {
                throw new ImageException(file, "truncated header extension at offset " + pos);
            }
            int type = buf.getInt(pos);
            int length = buf.getInt(pos + 4);
            pos += 8;
            if (type == EXT_END) {
                break;
            }
            if (length < 0 || pos + length > limit) {
                throw new ImageException(file, "header extension 0x" + Integer.toHexString(type)
                        + " at offset " + (pos - 8) + " runs past the header cluster");
            }
            byte[] data = new byte[length];
            buf.get(pos, data);
            switch (type) {
                case EXT_BACKING_FORMAT -> h.backingFormat = new String(data, StandardCharsets.UTF_8);
                case EXT_FEATURE_NAMES -> { } // rewritten from our own table
                case EXT_BITMAPS -> {
                    if (length != BITMAPS_EXT_LENGTH) {
                        throw new ImageException(file, "bitmaps_ext: Invalid extension length");
                    }
                    ByteBuffer ext = ByteBuffer.wrap(data);
                    h.bitmaps = new BitmapsExtension(ext.getInt(0), ext.getInt(4), ext.getLong(8), ext.getLong(16));
                }
                default -> h.keptExtensions.add(new Extension(type, data));
            }
            pos += (length + 7) & ~7;
        }
        if (backingOffset != 0) {
            if (backingSize <= 0 || backingSize > 1023 || backingOffset < 0 || backingOffset + backingSize > limit) {
                throw new ImageException(file, "invalid backing file name field (offset " + backingOffset
                        + ", size " + backingSize + ")");
            }
            byte[] name = new byte[backingSize];
            buf.get((int) backingOffset, name);
            h.backingFile = new String(name, StandardCharsets.UTF_8);
        }
        return h;
    }


    /**
     * Encodes the header, its extensions and the backing file name.
     *
     * @throws ImageException if they do not fit into the first cluster
     */
    ByteBuffer encode(String file) throws ImageException {
        try {
            return encode(file, version == 3);
        } catch (ImageException e) {
            return encode(file, false); // the feature name table is optional: small clusters may lack room
        }
    }

    private ByteBuffer encode(String file, boolean withFeatureNames) throws ImageException {
        ByteBuffer b = ByteBuffer.allocate(clusterSize());
        b.putInt(0, MAGIC);
        b.putInt(4, version);
        b.putInt(20, clusterBits);
        b.putLong(24, size);
        b.putInt(32, cryptMethod);
        b.putInt(36, l1Size);
        b.putLong(40, l1TableOffset);
        b.putLong(48, refcountTableOffset);
        b.putInt(56, refcountTableClusters);
        b.putInt(60, snapshotCount);
        b.putLong(64, snapshotsOffset);
        int pos;
        if (version == 3) {
            int length = V3_LENGTH + newerHeaderFields.length;
            b.put(V3_LENGTH, newerHeaderFields);
            b.putLong(72, incompatibleFeatures);
            b.putLong(80, compatibleFeatures);
            b.putLong(88, autoclearFeatures);
            b.putInt(96, refcountOrder);
            b.putInt(100, length);
            b.put(104, (byte) compressionType);
            pos = length;
        } else {
            pos = V2_LENGTH;
        }
        b.position(pos);
        try {
            if (backingFormat != null) {
                putExtension(b, EXT_BACKING_FORMAT, backingFormat.getBytes(StandardCharsets.UTF_8));
            }
            if (withFeatureNames) {
                putExtension(b, EXT_FEATURE_NAMES, featureNameTable());
            }
            if (bitmaps != null) { // where QEMU's qcow2_update_header puts it
                putExtension(b, EXT_BITMAPS, ByteBuffer.allocate(BITMAPS_EXT_LENGTH)
                        .putInt(bitmaps.count()).putInt(bitmaps.reserved())
                        .putLong(bitmaps.directorySize()).putLong(bitmaps.directoryOffset()).array());
            }
            for (Extension e : keptExtensions) {
                putExtension(b, e.type(), e.data());
            }
            b.putInt(EXT_END).putInt(0);
            if (backingFile != null) {
                byte[] name = backingFile.getBytes(StandardCharsets.UTF_8);
                if (name.length > 1023) {
                    throw new ImageException(file, "backing file name is longer than 1023 bytes");
                }
                b.putLong(8, b.position());
                b.putInt(16, name.length);
                b.put(name);
            }
        } catch (java.nio.BufferOverflowException e) {
            throw new ImageException(file, "header, extensions and backing file name do not fit into one cluster");
        }
        b.flip();
        return b;
    }

    private static void putExtension(ByteBuffer b, int type, byte[] data) {
        b.putInt(type).putInt(data.length).put(data);
        int pad = ((data.length + 7) & ~7) - data.length;
        b.put(new byte[pad]);
    }

    /** QEMU's feature name table, so that qemu-img can name the bits. */
    private static byte[] featureNameTable() {
        Object[][] features = {
            {0, 0, "dirty bit"}, {0, 1, "corrupt bit"}, {0, 2, "external data file"},
            {0, 3, "compression type"}, {0, 4, "extended L2 entries"},
            {1, 0, "lazy refcounts"}, {2, 0, "bitmaps"}, {2, 1, "raw external data"},
        };
        ByteBuffer t = ByteBuffer.allocate(48 * features.length);
        for (Object[] f : features) {
            byte[] name = new byte[46];
            byte[] s = ((String) f[2]).getBytes(StandardCharsets.US_ASCII);
            System.arraycopy(s, 0, name, 0, s.length);
            t.put((byte) (int) f[0]).put((byte) (int) f[1]).put(name);
        }
        return t.array();
    }
}
