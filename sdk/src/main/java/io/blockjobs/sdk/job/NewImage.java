package io.blockjobs.sdk.job;

/**
 * An image file a job creates for itself and opens as a node ({@link JobSetup#createImage}), as
 * QEMU's {@code drive-mirror} and {@code drive-backup} create their target with
 * {@code bdrv_img_create}.
 *
 * @param filename      the file to create; an existing file is overwritten
 * @param format        the image format: {@code qcow2} or {@code raw}
 * @param size          the virtual size in bytes
 * @param backingFile   the backing file name to record in the new image's header (qcow2 only;
 *                      relative names resolve against the new image's directory), or null for
 *                      none
 * @param backingFormat the backing file's format to record, or null (with a backing file: probed
 *                      by whoever opens the chain)
 * @param nodeName      the node name to give the opened image, or null for a generated one
 * @param optionsFrom   the node whose cache mode and discard policy the new node takes, as QEMU
 *                      opens drive-mirror's and drive-backup's target with the source's open
 *                      flags; null for the defaults
 */
public record NewImage(String filename, String format, long size, String backingFile, String backingFormat,
                       String nodeName, String optionsFrom) {

    /** Checks the required members. */
    public NewImage {
        if (filename == null || filename.isEmpty() || format == null || format.isEmpty()) {
            throw new IllegalArgumentException("a new image needs a file name and a format");
        }
        if (size < 0) {
            throw new IllegalArgumentException("negative size " + size);
        }
        if (backingFile == null && backingFormat != null) {
            throw new IllegalArgumentException("a backing format without a backing file");
        }
    }

    /** An image of {@code size} bytes without a backing file, with a generated node name. */
    public static NewImage of(String filename, String format, long size) {
        return new NewImage(filename, format, size, null, null, null, null);
    }

    /** This image with {@code file} (of {@code fileFormat}, or null) recorded as its backing file. */
    public NewImage withBacking(String file, String fileFormat) {
        return new NewImage(filename, format, size, file, fileFormat, nodeName, optionsFrom);
    }

    /** This image opened under the node name {@code name}. */
    public NewImage withNodeName(String name) {
        return new NewImage(filename, format, size, backingFile, backingFormat, name, optionsFrom);
    }

    /** This image opened with the cache and discard options of node {@code node}. */
    public NewImage withOptionsOf(String node) {
        return new NewImage(filename, format, size, backingFile, backingFormat, nodeName, node);
    }
}
