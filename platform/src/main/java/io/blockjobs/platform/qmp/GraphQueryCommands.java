package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonProperty;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.BlockStats;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/** {@code query-blockstats} and {@code x-debug-query-block-graph}: the graph and its I/O as QEMU shows them. */
public final class GraphQueryCommands {
    private GraphQueryCommands() {
    }

    /** {@code query-blockstats}' arguments. */
    public record BlockStatsArgs(Optional<Boolean> queryNodes) {
    }

    /** QMP's {@code BlockDeviceStats}, with every member QEMU 7.2 reports. */
    public record DeviceStats(@JsonProperty("rd_bytes") long rdBytes, @JsonProperty("wr_bytes") long wrBytes,
                              @JsonProperty("unmap_bytes") long unmapBytes,
                              @JsonProperty("rd_operations") long rdOperations,
                              @JsonProperty("wr_operations") long wrOperations,
                              @JsonProperty("flush_operations") long flushOperations,
                              @JsonProperty("unmap_operations") long unmapOperations,
                              @JsonProperty("rd_total_time_ns") long rdTotalTimeNs,
                              @JsonProperty("wr_total_time_ns") long wrTotalTimeNs,
                              @JsonProperty("flush_total_time_ns") long flushTotalTimeNs,
                              @JsonProperty("unmap_total_time_ns") long unmapTotalTimeNs,
                              @JsonProperty("wr_highest_offset") long wrHighestOffset,
                              @JsonProperty("rd_merged") long rdMerged, @JsonProperty("wr_merged") long wrMerged,
                              @JsonProperty("unmap_merged") long unmapMerged,
                              @JsonProperty("idle_time_ns") Optional<Long> idleTimeNs,
                              @JsonProperty("failed_rd_operations") long failedRdOperations,
                              @JsonProperty("failed_wr_operations") long failedWrOperations,
                              @JsonProperty("failed_flush_operations") long failedFlushOperations,
                              @JsonProperty("failed_unmap_operations") long failedUnmapOperations,
                              @JsonProperty("invalid_rd_operations") long invalidRdOperations,
                              @JsonProperty("invalid_wr_operations") long invalidWrOperations,
                              @JsonProperty("invalid_flush_operations") long invalidFlushOperations,
                              @JsonProperty("invalid_unmap_operations") long invalidUnmapOperations,
                              @JsonProperty("account_invalid") boolean accountInvalid,
                              @JsonProperty("account_failed") boolean accountFailed,
                              @JsonProperty("timed_stats") List<Object> timedStats) {

        static DeviceStats of(BlockStats.Snapshot s) {
            return new DeviceStats(s.rdBytes(), s.wrBytes(), s.unmapBytes(), s.rdOperations(), s.wrOperations(),
                    s.flushOperations(), s.unmapOperations(), s.rdTotalNanos(), s.wrTotalNanos(), s.flushTotalNanos(),
                    s.unmapTotalNanos(), s.wrHighestOffset(), 0, 0, 0,
                    s.idleNanos() < 0 ? Optional.empty() : Optional.of(s.idleNanos()),
                    s.failedRd(), s.failedWr(), s.failedFlush(), s.failedUnmap(), s.invalidRd(), s.invalidWr(),
                    s.invalidFlush(), s.invalidUnmap(), true, true, List.of());
        }
    }

    /** QMP's {@code BlockStatsSpecificFile}. */
    public record FileSpecific(String driver, @JsonProperty("discard-nb-ok") long discardNbOk,
                               @JsonProperty("discard-nb-failed") long discardNbFailed,
                               @JsonProperty("discard-bytes-ok") long discardBytesOk) {
    }

    /** QMP's {@code BlockStats}: a node's figures, with its file child's as {@code parent}. */
    public record NodeStats(@JsonProperty("node-name") String nodeName, DeviceStats stats,
                            Optional<NodeStats> parent, @JsonProperty("driver-specific") Optional<FileSpecific> driverSpecific) {
    }

