package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Lays out a new qcow2 image as {@code qemu-img create} does. */
final class Qcow2Create {

    private Qcow2Create() {
    }

    static void create(Path path, Qcow2CreateOptions o) throws IOException {
        Files.newByteChannel(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE).close();
        try (FileNode file = FileNode.open(path, true)) {
            create(file, o);
        }
    }

    /** Formats the file behind {@code file} (open read-write) as a new qcow2 image. */
    static void create(FileNode file, Qcow2CreateOptions o) throws IOException {
        Path path = file.path();
        String name = path.toString();
        int cs = o.clusterSize();
        if (cs < 512 || cs > (2 << 20) || Integer.bitCount(cs) != 1) {
            throw new ImageException(name, "cluster size " + cs + " must be a power of two between 512 and 2097152");
        }
        if (o.version() != 2 && o.version() != 3) {
            throw new ImageException(name, "version must be 2 (compat=0.10) or 3 (compat=1.1), not " + o.version());
        }
        int refcountBits = o.refcountBits();
        if (Integer.bitCount(refcountBits) != 1 || refcountBits > 64 || o.version() == 2 && refcountBits != 16) {
            throw new ImageException(name, "refcount bits must be a power of two up to 64 (16 for version 2), not "
                    + refcountBits);
        }
        long size = o.size();
        String backingFormat = o.backingFormat();
        if (o.backingFile() != null && (size < 0 || backingFormat == null)) {
            try (BlockNode backing = Images.open(Images.resolveBacking(path, o.backingFile()), backingFormat, false)) {
                if (size < 0) {
                    size = backing.size();
                }
                if (backingFormat == null) {
                    backingFormat = backing.driver();
                }
            }
        }
        if (size < 0 || size % 512 != 0) {
            throw new ImageException(name, "image size " + size + " must be a non-negative multiple of 512 bytes");
        }
        int clusterBits = Integer.numberOfTrailingZeros(cs);
        long perL1 = 1L << (clusterBits + clusterBits - 3);
        long l1Size = Math.max(1, (size + perL1 - 1) / perL1);
        if (l1Size * 8 > Qcow2Node.MAX_L1_BYTES) {
            throw new ImageException(name, "image size " + size + " is too large for " + cs + "-byte clusters");
        }

        Qcow2Header h = new Qcow2Header();
        h.version = o.version();
        h.clusterBits = clusterBits;
        h.size = size;
        h.refcountOrder = Integer.numberOfTrailingZeros(refcountBits);
        h.headerLength = h.version == 3 ? Qcow2Header.V3_LENGTH : Qcow2Header.V2_LENGTH;
        h.refcountTableOffset = cs;
        h.refcountTableClusters = 1;
        h.backingFile = o.backingFile();
        h.backingFormat = o.backingFile() == null ? null : backingFormat;

        {
            file.truncate(0);
            // Cluster 1: the refcount table; cluster 2: its first block, counting clusters 0-2.
            long[] table = new long[cs / 8];
            table[0] = 2L * cs;
            file.write(0, h.encode(name));
            file.write(cs, ByteBuffer.allocate(cs).putLong(0, table[0]).clear());
            file.write(2L * cs, ByteBuffer.allocate(cs));
            Qcow2Refcounts refcounts = new Qcow2Refcounts(file, h, table);
            for (long c = 0; c < 3; c++) {
                refcounts.adjust(c, 1);
            }
            int l1Clusters = (int) ((l1Size * 8 + cs - 1) / cs);
            long l1Offset = refcounts.allocateContiguous(l1Clusters);
            file.writeZeroes(l1Offset, (long) l1Clusters * cs, false);
            h.l1TableOffset = l1Offset;
            h.l1Size = (int) l1Size;
            file.write(0, h.encode(name));
            file.flush();
        }
    }
}
