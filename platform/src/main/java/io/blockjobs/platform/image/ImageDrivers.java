package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.driver.OpenFlags;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The image drivers as the graph's registry holds them: {@code file}, {@code raw},
 * {@code qcow2}, {@code blkdebug}, {@code null-co}, {@code null-aio}, {@code rbd}. Each reads QEMU's options
 * for its driver and refuses what it cannot honour.
 */
public final class ImageDrivers {
    private ImageDrivers() {
    }

    /** Every built-in image driver. */
    public static List<BlockDriver> all() {
        return List.of(FILE, RAW, QCOW2, BLKDEBUG, NULL_CO, NULL_AIO, RBD);
    }

    private record Driver(String name, Opener opener) implements BlockDriver {
        @Override
        public DriverNode open(DriverContext context) throws IOException {
            return opener.open(context);
        }

        @Override
        public List<io.blockjobs.sdk.driver.OptionSpec> options() {
            return DriverSchemas.of(name);
        }
    }

    @FunctionalInterface
    private interface Opener {
        DriverNode open(DriverContext ctx) throws IOException;
    }

    /** QEMU's {@code file} ({@code BlockdevOptionsFile}). */
    public static final BlockDriver FILE = new Driver("file", ctx -> {
        DriverOptions o = ctx.options();
        String filename = o.string("filename");
        String locking = o.optString("locking");
        boolean lock = switch (locking == null ? "auto" : locking) {
            case "auto", "on" -> true;
            case "off" -> false;
            default -> throw new CommandException("Parameter 'locking' does not accept value '" + locking + "'");
        };
        String aio = o.optString("aio");
        if (aio != null && !aio.equals("threads") && !aio.equals("native") && !aio.equals("io_uring")) {
            throw new CommandException("Parameter 'aio' does not accept value '" + aio + "'");
        }
        o.ignore("aio-max-batch", "drop-cache", "x-check-cache-dropped", "pr-manager");
        o.checkAllUsed(); // QEMU refuses unknown members before it touches the file
        OpenFlags f = ctx.flags();
        try {
            return FileNode.open(Path.of(filename), new FileNode.Mode(!f.readOnly(), f.autoReadOnly(), f.cacheDirect(),
                    lock, f.forceShare()));
        } catch (ImageLockedException e) {
            throw new CommandException(e.qemuMessage()); // QEMU's QMP error names only the lock
        } catch (IOException e) {
            boolean denied = e instanceof BlockIoException b && b.errno() == Errno.EACCES;
            throw new CommandException("Could not open '" + filename + "': " + (denied ? Errno.EACCES.message() : reason(e)));
        }
    });

    /** QEMU's {@code raw} ({@code BlockdevOptionsRaw}): the whole file, no offset or size window. */
    public static final BlockDriver RAW = new Driver("raw", ctx -> {
        DriverOptions o = ctx.options();
        if (o.has("offset") || o.has("size")) {
            throw new CommandException("raw's 'offset' and 'size' are not supported: the image is the whole file");
        }
        BlockNode file = ctx.child("file", ChildRole.FILTERED);
        return new RawNode(file);
    });

    /** QEMU's {@code qcow2} ({@code BlockdevOptionsQcow2}). */
    public static final BlockDriver QCOW2 = new Driver("qcow2", ctx -> {
        DriverOptions o = ctx.options();
        BlockNode file = ctx.child("file", ChildRole.STORAGE);
        o.ignore("lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
                "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
                "cache-clean-interval", "discard-no-unref");
        if (o.has("encrypt")) {
            throw new CommandException("encrypted qcow2 images are not supported");
        }
        if (o.has("data-file")) {
            throw new CommandException("qcow2 external data files are not supported");
        }
        Qcow2Node qcow2;
        try {
            qcow2 = Qcow2Node.open(file, !ctx.readOnly(), (name, format) -> null, false);
        } catch (IOException e) {
            throw new CommandException(reason(e));
        }
        qcow2.setNodeName(ctx.nodeName());
        try {
            ctx.backing(qcow2.backingFileName(), qcow2.backingFormat()).ifPresent(qcow2::setBacking);
        } catch (RuntimeException e) {
            qcow2.close();
            throw e;
        }
        return qcow2;
    });

    /** QEMU's {@code blkdebug} ({@code BlockdevOptionsBlkdebug}): see {@link BlkdebugNode}. */
    public static final BlockDriver BLKDEBUG = new Driver("blkdebug", BlkdebugOptions::open);

    /** QEMU's {@code null-co} ({@code BlockdevOptionsNull}): see {@link NullCoNode}. */
    public static final BlockDriver NULL_CO = new Driver("null-co", ctx -> nullNode("null-co", ctx));

    /** QEMU's {@code null-aio}: the same device as {@code null-co}, under its own name. */
    public static final BlockDriver NULL_AIO = new Driver("null-aio", ctx -> nullNode("null-aio", ctx));

