package io.blockjobs.platform.image;

/**
 * What {@code qemu-img create -f qcow2} and QMP {@code blockdev-create} take for a qcow2 image.
 *
 * @param size          virtual size in bytes, a multiple of 512; -1 takes the backing file's size
 * @param clusterSize   512 B to 2 MiB, a power of two (QEMU's default: 64 KiB)
 * @param version       2 ({@code compat=0.10}) or 3 ({@code compat=1.1}, the default)
 * @param backingFile   the backing file name to record (relative names resolve against the
 *                      new image's folder), or null
 * @param backingFormat the backing file's format ({@code qcow2}, {@code raw}), or null to probe
 * @param refcountBits  1, 2, 4, 8, 16 (the default), 32 or 64; version 2 needs 16
 */
public record Qcow2CreateOptions(long size, int clusterSize, int version, String backingFile,
                                 String backingFormat, int refcountBits) {

    public static final int DEFAULT_CLUSTER_SIZE = 64 * 1024;

    /** A version 3 image with 64 KiB clusters and 16-bit refcounts. */
    public static Qcow2CreateOptions of(long size) {
        return new Qcow2CreateOptions(size, DEFAULT_CLUSTER_SIZE, 3, null, null, 16);
    }

    public Qcow2CreateOptions withClusterSize(int bytes) {
        return new Qcow2CreateOptions(size, bytes, version, backingFile, backingFormat, refcountBits);
    }

    public Qcow2CreateOptions withVersion(int v) {
        return new Qcow2CreateOptions(size, clusterSize, v, backingFile, backingFormat, refcountBits);
    }

    public Qcow2CreateOptions withBacking(String file, String format) {
        return new Qcow2CreateOptions(size, clusterSize, version, file, format, refcountBits);
    }

    public Qcow2CreateOptions withRefcountBits(int bits) {
        return new Qcow2CreateOptions(size, clusterSize, version, backingFile, backingFormat, bits);
    }
}