    /** One vertex of {@code x-debug-query-block-graph}. */
    public record GraphVertex(long id, String type, String name) {
    }

    /** One edge of {@code x-debug-query-block-graph}. */
    public record GraphEdge(long parent, long child, String name, List<String> perm,
                            @JsonProperty("shared-perm") List<String> sharedPerm) {
    }

    /** {@code x-debug-query-block-graph}'s reply. */
    public record Graph(List<GraphVertex> nodes, List<GraphEdge> edges) {
    }

    public static void register(QmpDispatcher d, BlockGraph graph) {
        d.register(QmpCommand.of("query-blockstats", BlockStatsArgs.class, QmpTypes.listOf(NodeStats.class), a -> {
            List<NodeStats> out = new ArrayList<>();
            if (!a.queryNodes().orElse(false)) {
                return out; // as in qemu-storage-daemon: no named block devices, exports' are anonymous
            }
            for (GraphNode n : graph.inCreationOrder()) { // as QEMU's: oldest first
                out.add(stats(n));
            }
            return out;
        }));
        // QEMU lists BlockBackends that have a name or a guest device; qemu-storage-daemon, as
        // blockjobd, has neither (an export's BlockBackend is anonymous), so the list is empty.
        d.register(QmpCommand.of("query-block", Void.class, QmpTypes.listOf(tools.jackson.databind.JsonNode.class),
                a -> List.of()));
        d.register(QmpCommand.of("x-debug-query-block-graph", Void.class, Graph.class, a -> graph(graph)));
    }

    private static NodeStats stats(GraphNode n) {
        GraphNode file = n.file();
        Optional<FileSpecific> specific = n.driver().equals("file")
                ? Optional.of(new FileSpecific("file", n.stats().snapshot().unmapOperations(),
                        n.stats().snapshot().failedUnmap(), n.stats().snapshot().unmapBytes()))
                : Optional.empty();
        return new NodeStats(n.name(), DeviceStats.of(n.stats().snapshot()),
                Optional.ofNullable(file).map(GraphQueryCommands::stats), specific);
    }

    private static Graph graph(BlockGraph graph) {
        Map<Object, Long> ids = new IdentityHashMap<>();
        List<GraphVertex> vertices = new ArrayList<>();
        List<GraphEdge> edges = new ArrayList<>();
        Map<String, Long> jobs = new LinkedHashMap<>();
        for (Edge root : graph.roots()) {
            BlockGraph.RootUser u = graph.rootUser(root);
            long id;
            if (u != null && u.kind().equals("block-job")) {
                id = jobs.computeIfAbsent(u.name(), k -> {
                    long n = vertices.size() + 1L;
                    vertices.add(new GraphVertex(n, "block-job", k));
                    return n;
                });
            } else {
                id = vertices.size() + 1L;
                vertices.add(new GraphVertex(id, "block-backend", u == null ? "" : u.name()));
            }
            ids.put(root, id);
        }
        for (GraphNode n : graph.all()) {
            long id = vertices.size() + 1L;
            ids.put(n, id);
            vertices.add(new GraphVertex(id, "block-driver", n.name()));
        }
        for (GraphNode n : graph.all()) {
            for (Edge e : n.children()) {
                edges.add(edge(ids.get(n), ids.get(e.child()), e));
            }
        }
        for (Edge root : graph.roots()) {
            Long child = ids.get(root.child());
            if (child != null) {
                edges.add(edge(ids.get(root), child, root));
            }
        }
        return new Graph(vertices, edges);
    }

    private static GraphEdge edge(long parent, long child, Edge e) {
        return new GraphEdge(parent, child, e.name(), reversed(Perm.qapiNames(e.perm())), reversed(Perm.qapiNames(e.shared())));
    }

    /** QEMU lists permissions from the highest bit down. */
    private static List<String> reversed(List<String> names) {
        List<String> r = new ArrayList<>(names);
        java.util.Collections.reverse(r);
        return r;
    }
}
