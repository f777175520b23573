package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockNode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A backing chain of {@link MemoryNode}s, base first, for a job to run on, and what it looked
 * like before the job ({@link #snapshot}). As QEMU opens them, every layer below the top is
 * read-only: a job that writes one must reopen it.
 *
 * <pre>{@code
 * MemoryChain chain = MemoryChain.of(4 * MIB, "base", "mid", "top");
 * chain.node("base").random(0, 2 * MIB, 1);
 * chain.node("mid").random(MIB, 512 * KIB, 2);
 * }</pre>
 */
public final class MemoryChain {
    private final List<MemoryNode> layers;

    private MemoryChain(List<MemoryNode> layers) {
        this.layers = List.copyOf(layers);
    }

    /** A chain of {@code names.length} layers of {@code size} bytes, base first, each over the one before. */
    public static MemoryChain of(long size, String... names) {
        List<MemoryNode> nodes = new ArrayList<>();
        MemoryNode below = null;
        for (int i = 0; i < names.length; i++) {
            MemoryNode n = new MemoryNode(names[i], size, below);
            if (i < names.length - 1) {
                n.readOnly();
            }
            nodes.add(n);
            below = n;
        }
        return new MemoryChain(nodes);
    }

    /** A chain of nodes already linked, base first. */
    public static MemoryChain of(MemoryNode... baseFirst) {
        return new MemoryChain(Arrays.asList(baseFirst));
    }

    /** The layers, base first. */
    public List<MemoryNode> layers() {
        return layers;
    }

    /** The layer named {@code name}. */
    public MemoryNode node(String name) {
        for (MemoryNode n : layers) {
            if (n.nodeName().equals(name)) {
                return n;
            }
        }
        throw new IllegalArgumentException("no layer '" + name + "' in " + names());
    }

    /** The top layer (the active one). */
    public MemoryNode top() {
        return layers.get(layers.size() - 1);
    }

    /** The bottom layer. */
    public MemoryNode base() {
        return layers.get(0);
    }

    /** The layers' names, base first. */
    public List<String> names() {
        return layers.stream().map(MemoryNode::nodeName).toList();
    }

    /** What every layer reads now and which layers lie beneath it. */
    public Snapshot snapshot() {
        Map<String, byte[]> views = new LinkedHashMap<>();
        Map<String, List<String>> links = new LinkedHashMap<>();
        Map<String, String> files = new LinkedHashMap<>();
        for (MemoryNode n : layers) {
            views.put(n.nodeName(), n.view());
            links.put(n.nodeName(), links(n));
            files.put(n.nodeName(), n.backingFile());
        }
        return new Snapshot(views, links, files);
    }

    /** The names of the layers from {@code node} down, filters passed through. */
    public static List<String> links(BlockNode node) {
        List<String> names = new ArrayList<>();
        for (BlockNode n = HarnessGraph.skipFilters(node); n != null; n = below(n)) {
            names.add(n.nodeName());
        }
        return names;
    }

    private static BlockNode below(BlockNode n) {
        BlockNode b = HarnessGraph.below(n);
        return b == null ? null : HarnessGraph.skipFilters(b);
    }

    /**
     * A chain as it was.
     *
     * @param views        what each layer read (through its backing chain)
     * @param links        each layer's chain: its name and the names beneath
     * @param backingFiles the backing file each layer's header recorded
     */
    public record Snapshot(Map<String, byte[]> views, Map<String, List<String>> links,
                           Map<String, String> backingFiles) {

        /** What layer {@code name} read. */
        public byte[] view(String name) {
            byte[] v = views.get(name);
            if (v == null) {
                throw new IllegalArgumentException("no layer '" + name + "' in " + views.keySet());
            }
            return v.clone();
        }

        /** Layer {@code name}'s chain. */
        public List<String> links(String name) {
            return links.get(name);
        }
    }
}
