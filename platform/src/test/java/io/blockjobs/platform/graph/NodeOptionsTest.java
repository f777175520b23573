package io.blockjobs.platform.graph;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The generic node options {@code discard} and {@code detect-zeroes} as {@code blockdev-add}
 * takes them, with qemu-storage-daemon 7.2's replies (checked against it: QMP knows only
 * {@code ignore} and {@code unmap}; {@code -drive}'s {@code on}/{@code off} are refused).
 */
class NodeOptionsTest {
    @TempDir
    Path dir;
    GraphFixture g;
    Path image;

    @BeforeEach
    void open() throws Exception {
        g = new GraphFixture(dir);
        image = g.qcow2("a.qcow2", 1 << 20, null);
    }

    @AfterEach
    void close() {
        g.close();
    }

    @ParameterizedTest
    @ValueSource(strings = {"on", "off", "bogus"})
    void discardTakesIgnoreOrUnmapOnly(String value) {
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "x", "discard": "%s", "file": {"driver": "file", "filename": "%s"}}""",
                value, image)).hasMessage("Parameter 'discard' does not accept value '" + value + "'");
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "x", "file": {"driver": "file", "filename": "%s", "discard": "%s"}}""",
                image, value)).hasMessage("Parameter 'discard' does not accept value '" + value + "'");
        assertThat(g.graph.all()).isEmpty();
    }

    @Test
    void discardDefaultsToIgnoreForMonitorNodesAndUnmapForInlineChildren() {
        GraphNode x = g.add("""
                {"driver": "qcow2", "node-name": "x", "file": {"driver": "file", "node-name": "fx", "filename": "%s"}}""",
                image);
        assertThat(x.options().discardUnmap()).isFalse();
        assertThat(g.node("fx").options().discardUnmap()).isTrue();
    }

    @Test
    void detectZeroesUnmapNeedsDiscardUnmap() {
        String message = "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap";
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "x", "detect-zeroes": "unmap",
                 "file": {"driver": "file", "filename": "%s"}}""", image)).hasMessage(message);
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "x", "detect-zeroes": "unmap", "discard": "ignore",
                 "file": {"driver": "file", "filename": "%s"}}""", image)).hasMessage(message);
        assertThatThrownBy(() -> g.add("""
                {"driver": "qcow2", "node-name": "x", "detect-zeroes": "bogus",
                 "file": {"driver": "file", "filename": "%s"}}""", image))
                .hasMessage("Parameter 'detect-zeroes' does not accept value 'bogus'");
        // An inline child defaults to discard=unmap, so it may.
        GraphNode x = g.add("""
                {"driver": "qcow2", "node-name": "x",
                 "file": {"driver": "file", "node-name": "fx", "filename": "%s", "detect-zeroes": "unmap"}}""", image);
        assertThat(g.node("fx").options().detectZeroes()).isEqualTo(NodeOptions.DetectZeroes.UNMAP);
        assertThat(x.options().detectZeroes()).isEqualTo(NodeOptions.DetectZeroes.OFF);
    }
}
