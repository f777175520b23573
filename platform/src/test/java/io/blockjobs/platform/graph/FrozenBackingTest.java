package io.blockjobs.platform.graph;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.error.CommandException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * Frozen backing links (QEMU's {@code bdrv_freeze_backing_chain}): a job freezes the links of
 * the chain it works on; nobody else may change them ("Cannot change frozen 'backing' link
 * from ..."), a second freeze across them is refused ("Cannot change 'backing' link from ..."),
 * a link to a node that must stay removable (a commit's filter) cannot be frozen, and the job
 * itself may change its own links. The handle unfreezes, once.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class FrozenBackingTest {
    @TempDir
    Path dir;
    GraphFixture g;
    final Object commit = "commit job c1";
    final Object stream = "stream job s1";

    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        g.chain(1 << 20);
    }

    @AfterEach
    void close() {
        g.close();
    }

    private String backingFileOf(String image) {
        g.close(); // the header as written, read by QEMU after the graph let go of the image
        JsonNode info = Qemu.JSON.readTree(Qemu.img("info", "--output=json", "-U", dir.resolve(image).toString()).out());
        JsonNode b = info.get("backing-filename");
        return b == null ? null : b.asString();
    }

    @Test
    void othersCannotChangeAFrozenLink() throws Exception {
        g.graph.freeze(commit, "mid", "base");
        assertThatThrownBy(() -> g.graph.setBacking(stream, "mid", null, null, false))
                .isInstanceOf(CommandException.class)
                .hasMessage("Cannot change frozen 'backing' link from 'mid' to 'base'");
        assertThatThrownBy(() -> g.graph.setBacking(stream, "mid", "top", null, false))
                .hasMessage("Cannot change frozen 'backing' link from 'mid' to 'base'");
        assertThat(g.node("mid").backingNode()).isSameAs(g.node("base"));
        assertThat(g.node("mid").child("backing").frozen()).isTrue();
        // The link above is not frozen: a stream into top may drop mid from top's chain.
        g.graph.setBacking(stream, "top", "base", null, false);
        assertThat(g.node("top").backingNode()).isSameAs(g.node("base"));
        assertThat(backingFileOf("mid.qcow2")).as("mid's header kept its backing file").endsWith("base.qcow2");
    }

    @Test
    void theOwnerMayChangeItsOwnFrozenLinks() throws Exception {
        AutoCloseable frozen = g.graph.freeze(commit, "top", "base");
        assertThat(g.node("top").child("backing").frozen()).isTrue();
        assertThat(g.node("mid").child("backing").frozen()).isTrue();
        assertThatThrownBy(() -> g.graph.setBacking(stream, "top", "base", null, false))
                .hasMessage("Cannot change frozen 'backing' link from 'top' to 'mid'");

        g.graph.setBacking(commit, "top", "base", null, false); // the commit's completion: mid leaves the chain
        assertThat(g.node("top").backingNode()).isSameAs(g.node("base"));
        assertThat(g.node("top").backingDepth()).isEqualTo(1);
        frozen.close();
        assertThat(backingFileOf("top.qcow2")).endsWith("base.qcow2");
    }

    @Test
    void freezingAcrossAFrozenLinkIsRefusedAndFreezesNothing() throws Exception {
        g.graph.freeze(commit, "mid", "base");
        assertThatThrownBy(() -> g.graph.freeze(stream, "top", "base"))
                .hasMessage("Cannot change 'backing' link from 'mid' to 'base'");
        assertThatThrownBy(() -> g.graph.freeze(stream, "top", null))
                .hasMessage("Cannot change 'backing' link from 'mid' to 'base'");
        assertThat(g.node("top").child("backing").frozen()).as("the refused freeze left top's link free").isFalse();
        g.graph.setBacking("someone else", "top", "base", null, false);
        g.graph.setBacking("someone else", "top", "mid", null, false);
        g.graph.freeze(stream, "top", "mid"); // above the frozen link (base exclusive): allowed
        assertThat(g.node("top").child("backing").frozen()).isTrue();
    }

    @Test
    void aLinkToANeverFreezeNodeCannotBeFrozen() throws Exception {
        // An intermediate commit's filter goes above mid and must stay removable.
        GraphNode filter = g.graph.insertFilter("mid", "commit_top", "commit-filter", Map.of(), List.of(), Set.of(),
                false);
        assertThat(g.node("top").backingNode()).isSameAs(filter);
        assertThatThrownBy(() -> g.graph.freeze(stream, "top", "base"))
                .hasMessage("Cannot freeze 'backing' link to 'commit-filter'");
        assertThat(g.node("top").child("backing").frozen()).isFalse();
        assertThat(g.node("mid").child("backing").frozen()).as("nothing frozen by the refusal").isFalse();

        // The commit freezes from its filter down, as QEMU's commit_start does.
        g.graph.freeze(commit, "commit-filter", "base");
        assertThat(filter.child("backing").frozen()).isTrue();
        assertThat(g.node("mid").child("backing").frozen()).isTrue();
        // A stream through the running commit's filter is refused at the link to the filter (the
        // issue's "Cannot freeze 'backing' link to 'commit-filter'"), before the commit's frozen links.
        assertThatThrownBy(() -> g.graph.freeze(stream, "top", "base"))
                .hasMessage("Cannot freeze 'backing' link to 'commit-filter'");
        // Nor may a link that ends there be frozen: a stream onto the filter freezes nothing into it
        // (JobFiltersIT runs one).
        assertThatThrownBy(() -> g.graph.freeze(stream, "top", "commit-filter"))
                .hasMessage("Cannot freeze 'backing' link to 'commit-filter'");

    }

    @Test
    void setNeverFreezeMarksAnyNode() throws Exception {
        g.graph.setNeverFreeze(g.node("base"));
        assertThatThrownBy(() -> g.graph.freeze(stream, "mid", null))
                .hasMessage("Cannot freeze 'backing' link to 'base'");
        g.graph.freeze(stream, "top", "mid");
    }

    @Test
    void snapshotsCannotMoveAFrozenLink() throws Exception {
        g.graph.freeze(commit, "top", "base");
        Path overlay = g.qcow2("snap.qcow2", 1 << 20, null);
        g.add("""
                {"driver": "qcow2", "node-name": "snap", "backing": null,
                 "file": {"driver": "file", "filename": "%s"}}""", overlay);
        assertThatThrownBy(() -> g.graph.snapshot("mid", "snap"))
                .hasMessage("Cannot change frozen 'backing' link from 'top' to 'mid'");
        assertThat(g.node("top").backingNode()).isSameAs(g.node("mid"));
        assertThat(g.node("snap").backingNode()).isNull();
    }

    @Test
    void theHandleUnfreezesOnceOnAnyThread() throws Exception {
        AutoCloseable frozen = g.graph.freeze(commit, "mid", "base");
        GraphFixture.async("unfreezer", frozen::close).join();
        assertThat(g.node("mid").child("backing").frozen()).isFalse();
        g.graph.setBacking(stream, "mid", "base", null, false); // free again

        AutoCloseable streams = g.graph.freeze(stream, "mid", "base");
        frozen.close(); // a second close of the old handle must not undo the new freeze
        assertThat(g.node("mid").child("backing").frozen()).isTrue();
        assertThatThrownBy(() -> g.graph.setBacking(commit, "mid", null, null, false))
                .hasMessage("Cannot change frozen 'backing' link from 'mid' to 'base'");
        assertThatThrownBy(() -> g.graph.freeze(commit, "mid", "base"))
                .hasMessage("Cannot change 'backing' link from 'mid' to 'base'");
        streams.close();
        assertThat(g.node("mid").child("backing").frozen()).isFalse();
    }
}
