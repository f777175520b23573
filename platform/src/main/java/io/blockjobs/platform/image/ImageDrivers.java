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
import java.util.ArrayList;
import java.util.List;

/**
 * The image drivers as the graph's registry holds them: {@code file}, {@code raw},
 * {@code qcow2}, {@code blkdebug}. Each reads QEMU's options for its driver and refuses what it
 * cannot honour.
 */
public final class ImageDrivers {
    private ImageDrivers() {
    }

    /** Every built-in image driver. */
    public static List<BlockDriver> all() {
        return List.of(FILE, RAW, QCOW2, BLKDEBUG);
    }

    private record Driver(String name, Opener opener) implements BlockDriver {
        @Override
        public DriverNode open(DriverContext context) throws IOException {
            return opener.open(context);
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
        try {
            ctx.backing(qcow2.backingFileName(), qcow2.backingFormat()).ifPresent(qcow2::setBacking);
        } catch (RuntimeException e) {
            qcow2.close();
            throw e;
        }
        return qcow2;
    });

    /** QEMU's {@code blkdebug}, subset: {@code image} and {@code inject-error}, for fault tests. */
    public static final BlockDriver BLKDEBUG = new Driver("blkdebug", ctx -> {
        DriverOptions o = ctx.options();
        List<BlkdebugNode.Rule> rules = new ArrayList<>();
        for (DriverOptions r : o.objects("inject-error")) {
            String event = r.string("event");
            String iotype = r.optString("iotype");
            if (iotype == null) {
                iotype = event.startsWith("read") ? "read" : event.startsWith("write") ? "write" : null;
            }
            Long sector = r.optInteger("sector");
            Long errno = r.optInteger("errno");
            boolean once = r.bool("once", false);
            r.ignore("state", "immediately");
            r.checkAllUsed();
            rules.add(new BlkdebugNode.Rule(iotype, sector == null ? -1 : sector, errno == null ? 5 : errno.intValue(),
                    once));
        }
        o.ignore("config", "align", "set-state", "max-transfer", "opt-write-zero", "max-write-zero",
                "opt-discard", "max-discard", "take-child-perms", "unshare-child-perms");
        BlockNode image = ctx.child("image", ChildRole.FILTERED);
        return new BlkdebugNode(image, rules);
    });

    private static String reason(Exception e) {
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }
}
