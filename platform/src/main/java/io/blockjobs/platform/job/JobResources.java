package io.blockjobs.platform.job;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a job holds in the graph: its root edges (the nodes it uses), the backing links it froze,
 * the filters it put in, and the edits its {@code prepare} made (to undo if its transaction
 * aborts). Released after the job's graph edits, never before.
 */
final class JobResources {
    private static final Logger LOG = LoggerFactory.getLogger(JobResources.class);

    final List<Edge> edges = new ArrayList<>();
    final List<GraphNode> used = new ArrayList<>();
    final List<AutoCloseable> frozen = new ArrayList<>();
    final List<String> filters = new ArrayList<>();
    final List<BlockGraph.Undo> edits = new ArrayList<>();
    final List<Runnable> bitmaps = new ArrayList<>(); // give back the bitmaps the job used or made
    final List<Runnable> wakers = new java.util.concurrent.CopyOnWriteArrayList<>(); // end the job's waits for writes

    /** Undoes the prepared edits, newest first. */
    void undoEdits() {
        for (int i = edits.size() - 1; i >= 0; i--) {
            try {
                edits.get(i).undo();
            } catch (RuntimeException e) {
                LOG.warn("undoing a graph edit failed: {}", e.getMessage());
            }
        }
        edits.clear();
    }

    /** Gives everything back: links unfrozen, filters left behind removed, edges detached. */
    void release(BlockGraph graph) {
        for (AutoCloseable f : frozen) {
            try {
                f.close();
            } catch (Exception e) {
                LOG.warn("unfreezing failed: {}", e.getMessage());
            }
        }
        frozen.clear();
        for (Runnable b : bitmaps) {
            try {
                b.run();
            } catch (RuntimeException e) {
                LOG.warn("releasing a bitmap failed: {}", e.getMessage());
            }
        }
        bitmaps.clear();
        for (String f : filters) {
            try {
                graph.removeFilter(f);
            } catch (RuntimeException e) {
                LOG.warn("removing filter {} failed: {}", f, e.getMessage());
            }
        }
        filters.clear();
        for (Edge e : edges) {
            graph.detachRoot(e);
        }
        edges.clear();
        used.clear();
        edits.clear();
        graph.releaseUnused();
    }
}