    /**
     * QEMU's {@code rbd} ({@code BlockdevOptionsRbd}): see {@link RbdNode}. {@code encrypt} is
     * refused; the rest is honoured.
     */
    public static final BlockDriver RBD = new Driver("rbd", ctx -> {
        DriverOptions o = ctx.options();
        RbdNode.Config config = rbdConfig(o, id -> ctx.object(id, Secret.class), !ctx.flags().cacheDirect());
        return RbdNode.open(config, ctx.nodeName(), ctx.readOnly(), ctx.flags().autoReadOnly());
    });

    /**
     * {@code BlockdevOptionsRbd} read, with QEMU's messages ({@code blockdev-add}'s, and
     * {@code blockdev-create}'s {@code location}).
     *
     * @param secrets the secret object of an id ({@code key-secret}); throws if there is none
     * @param cache   librbd's cache ({@code rbd_cache})
     */
    public static RbdNode.Config rbdConfig(DriverOptions o, java.util.function.Function<String, Secret> secrets,
                                           boolean cache) {
        String pool = o.string("pool");
        String namespace = o.optString("namespace");
        String image = o.string("image");
        String conf = o.optString("conf");
        String snapshot = o.optString("snapshot");
        String user = o.optString("user");
        List<String> auth = o.strings("auth-client-required");
        for (String mode : auth) {
            if (!mode.equals("cephx") && !mode.equals("none")) {
                throw new CommandException("Parameter 'auth-client-required' does not accept value '" + mode + "'");
            }
        }
        String keySecret = o.optString("key-secret");
        List<String> servers = new java.util.ArrayList<>();
        List<Map<String, Object>> serverNames = new java.util.ArrayList<>();
        for (DriverOptions s : o.objects("server")) {
            String host = s.string("host");
            String port = s.string("port");
            s.checkAllUsed();
            servers.add(host.indexOf(':') >= 0 ? "[" + host + "]:" + port : host + ":" + port);
            Map<String, Object> name = new LinkedHashMap<>();
            name.put("host", host);
            name.put("port", port);
            serverNames.add(name);
        }
        List<String> pairs = o.strings("=keyvalue-pairs"); // from an rbd: name's :opt=val list
        if (o.has("encrypt")) {
            throw new CommandException("rbd image encryption is not supported");
        }
        o.checkAllUsed();
        String key = null;
        if (keySecret != null) {
            Secret secret;
            try {
                secret = secrets.apply(keySecret);
            } catch (CommandException e) {
                throw new CommandException("No secret with id '" + keySecret + "'");
            }
            byte[] value = secret.value();
            key = java.util.Base64.getEncoder().encodeToString(value);
            java.util.Arrays.fill(value, (byte) 0);
        }
        Map<String, Object> strong = new LinkedHashMap<>(); // QEMU's qemu_rbd_strong_runtime_opts
        strong.put("pool", pool);
        if (namespace != null) {
            strong.put("namespace", namespace);
        }
        strong.put("image", image);
        if (conf != null) {
            strong.put("conf", conf);
        }
        if (snapshot != null) {
            strong.put("snapshot", snapshot);
        }
        if (user != null) {
            strong.put("user", user);
        }
        if (!serverNames.isEmpty()) {
            strong.put("server", serverNames);
        }
        return new RbdNode.Config(pool, namespace, image, conf, snapshot, user, auth, key, servers, RbdNode.pairs(pairs),
                cache, strong);
    }

    /**
     * QEMU's {@code qemu_rbd_parse_filename}: {@code rbd:pool/[namespace/]image[@snapshot][:opt=val...]},
     * where a backslash escapes the next character; {@code conf} and {@code id} are options of their
     * own, the rest librados settings.
     */
    static Map<String, Object> parseRbdFilename(String filename) {
        if (!filename.startsWith("rbd:")) {
            throw new CommandException("File name must start with 'rbd:'");
        }
        String rest = filename.substring("rbd:".length());
        Map<String, Object> out = new LinkedHashMap<>();
        String[] poolRest = token(rest, '/');
        if (poolRest[1] == null) {
            throw new CommandException("Pool name is required");
        }
        out.put("pool", unescape(poolRest[0]));
        rest = poolRest[1];
        String[] nameRest = token(rest, ':');
        String path = nameRest[0];
        String[] nsImage = token(path, '/');
        String image = path;
        out.put("namespace", "");
        if (nsImage[1] != null) {
            out.put("namespace", unescape(nsImage[0]));
            image = nsImage[1];
        }
        String[] imageSnap = token(image, '@');
        out.put("image", unescape(imageSnap[0]));
        if (imageSnap[1] != null) {
            out.put("snapshot", unescape(imageSnap[1]));
        }
        List<String> pairs = new java.util.ArrayList<>();
        String opts = nameRest[1];
        while (opts != null && !opts.isEmpty()) {
            String[] kv = token(opts, ':');
            String[] nv = token(kv[0], '=');
            if (nv[1] == null) {
                throw new CommandException("conf option " + unescape(nv[0]) + " has no value");
            }
            String name = unescape(nv[0]);
            String value = unescape(nv[1]);
            switch (name) {
                case "conf" -> out.put("conf", value);
                case "id" -> out.put("user", value);
                default -> {
                    pairs.add(name);
                    pairs.add(value);
                }
            }
            opts = kv[1];
        }
        if (!pairs.isEmpty()) {
            out.put("=keyvalue-pairs", pairs);
        }
        return out;
    }

