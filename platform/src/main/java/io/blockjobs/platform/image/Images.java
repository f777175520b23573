package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashSet;
import java.util.Set;

/**
 * Opening and creating images as QEMU does: format probing, backing chains resolved relative to
 * the overlay's folder, read-only backing files, loops refused.
 */
public final class Images {

    private Images() {
    }

    /**
     * Opens an image and its whole backing chain (backing files read-only).
     *
     * @param format {@code qcow2}, {@code raw}, or null to probe
     */
    public static BlockNode open(Path path, String format, boolean readWrite) throws IOException {
        return open(path, format, readWrite, new HashSet<>());
    }

    private static BlockNode open(Path path, String format, boolean readWrite, Set<Path> chain) throws IOException {
        Path real;
        try {
            real = path.toRealPath();
        } catch (NoSuchFileException e) {
            throw new ImageException(path.toString(), "no such file");
        }
        if (!chain.add(real)) {
            throw new ImageException(path.toString(), "backing chain loops: this image is already part of it");
        }
        FileNode file = FileNode.open(path, readWrite);
        try {
            String fmt = format != null ? format : probe(file);
            return switch (fmt) {
                case "raw" -> new RawNode(file);
                case "qcow2" -> Qcow2Node.open(file, readWrite,
                        (name, backingFormat) -> open(resolveBacking(path, name), backingFormat, false, chain));
                default -> throw new ImageException(path.toString(), "unsupported image format '" + fmt
                        + "' (blockjobs reads qcow2 and raw)");
            };
        } catch (IOException | RuntimeException e) {
            file.close();
            throw e;
        }
    }

    /** The format of an image by its content: qcow2 by its magic, raw otherwise. */
    public static String probe(BlockNode file) throws IOException {
        ByteBuffer magic = ByteBuffer.allocate(4);
        file.read(0, magic);
        return file.size() >= 4 && magic.getInt(0) == Qcow2Header.MAGIC ? "qcow2" : "raw";
    }

    /**
     * Where a backing file name points, as QEMU resolves it: absolute names as they are,
     * relative ones against the folder of the overlay (as the overlay was named, not its target);
     * a {@code file:} prefix is QEMU's file protocol and is stripped.
     *
     * @throws ImageException for protocol names ({@code nbd:...}, {@code json:...}) it cannot open
     */
    public static Path resolveBacking(Path overlay, String backingName) throws ImageException {
        if (backingName.startsWith("file:")) {
            // QEMU's file protocol: the rest is the path, taken as it is. QEMU does not make a
            // protocol name absolute against the overlay's folder, so a relative one is relative
            // to the daemon's working directory, as with qemu-img.
            return Path.of(backingName.substring("file:".length()));
        }
        int colon = backingName.indexOf(':');
        int slash = backingName.indexOf('/');
        if (colon > 0 && (slash < 0 || colon < slash)) {
            throw new ImageException(overlay.toString(), "backing file '" + backingName
                    + "' uses a protocol blockjobs cannot open; only local files are supported");
        }
        Path b = Path.of(backingName);
        if (b.isAbsolute()) {
            return b;
        }
        Path dir = overlay.toAbsolutePath().getParent();
        return dir == null ? b : dir.resolve(b);
    }

    /** Creates (or overwrites) a raw image of {@code size} bytes, sparse. */
    public static void createRaw(Path path, long size) throws IOException {
        if (size < 0) {
            throw new ImageException(path.toString(), "invalid size " + size);
        }
        Files.newByteChannel(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE).close();
        try (FileNode file = FileNode.open(path, true)) {
            file.truncate(0);
            file.truncate(size);
            file.flush();
        }
    }

    /** Creates (or overwrites) a qcow2 image. */
    public static void createQcow2(Path path, Qcow2CreateOptions options) throws IOException {
        Qcow2Create.create(path, options);
    }

    /** Formats an open, writable file node as a new qcow2 image (QMP {@code blockdev-create}). */
    public static void createQcow2(FileNode file, Qcow2CreateOptions options) throws IOException {
        Qcow2Create.create(file, options);
    }
}
