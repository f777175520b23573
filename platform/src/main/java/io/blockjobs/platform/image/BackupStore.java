package io.blockjobs.platform.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.function.Function;

/**
 * The backup store: one folder the operator names, in which backup policies create, list, seal and
 * delete images and manifests by relative name, without being given a file system. Every name is
 * checked: no absolute paths, no {@code ..}, no symbolic link on the way, so nothing outside the
 * folder is ever reached; an image that an open node or another image's backing chain uses is
 * never deleted.
 *
 * <p>A new image carries a marker ({@code NAME.partial}) until it is sealed, so a backup cut short
 * by a failure or a killed daemon never looks complete.
 */
public final class BackupStore {
    /** The suffix of the marker that says an image is not a finished backup yet. */
    public static final String PARTIAL = ".partial";
    private static final long MAX_TEXT = 1 << 20; // manifests are small; refuse to shovel big files over QMP

    private final Path root;

    /**
     * @param root the store's folder; created if missing
     */
    public BackupStore(Path root) throws IOException {
        Files.createDirectories(root);
        this.root = root.toRealPath();
    }

    /** The store's folder, as a real path. */
    public Path root() {
        return root;
    }

    /** One file of the store, as {@code x-backup-store-list} shows it. */
    public record Entry(String name, String type, long size, String modified, Optional<String> backing,
                        boolean partial) {
    }

    /** The result of sealing or checking an image: its length and the SHA-256 of its bytes. */
    public record Digest(long size, String sha256) {
    }

    /**
     * Resolves a name given by a client to a path inside the store.
     *
     * @throws ImageException if the name is absolute, climbs out with {@code ..}, or passes
     *         through a symbolic link
     */
    public Path resolve(String name) throws ImageException {
        if (name == null || name.isEmpty()) {
            throw new ImageException(root.toString(), "a backup store name must not be empty");
        }
        if (name.startsWith("/")) {
            throw new ImageException(name, "absolute paths are refused; name a file relative to the backup store "
                    + root);
        }
        Path p = root;
        for (String part : name.split("/")) {
            if (part.isEmpty() || part.equals(".")) {
                continue;
            }
            if (part.equals("..")) {
                throw new ImageException(name, "'..' would lead outside the backup store " + root);
            }
            if (part.indexOf('\0') >= 0) {
                throw new ImageException(name, "a name must not contain NUL");
            }
            p = p.resolve(part);
            if (Files.isSymbolicLink(p)) {
                throw new ImageException(name, "'" + root.relativize(p)
                        + "' is a symbolic link, which the backup store does not follow");
            }
        }
        if (p.equals(root)) {
            throw new ImageException(name, "names the backup store itself, not a file in it");
        }
        return p;
    }

    /** The name of a path of the store, relative to its folder. */
    public String nameOf(Path p) {
        return root.relativize(p).toString();
    }

    /**
     * Creates a qcow2 image (with its partial marker) for a backup, with an optional backing file
     * given by its store name; the image names its backing file relative to its own folder, so
     * the store can move as a whole.
     *
     * @return the absolute file name, for {@code blockdev-add}
     */
    public Path create(String name, long size, Optional<String> backing, Optional<Integer> clusterSize)
            throws IOException {
        Path p = resolve(name);
        Qcow2CreateOptions o = Qcow2CreateOptions.of(size);
        if (clusterSize.isPresent()) {
            o = o.withClusterSize(clusterSize.get());
        }
        if (backing.isPresent()) {
            Path b = resolve(backing.get());
            if (!Files.isRegularFile(b, LinkOption.NOFOLLOW_LINKS)) {
                throw new ImageException(backing.get(), "no such image in the backup store");
            }
            String format;
            try (FileNode f = FileNode.open(b, false)) {
                format = Images.probe(f);
            }
            o = o.withBacking(p.getParent().relativize(b).toString(), format);
        }
        createParents(p);
        Path marker = markerOf(p);
        try {
            Files.createFile(p);
        } catch (FileAlreadyExistsException e) {
            throw new ImageException(name, "already exists in the backup store; choose another name or delete it first");
        }
        try {
            Files.createFile(marker);
        } catch (FileAlreadyExistsException e) {
            // a marker left by an earlier attempt under the same name: it says the same thing
        }
        try {
            Images.createQcow2(p, o);
        } catch (IOException | RuntimeException e) {
            Files.deleteIfExists(p);
            Files.deleteIfExists(marker);
            throw e;
        }
        syncDir(p.getParent());
        return p;
    }

    /**
     * Marks an image as a finished backup: flushes it, removes its partial marker, and returns its
     * size and SHA-256 (for the manifest).
     */
    public Digest seal(String name) throws IOException {
        Path p = existingFile(name);
        try (FileChannel c = FileChannel.open(p, StandardOpenOption.WRITE)) {
            c.force(true);
        }
        Digest d = digest(name);
        Files.deleteIfExists(markerOf(p));
        syncDir(p.getParent());
        return d;
    }

