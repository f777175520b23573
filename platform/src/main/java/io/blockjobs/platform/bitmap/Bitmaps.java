package io.blockjobs.platform.bitmap;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.image.PersistentBitmaps;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Every node's dirty bitmaps, and QEMU's bitmap operations on them with its checks and messages
 * ({@code block/monitor/bitmap-qmp-cmds.c}, {@code block/dirty-bitmap.c}). Persistent bitmaps
 * load when their node opens and are stored when it closes (a clean shutdown or
 * {@code blockdev-del}), through the image's {@link PersistentBitmaps}.
 */
public final class Bitmaps implements BlockGraph.NodeListener {
    private static final Logger LOG = LoggerFactory.getLogger(Bitmaps.class);

    private final BlockGraph graph;
    private final Map<GraphNode, NodeBitmaps> byNode = new ConcurrentHashMap<>();

    public Bitmaps(BlockGraph graph) {
        this.graph = graph;
        graph.addNodeListener(this);
    }

    /** The node's bitmaps, made (and its marking hook installed) on first use. */
    public NodeBitmaps of(GraphNode node) {
        return byNode.computeIfAbsent(node, n -> {
            NodeBitmaps nb = new NodeBitmaps(n.name());
            n.addHook(nb);
            return nb;
        });
    }

    /** The node's bitmaps, newest first; empty if it has none. */
    public List<Bitmap> list(GraphNode node) {
        NodeBitmaps nb = byNode.get(node);
        return nb == null ? List.of() : nb.list();
    }

    // ---- loading and storing ----------------------------------------------------------------

    @Override
    public void opened(GraphNode node) {
        if (!(node.driverNode() instanceof PersistentBitmaps stored)) {
            return;
        }
        long size = sizeOf(node);
        boolean readOnly = node.isReadOnly();
        List<Bitmap> loaded = new ArrayList<>();
        try {
            stored.load((name, granularityBits, inUse, auto) -> {
                Bitmap b = of(node).create(name, granularityBits, size);
                loaded.add(b);
                b.setPersistent(true);
                if (inUse) {
                    b.setInconsistent();
                    return (first, count) -> {
                    };
                }
                if (!auto) {
                    b.disable();
                }
                if (readOnly) {
                    b.setReadonly(true);
                }
                return (first, count) -> b.mark(first << granularityBits, count << granularityBits);
            });
        } catch (IOException e) {
            loaded.forEach(of(node)::release);
            throw new CommandException("Could not load dirty bitmaps of '" + node.name() + "': " + e.getMessage(), e);
        }
        for (Bitmap b : loaded) {
            if (b.inconsistent()) {
                LOG.warn("{}: bitmap '{}' was not saved cleanly (in use on disk): it is inconsistent and can only be removed",
                        node.name(), b.nameOrNull());
            }
        }
    }

    /**
     * As QEMU's {@code qcow2_reopen_bitmaps_rw}: the bitmaps loaded read-only become writable (the
     * image marked them in use on disk as it reopened, before anything writes).
     */
    @Override
    public void reopenedReadWrite(GraphNode node) {
        NodeBitmaps nb = byNode.get(node);
        if (nb != null) {
            nb.list().forEach(b -> b.setReadonly(false));
        }
    }

    /**
     * As QEMU's {@code qcow2_reopen_bitmaps_ro}: the persistent bitmaps are stored (in use
     * cleared on disk) and become read-only, as they would load from a read-only image.
     */
    @Override
    public void reopeningReadOnly(GraphNode node) {
        NodeBitmaps nb = byNode.get(node);
        if (nb == null || !(node.driverNode() instanceof PersistentBitmaps stored)) {
            return;
        }
        store(node, nb, stored);
        nb.list().stream().filter(Bitmap::persistent).forEach(b -> b.setReadonly(true));
    }

    @Override
    public void closing(GraphNode node) {
        NodeBitmaps nb = byNode.remove(node);
        if (nb == null) {
            return;
        }
        node.removeHook(nb);
        if (node.isReadOnly() || !(node.driverNode() instanceof PersistentBitmaps stored)) {
            return;
        }
        store(node, nb, stored);
    }

    private static void store(GraphNode node, NodeBitmaps nb, PersistentBitmaps stored) {
        List<PersistentBitmaps.ToStore> out = new ArrayList<>();
        for (Bitmap b : nb.list().reversed()) { // oldest first, as they load back newest first
            if (b.persistent() && !b.inconsistent() && !b.readonly() && b.nameOrNull() != null) {
                out.add(new PersistentBitmaps.ToStore(b.nameOrNull(), b.granularityBits(), b.enabled(),
                        (from, to, sink) -> b.forEachRun(from, to, sink::run)));
            }
        }
        if (out.isEmpty()) {
            return; // bitmaps loaded inconsistent stay on disk as they are
        }
        try {
            stored.store(out);
        } catch (IOException | RuntimeException e) {
            LOG.error("{}: persistent dirty bitmaps could not be stored: {}", node.name(), e.getMessage());
        }
    }

    private static long sizeOf(GraphNode node) {
        try {
            return node.size();
        } catch (IOException e) {
            throw new CommandException("could not get length of device: " + e.getMessage(), e);
        }
    }

    // ---- QMP's operations -------------------------------------------------------------------