    /** The text before the first unescaped {@code delim} and the rest after it (null: none). */
    private static String[] token(String s, char delim) {
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch == '\\' && i + 1 < s.length()) {
                i++;
            } else if (ch == delim) {
                return new String[] {s.substring(0, i), s.substring(i + 1)};
            }
        }
        return new String[] {s, null};
    }

    private static String unescape(String s) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch == '\\' && i + 1 < s.length()) {
                ch = s.charAt(++i);
            }
            b.append(ch);
        }
        return b.toString();
    }

    /** The largest size QEMU takes (its {@code BDRV_MAX_LENGTH}: INT64_MAX rounded down to 1 GiB). */
    private static final long MAX_LENGTH = Long.MAX_VALUE & -(1L << 30);

    private static DriverNode nullNode(String driver, DriverContext ctx) {
        DriverOptions o = ctx.options();
        Map<String, Object> given = new LinkedHashMap<>();
        Long size = o.optInteger("size");
        if (size != null) {
            // QEMU 7.2 aborts on a negative size (null_file_open absorbs its options with &error_abort)
            if (size < 0) {
                throw new CommandException("Parameter 'size' expects a non-negative number below 2^64");
            }
            if (((size + 511) & -512L) > MAX_LENGTH || size > MAX_LENGTH) {
                throw new CommandException("Could not refresh total sector count: File too large");
            }
            given.put("size", size);
        }
        Long latency = o.optInteger("latency-ns");
        if (latency != null) {
            if (latency < 0) {
                throw new CommandException("latency-ns is invalid");
            }
            given.put("latency-ns", latency);
        }
        boolean zeroes = o.bool("read-zeroes", false);
        if (o.has("read-zeroes")) {
            given.put("read-zeroes", zeroes);
        }
        return new NullCoNode(driver, size == null ? 1L << 30 : size, latency == null ? 0 : latency, zeroes, given);
    }

    /**
     * QEMU's {@code bdrv_parse_filename} for the protocols whose {@code filename} stands for
     * options, which the graph calls before it opens such a node: {@code blkdebug:CONFIG:IMAGE}
     * becomes {@code config} and an {@code image} child opened as a protocol node from IMAGE
     * ({@code blkdebug::IMAGE} has no config; a name without the prefix is the image alone), and
     * {@code null-co://} is the only name {@code null-co} takes. QEMU takes these names only as a
     * command line's file name ({@code qemu-io -f blkdebug blkdebug:...}); blockjobs also takes
     * them as the {@code filename} member.
     *
     * @param given the node's other members
     * @return the members that replace {@code filename}, or null if the driver has no such
     *         names ({@code file}'s filename is an option of its own)
     */
    public static Map<String, Object> parseFilename(String driver, String filename, Set<String> given) {
        switch (driver) {
            case "blkdebug" -> {
                if (given.contains("image")) {
                    throw new CommandException("Can't specify 'image' and 'filename' options at the same time");
                }
                Map<String, Object> out = new LinkedHashMap<>();
                String imageName = filename;
                if (filename.startsWith("blkdebug:")) {
                    String rest = filename.substring("blkdebug:".length());
                    int colon = rest.indexOf(':');
                    if (colon < 0) {
                        throw new CommandException("blkdebug requires both config file and image path");
                    }
                    if (colon > 0) {
                        out.put("config", rest.substring(0, colon));
                    }
                    imageName = rest.substring(colon + 1);
                }
                Map<String, Object> image = new LinkedHashMap<>();
                String protocol = protocol(imageName);
                image.put("driver", protocol);
                // file-posix drops its own prefix; the others parse their names themselves
                image.put("filename", protocol.equals("file") && imageName.startsWith("file:")
                        ? imageName.substring("file:".length()) : imageName);
                out.put("image", image);
                return out;
            }
            case "rbd" -> {
                return parseRbdFilename(filename);
            }
            case "null-co", "null-aio" -> {
                if (!filename.equals(driver + "://")) {
                    throw new CommandException("The only allowed filename for this driver is '" + driver + "://'");
                }
                return Map.of();
            }
            default -> {
                return null;
            }
        }
    }

    /**
     * QEMU's {@code bdrv_find_protocol}: a name whose first {@code ':'} comes before any
     * {@code '/'} starts with its protocol; others are files.
     */
    private static String protocol(String filename) {
        int end = 0;
        while (end < filename.length() && ":/".indexOf(filename.charAt(end)) < 0) {
            end++;
        }
        if (end == filename.length() || filename.charAt(end) != ':') {
            return "file";
        }
        String p = filename.substring(0, end);
        return switch (p) {
            case "file", "blkdebug", "null-co", "null-aio", "rbd" -> p;
            default -> throw new CommandException("Unknown protocol '" + p + "'");
        };
    }

    private static String reason(Exception e) {
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }
}
