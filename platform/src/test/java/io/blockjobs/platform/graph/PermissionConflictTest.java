package io.blockjobs.platform.graph;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.error.CommandException;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Permission conflicts, with the messages qemu-storage-daemon 7.2 gave for the same graphs
 * (the research report's sections 1a, 1d and 1e): exports are root edges taking consistent read
 * (and write) and sharing all but resize; a qcow2 node's file child takes write and resize and
 * shares neither; a backing child takes only consistent read. A refused change leaves the graph
 * as it was.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class PermissionConflictTest {
    private static final long SIZE = 1 << 20;

    @TempDir
    Path dir;
    GraphFixture g;

    @BeforeEach
    void open() {
        g = new GraphFixture(dir);
    }

    @AfterEach
    void close() {
        g.close();
    }

    private static String conflict(String node, String perms, String required, String requiredChild, String unshared,
                                   String unsharedChild) {
        return "Permission conflict on node '" + node + "': permissions '" + perms + "' are both required by "
                + required + " (uses node '" + node + "' as '" + requiredChild + "' child) and unshared by " + unshared
                + " (uses node '" + node + "' as '" + unsharedChild + "' child).";
    }

    private List<Edge> parents(String node) {
        return g.node(node).parents();
    }

    @Test
    void writableExportsOnBackingNodesDoNotConflict() throws Exception {
        g.chain(SIZE);
        g.export("top", false);
        g.export("mid", true);
        g.export("base", true);
        g.export("top", true); // a second writable export of one node is allowed, and a third
        g.export("top", true);
        assertThat(g.graph.roots()).hasSize(5);
        Edge midBacking = g.node("top").child("backing");
        assertThat(Perm.qapiNames(midBacking.perm())).containsExactly("consistent-read");
        assertThat(Perm.qapiNames(midBacking.shared()))
                .containsExactlyInAnyOrder("consistent-read", "write", "write-unchanged", "resize");
    }

    @Test
    void writableExportOfAFileNodeUnderAQcow2Node() throws Exception {
        g.chain(SIZE);
        List<Edge> before = parents("f-base");
        assertThatThrownBy(() -> g.export("f-base", true)).isInstanceOf(CommandException.class).hasMessage(
                conflict("f-base", "write", "an unnamed block device", "root", "node 'base'", "file"));
        assertThatThrownBy(() -> g.export("f-top", true)).hasMessage(
                conflict("f-top", "write", "an unnamed block device", "root", "node 'top'", "file"));
        assertThat(parents("f-base")).isEqualTo(before);
        assertThat(g.graph.roots()).isEmpty();
    }

    @Test
    void readOnlyExportOfAFileNodeUnderAWritableQcow2Node() throws Exception {
        g.chain(SIZE);
        assertThatThrownBy(() -> g.export("f-base", false)).hasMessage(
                conflict("f-base", "resize", "node 'base'", "file", "an unnamed block device", "root"));
        assertThat(g.graph.roots()).isEmpty();
        assertThat(parents("f-base")).hasSize(1);
    }

    @Test
    void secondQcow2NodeOnOneFileNode() throws Exception {
        g.chain(SIZE);
        List<Edge> before = parents("f-top");
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "top2", "file": "f-top"}""")).hasMessage(
                conflict("f-top", "write, resize", "node 'top'", "file", "node 'top2'", "file"));
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "top3", "file": "f-top", "read-only": true}""")).hasMessage(
                conflict("f-top", "write, resize", "node 'top'", "file", "node 'top3'", "file"));
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "base2", "file": "f-base"}""")).hasMessage(
                conflict("f-base", "write, resize", "node 'base'", "file", "node 'base2'", "file"));
        assertThat(g.graph.find("top2")).isNull();
        assertThat(g.graph.find("top3")).isNull();
        assertThat(parents("f-top")).isEqualTo(before);
        // raw shares everything: it may sit beside the qcow2 node, writable or not.
        g.add("""
                {"driver": "raw", "node-name": "raw1", "file": "f-top"}""");
        g.add("""
                {"driver": "raw", "node-name": "raw2", "file": "f-top", "read-only": true}""");
    }

    @Test
    void orderMattersRawFirstThenQcow2() throws Exception {
        Path image = g.qcow2("q2.qcow2", SIZE, null);
        g.add("""
                {"driver": "file", "node-name": "f-q2", "filename": "%s"}""", image);
        g.add("""
                {"driver": "raw", "node-name": "raw-q2", "file": "f-q2"}""");
        g.add("""
                {"driver": "qcow2", "node-name": "qcow-q2", "file": "f-q2"}""");
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "qcow-q2-ro", "file": "f-q2", "read-only": true}""")).hasMessage(
                conflict("f-q2", "write, resize", "node 'qcow-q2'", "file", "node 'qcow-q2-ro'", "file"));
        assertThatThrownBy(() -> g.export("f-q2", true)).hasMessage(
                conflict("f-q2", "write", "an unnamed block device", "root", "node 'qcow-q2'", "file"));
    }

    @Test
    void readOnlyExportOfAFileNodeThenAWritableQcow2OnIt() throws Exception {
        Path image = g.qcow2("q4.qcow2", SIZE, null);
        g.add("""
                {"driver": "file", "node-name": "f-q4", "filename": "%s"}""", image);
        g.export("f-q4", false);
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "qcow-q4", "file": "f-q4"}""")).hasMessage(
                conflict("f-q4", "resize", "node 'qcow-q4'", "file", "an unnamed block device", "root"));
        assertThat(g.graph.find("qcow-q4")).isNull();
        g.add("""
                {"driver": "qcow2", "node-name": "qcow-q4-ro", "file": "f-q4", "read-only": true}""");
        g.add("""
                {"driver": "raw", "node-name": "raw-q4", "file": "f-q4"}""");
    }

    @Test
    void writersOnAReadOnlyNodeAreRefused() throws Exception {
        Path image = g.qcow2("ro.qcow2", SIZE, null);
        g.add("""
                {"driver": "file", "node-name": "f-ro", "filename": "%s", "read-only": true}""", image);
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "q", "file": "f-ro"}""")).hasMessage("Block node is read-only");
        assertThat(g.graph.find("q")).isNull();
        GraphNode qro = g.add("""
                {"driver": "qcow2", "node-name": "qro", "file": "f-ro", "read-only": true}""");
        assertThatThrownBy(() -> g.graph.attachRoot(BlockGraph.RootUser.job("commit", "c1"), "base", qro,
                Perm.of(Perm.CONSISTENT_READ, Perm.WRITE), Perm.ALL, false)).hasMessage("Block node is read-only");
        assertThatThrownBy(() -> g.graph.attachRoot(BlockGraph.RootUser.job("stream", "s1"), "active node", qro,
                Perm.WRITE_UNCHANGED.bit(), Perm.ALL, false)).hasMessage("Block node is read-only");
        assertThat(qro.parents()).isEmpty();
        g.export("qro", false); // readers are welcome
    }

    @Test
    void backingNodesFromHeadersAreReadOnly() throws Exception {
        Path base = g.qcow2("base.qcow2", SIZE, null);
        Path top = g.qcow2("top.qcow2", SIZE, "base.qcow2");
        assertThat(base).exists();
        GraphNode topNode = g.add("""
                {"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "filename": "%s"}}""", top);
        GraphNode backing = topNode.backingNode();
        assertThat(backing.name()).startsWith("#block");
        assertThat(backing.isReadOnly()).isTrue();
        assertThatThrownBy(() -> g.export(backing.name(), true)).hasMessage("Block node is read-only");
        g.export(backing.name(), false);
    }

    @Test
    void jobUsersAreNamedByTypeAndId() throws Exception {
        g.chain(SIZE);
        // A commit job that takes consistent read on mid and shares nothing but write unchanged...
        g.graph.attachRoot(BlockGraph.RootUser.job("commit", "c1"), "intermediate node", g.node("mid"), 0,
                Perm.of(Perm.WRITE_UNCHANGED, Perm.WRITE), false);
        // ... refuses an export of mid (QEMU's message B of section 1b).
        assertThatThrownBy(() -> g.export("mid", true)).hasMessage(conflict("mid", "consistent read",
                "an unnamed block device", "root", "commit job 'c1'", "intermediate node"));
        // An export of top needs consistent read of mid through top's backing child: the conflict is on mid.
        assertThatThrownBy(() -> g.export("top", false)).hasMessage(conflict("mid", "consistent read",
                "node 'top'", "backing", "commit job 'c1'", "intermediate node"));
        assertThat(Perm.qapiNames(g.node("top").child("backing").perm())).as("put back after the refusal").isEmpty();
    }

    @Test
    void changingARootsPermissionsIsCheckedAndUndoneOnConflict() throws Exception {
        g.chain(SIZE);
        Edge reader = g.export("mid", false);
        Edge job = g.graph.attachRoot(BlockGraph.RootUser.job("stream", "s1"), "intermediate node", g.node("base"),
                0, Perm.ALL, false);
        g.export("base", true);
        assertThatThrownBy(() -> g.graph.setRootPermissions(job, 0, Perm.of(Perm.CONSISTENT_READ,
                Perm.WRITE_UNCHANGED, Perm.RESIZE))).hasMessageContaining("permissions 'write' are both required by "
                + "an unnamed block device (uses node 'base' as 'root' child) and unshared by stream job 's1'");
        assertThat(job.shared()).isEqualTo(Perm.ALL);
        assertThat(reader.perm()).isEqualTo(Perm.CONSISTENT_READ.bit());
    }
}