    /** QEMU's {@code block_dirty_bitmap_lookup}. */
    public Bitmap lookup(String nodeName, String name) {
        GraphNode node = graph.find(nodeName);
        if (node == null) {
            throw new CommandException("Node '" + nodeName + "' not found");
        }
        NodeBitmaps nb = byNode.get(node);
        Optional<Bitmap> b = nb == null ? Optional.empty() : nb.find(name);
        return b.orElseThrow(() -> new CommandException("Dirty bitmap '" + name + "' not found"));
    }

    /** QEMU's {@code bdrv_get_default_bitmap_granularity}: the cluster size within 4 KiB to 64 KiB, else 64 KiB. */
    public static long defaultGranularity(GraphNode node) {
        int cluster = node.clusterSize();
        return cluster > 0 ? Math.min(65536, Math.max(4096, cluster)) : 65536;
    }

    /** QEMU's {@code qmp_block_dirty_bitmap_add}. */
    public Bitmap add(String nodeName, String name, Optional<Long> granularity, boolean persistent, boolean disabled) {
        if (name.isEmpty()) {
            throw new CommandException("Bitmap name cannot be empty");
        }
        GraphNode node = graph.find(nodeName);
        if (node == null) { // QEMU's bdrv_lookup_bs(node, node)
            throw new CommandException("Cannot find device='" + nodeName + "' nor node-name='" + nodeName + "'");
        }
        long g = granularity.orElseGet(() -> defaultGranularity(node));
        if (granularity.isPresent() && (g < 512 || Long.bitCount(g) != 1 || g > 1L << 31)) {
            throw new CommandException("Granularity must be power of 2 and at least 512");
        }
        int bits = Long.numberOfTrailingZeros(g);
        if (persistent) {
            if (!(node.driverNode() instanceof PersistentBitmaps stored)) {
                throw new CommandException("Can't store persistent bitmaps to " + nodeName + ": Operation not supported");
            }
            stored.checkCanStore(name, bits);
        }
        Bitmap b = of(node).create(name, bits, sizeOf(node));
        if (disabled) {
            b.disable();
        }
        b.setPersistent(persistent);
        return b;
    }

    /**
     * QEMU's {@code block_dirty_bitmap_remove}: checks and removes the stored copy; drops the
     * bitmap if {@code release}, else returns it (a transaction drops it on commit).
     */
    public Bitmap remove(String nodeName, String name, boolean release) {
        Bitmap b = lookup(nodeName, name);
        b.check(Bitmap.Check.BUSY_RO);
        GraphNode node = graph.require(nodeName);
        if (b.persistent() && node.driverNode() instanceof PersistentBitmaps stored) {
            try {
                stored.remove(name);
            } catch (IOException e) {
                throw new CommandException("Failed to remove bitmap '" + name + "' from '" + nodeName + "': " + e.getMessage(), e);
            }
        }
        if (release) {
            of(node).release(b);
        }
        return b;
    }

    /** Drops a bitmap {@link #remove} kept. */
    public void release(Bitmap b) {
        GraphNode node = graph.find(b.nodeName());
        if (node != null) {
            of(node).release(b);
        }
    }

    /** QEMU's {@code qmp_block_dirty_bitmap_clear}; returns the bits before, for an undo. */
    public GranuleSet clear(String nodeName, String name) {
        Bitmap b = lookup(nodeName, name);
        b.check(Bitmap.Check.DEFAULT);
        return b.clear();
    }

    /** QEMU's {@code qmp_block_dirty_bitmap_enable} and {@code _disable}; returns whether it was enabled. */
    public boolean setEnabled(String nodeName, String name, boolean enable) {
        Bitmap b = lookup(nodeName, name);
        b.check(Bitmap.Check.ALLOW_RO);
        boolean was = b.enabled();
        if (enable) {
            b.enable();
        } else {
            b.disable();
        }
        return was;
    }

    /** One source of a merge: a bitmap of the target's node, or of another node. */
    public record Source(Optional<String> node, String name) {
    }

    /**
     * QEMU's {@code block_dirty_bitmap_merge}: every source is checked and merged into a scratch
     * bitmap first, then into the target, which is unchanged on any failure. Returns the target's
     * bits before, for an undo.
     */
    public GranuleSet merge(String nodeName, String target, List<Source> sources) {
        Bitmap dst = lookup(nodeName, target);
        GraphNode node = graph.require(nodeName);
        NodeBitmaps nb = of(node);
        Bitmap anon = nb.create(null, dst.granularityBits(), dst.size());
        try {
            for (Source s : sources) {
                Bitmap src;
                if (s.node().isEmpty()) {
                    src = nb.find(s.name()).orElseThrow(() -> new CommandException("Dirty bitmap '" + s.name() + "' not found"));
                } else {
                    src = lookup(s.node().get(), s.name());
                }
                mergeChecked(anon, src);
            }
            return mergeChecked(dst, anon);
        } finally {
            nb.release(anon);
        }
    }

    /** QEMU's {@code bdrv_merge_dirty_bitmap}. */
    private static GranuleSet mergeChecked(Bitmap dst, Bitmap src) {
        dst.check(Bitmap.Check.DEFAULT);
        src.check(Bitmap.Check.ALLOW_RO);
        if (src.size() != dst.size()) {
            throw new CommandException("Bitmaps are of different sizes (destination size is " + dst.size()
                    + ", source size is " + src.size() + ") and can't be merged");
        }
        return dst.mergeFrom(src);
    }

    /** QEMU's {@code qmp_x_debug_block_dirty_bitmap_sha256}. */
    public String sha256(String nodeName, String name) {
        return lookup(nodeName, name).sha256();
    }
}
