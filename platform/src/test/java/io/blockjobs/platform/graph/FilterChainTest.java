package io.blockjobs.platform.graph;

import static io.blockjobs.platform.graph.GraphFixture.filled;
import static io.blockjobs.platform.graph.GraphFixture.pattern;
import static io.blockjobs.platform.graph.GraphFixture.read;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.graph.GraphFixture.Events;
import io.blockjobs.platform.graph.GraphFixture.RecordingHook;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Filters and chains: a filter and the node it filters are one layer, so walking a chain
 * ({@code chainNext}, {@code backingDepth}, {@code skipFilters}, {@code chainStatus}) gives the
 * same layers and depths with job filters ({@code commit_top}, {@code mirror_top}) and
 * registered ones ({@code copy-on-read}) inserted as without. Inserting a filter moves the
 * node's users (exports, overlays) onto it, except those kept; removing it moves them back.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class FilterChainTest {
    private static final int K = 1024;
    private static final long[] OFFSETS = {0, 64 * K, 128 * K, 192 * K};

    @TempDir
    Path dir;
    GraphFixture g;
    GraphNode top;
    GraphNode mid;
    GraphNode base;
    final Events events = new Events();

    /** base holds [0, 64K), mid [64K, 128K), top [128K, 192K); [192K, 1M) is nowhere. */
    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        g.chainImages(1 << 20);
        Qemu.io(dir.resolve("base.qcow2"), "qcow2", "write -P 1 0 64k");
        Qemu.io(dir.resolve("mid.qcow2"), "qcow2", "write -P 2 64k 64k");
        Qemu.io(dir.resolve("top.qcow2"), "qcow2", "write -P 3 128k 64k");
        g.openChain();
        top = g.node("top");
        mid = g.node("mid");
        base = g.node("base");
    }

    @AfterEach
    void close() {
        g.close();
    }

    /** Where each probe offset's data comes from: "depth" or "unallocated at depth". */
    private static List<String> depths(BlockNode node) throws Exception {
        List<String> out = new ArrayList<>();
        for (long o : OFFSETS) {
            BlockStatus s = node.chainStatus(o, 64 * K);
            out.add((s.allocated() ? "" : "unallocated at ") + s.depth());
        }
        return out;
    }

    @Test
    void withoutFiltersTheChainIsThreeLayers() throws Exception {
        assertThat(top.chainNext()).isSameAs(mid);
        assertThat(top.backingDepth()).isEqualTo(2);
        assertThat(depths(top)).containsExactly("2", "1", "0", "unallocated at 3");
        assertThat(depths(mid)).containsExactly("1", "0", "unallocated at 2", "unallocated at 2");
    }

    @Test
    void aCommitFilterAboveMidIsWalkedThrough() throws Exception {
        List<String> before = depths(top);
        GraphNode filter = g.graph.insertFilter("mid", "commit_top", "commit-filter", Map.of(), List.of(), Set.of(),
                false);

        assertThat(filter.isFilter()).isTrue();
        assertThat(top.backingNode()).as("top's backing child moved onto the filter").isSameAs(filter);
        assertThat(top.chainNext()).isSameAs(filter);
        assertThat(filter.chainNext()).as("the filter's next layer is mid's").isSameAs(base);
        assertThat(filter.skipFilters()).isSameAs(mid);
        assertThat(top.backingDepth()).isEqualTo(2);
        assertThat(filter.backingDepth()).isEqualTo(mid.backingDepth());
        assertThat(depths(top)).isEqualTo(before);
        assertThat(depths(filter)).isEqualTo(depths(mid));
        assertThat(read(top, 64 * K, 64 * K)).isEqualTo(filled(64 * K, 2));
        assertThat(Perm.qapiNames(filter.filteredEdge().perm())).as("commit_top takes nothing").isEmpty();

        g.graph.removeFilter("commit-filter");
        assertThat(g.graph.find("commit-filter")).isNull();
        assertThat(top.backingNode()).isSameAs(mid);
        assertThat(mid.parents()).extracting(Edge::parent).containsExactly(top);
    }

    @Test
    void aCopyOnReadFilterTakesTheExportAndCopiesUpWhatItReads() throws Exception {
        Edge export = g.export("top", true);
        List<String> before = depths(top);
        GraphNode cor = g.graph.insertFilter("top", "copy-on-read", "cor0", Map.of(), List.of(), Set.of(), true);

        assertThat(export.child()).as("the export moved onto the filter").isSameAs(cor);
        assertThat(cor.driver()).isEqualTo("copy-on-read");
        assertThat(cor.skipFilters()).isSameAs(top);
        assertThat(cor.chainNext()).isSameAs(mid);
        assertThat(cor.backingDepth()).isEqualTo(2);
        assertThat(depths(export)).isEqualTo(before);
        assertThat(Perm.qapiNames(cor.filteredEdge().perm()))
                .containsExactlyInAnyOrder("consistent-read", "write", "write-unchanged");

        assertThat(read(export, 0, 64 * K)).isEqualTo(filled(64 * K, 1));
        assertThat(top.blockStatus(0, 64 * K).allocated()).as("base's data was copied into top").isTrue();
        assertThat(depths(export)).containsExactly("0", "1", "0", "unallocated at 3");

        g.graph.removeFilter("cor0");
        assertThat(export.child()).isSameAs(top);
        assertThat(g.graph.find("cor0")).isNull();
        assertThat(read(export, 0, 64 * K)).isEqualTo(filled(64 * K, 1));
    }

    @Test
    void aMirrorFilterLeavesTheJobsOwnEdgeWhereItWasAndRunsItsHooksForClientsOnly() throws Exception {
        Edge export = g.export("top", true);
        Edge job = g.graph.attachRoot(BlockGraph.RootUser.job("mirror", "m1"), "source", top,
                Perm.of(Perm.CONSISTENT_READ, Perm.WRITE), Perm.ALL, false);
        GraphNode filter = g.graph.insertFilter("top", "mirror_top", "mirror-filter", Map.of(),
                List.of(new RecordingHook("dirty", events)), Set.of(job), true);

        assertThat(export.child()).isSameAs(filter);
        assertThat(job.child()).isSameAs(top);
        assertThat(Perm.qapiNames(filter.filteredEdge().perm())).as("mirror_top forwards writes; the job reads")
                .containsExactly("write");
        export.write(256 * K, pattern(4 * K, 9));
        job.write(512 * K, pattern(4 * K, 8));
        assertThat(events.snapshot()).containsExactly("dirty.before WRITE@262144+4096",
                "dirty.after WRITE@262144+4096 ok");
        assertThat(depths(filter)).isEqualTo(depths(top));

        g.graph.removeFilter("mirror-filter");
        assertThat(export.child()).isSameAs(top);
        assertThat(top.parents()).containsExactlyInAnyOrder(export, job);
    }

    @Test
    void stackedFiltersAreOneLayer() throws Exception {
        List<String> before = depths(top);
        Edge export = g.export("top", false);
        GraphNode cor = g.graph.insertFilter("top", "copy-on-read", "cor0", Map.of(), List.of(), Set.of(), true);
        GraphNode cor1 = g.graph.insertFilter("cor0", "copy-on-read", "cor1", Map.of(), List.of(), Set.of(), true);
        GraphNode commitFilter = g.graph.insertFilter("mid", "commit_top", "commit-filter", Map.of(), List.of(),
                Set.of(), false);

        assertThat(export.child()).isSameAs(cor1);
        assertThat(cor1.skipFilters()).isSameAs(top);
        assertThat(cor1.chainNext()).isSameAs(commitFilter);
        assertThat(cor1.backingDepth()).isEqualTo(2);
        assertThat(cor.backingDepth()).isEqualTo(2);
        List<GraphNode> layers = new ArrayList<>();
        for (GraphNode n = cor1; n != null; n = n.chainNext()) {
            layers.add(n.skipFilters());
        }
        assertThat(layers).containsExactly(top, mid, base);
        assertThat(depths(export)).isEqualTo(before);
    }
}