    /** The size and SHA-256 of a file of the store. */
    public Digest digest(String name) throws IOException {
        Path p = existingFile(name);
        MessageDigest sha;
        try {
            sha = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        long size = 0;
        byte[] buf = new byte[1 << 20];
        try (InputStream in = Files.newInputStream(p, LinkOption.NOFOLLOW_LINKS)) {
            for (int n; (n = in.read(buf)) > 0; ) {
                sha.update(buf, 0, n);
                size += n;
            }
        }
        return new Digest(size, HexFormat.of().formatHex(sha.digest()));
    }

    /**
     * Deletes a file of the store (and its partial marker), then the folders it leaves empty.
     *
     * @param openBy the node that has a path open, or null: such files are refused
     */
    public void delete(String name, Function<Path, String> openBy) throws IOException {
        Path p = existingFile(name);
        String node = openBy.apply(p);
        if (node != null) {
            throw new ImageException(name, "is in use by node '" + node + "'; blockdev-del it first");
        }
        for (Entry e : list()) {
            if (e.backing().isPresent() && e.backing().get().equals(nameOf(p))) {
                throw new ImageException(name, "is the backing file of '" + e.name()
                        + "' in the backup store; delete that image first");
            }
        }
        Files.delete(p);
        Files.deleteIfExists(markerOf(p));
        for (Path dir = p.getParent(); !dir.equals(root) && isEmptyDir(dir); dir = dir.getParent()) {
            Files.delete(dir);
        }
        syncDir(p.getParent().toFile().exists() ? p.getParent() : root);
    }

    /** Reads a small text file of the store (a manifest). */
    public String read(String name) throws IOException {
        Path p = existingFile(name);
        if (!p.getFileName().toString().endsWith(".json")) {
            throw new ImageException(name, "only manifests (names ending in .json) can be read");
        }
        if (Files.size(p) > MAX_TEXT) {
            throw new ImageException(name, "is larger than " + MAX_TEXT + " bytes; only manifests can be read");
        }
        return Files.readString(p, StandardCharsets.UTF_8);
    }

    /**
     * Replaces a text file (a manifest, whose name must end in {@code .json}) atomically: written
     * beside it, synced, then renamed over it, so a crash leaves the old one or the new one.
     */
    public void write(String name, String text) throws IOException {
        Path p = resolve(name);
        if (!p.getFileName().toString().endsWith(".json")) {
            throw new ImageException(name, "only manifests (names ending in .json) can be written");
        }
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        if (bytes.length > MAX_TEXT) {
            throw new ImageException(name, "a manifest must be smaller than " + MAX_TEXT + " bytes");
        }
        if (Files.exists(p, LinkOption.NOFOLLOW_LINKS) && !Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
            throw new ImageException(name, "is not a regular file");
        }
        createParents(p);
        Path tmp = p.resolveSibling("." + p.getFileName() + ".tmp");
        try (FileChannel c = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING, LinkOption.NOFOLLOW_LINKS)) {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                c.write(b);
            }
            c.force(true);
        }
        Files.move(tmp, p, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        syncDir(p.getParent());
    }

    /** Every file of the store (temporary files and markers aside), by name. */
    public List<Entry> list() throws IOException {
        List<Entry> out = new ArrayList<>();
        walk(root, out);
        out.sort(java.util.Comparator.comparing(Entry::name));
        return out;
    }

    private void walk(Path dir, List<Entry> out) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            for (Path p : s) {
                BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
                String file = p.getFileName().toString();
                if (a.isDirectory()) {
                    walk(p, out);
                } else if (a.isRegularFile() && !file.endsWith(PARTIAL) && !file.startsWith(".")) {
                    out.add(entry(p, a));
                }
            }
        }
    }

    private Entry entry(Path p, BasicFileAttributes a) {
        String type = "other";
        Optional<String> backing = Optional.empty();
        if (p.getFileName().toString().endsWith(".json")) {
            type = "manifest";
        } else {
            // A plain read, not FileNode: an image a node has open (and locked) is listed too.
            try (FileChannel c = FileChannel.open(p, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
                ByteBuffer buf = ByteBuffer.allocate((int) Math.min(c.size(), 2L << 20)); // header and extensions
                while (buf.hasRemaining() && c.read(buf, buf.position()) > 0) {
                    // read on
                }
                buf.flip();
                type = buf.remaining() >= 4 && buf.getInt(0) == Qcow2Header.MAGIC ? "qcow2" : "raw";
                if (type.equals("qcow2")) {
                    backing = backingName(p, Qcow2Header.parse(p.toString(), buf).backingFile);
                }
            } catch (IOException | RuntimeException e) {
                type = "unreadable";
            }
        }
        return new Entry(nameOf(p), type, a.size(), a.lastModifiedTime().toInstant().toString(), backing,
                Files.exists(markerOf(p), LinkOption.NOFOLLOW_LINKS));
    }

    /** A backing file name as the store names it (or as it is, if it lies outside the store). */
    private Optional<String> backingName(Path p, String name) throws ImageException {
        if (name == null) {
            return Optional.empty();
        }
        Path b = Images.resolveBacking(p, name).normalize();
        return b.startsWith(root) ? Optional.of(nameOf(b)) : Optional.of(b.toString());
    }

    private Path existingFile(String name) throws IOException {
        Path p = resolve(name);
        if (!Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
            throw new ImageException(name, "no such file in the backup store");
        }
        return p;
    }

    private void createParents(Path p) throws IOException {
        Path dir = p.getParent();
        if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
            if (Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
                throw new ImageException(nameOf(p), "'" + nameOf(dir) + "' is not a folder");
            }
            Files.createDirectories(dir);
        }
    }

    private static Path markerOf(Path p) {
        return p.resolveSibling(p.getFileName() + PARTIAL);
    }

    private static boolean isEmptyDir(Path dir) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            return !s.iterator().hasNext();
        }
    }

    /** Makes a folder's new or removed entries durable (an fsync of the folder). */
    private static void syncDir(Path dir) {
        try (FileChannel c = FileChannel.open(dir, StandardOpenOption.READ)) {
            c.force(true);
        } catch (IOException e) {
            // some file systems refuse to sync a folder; the data itself is already synced
        }
    }
}
