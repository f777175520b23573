package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Two writers never share an image: blockjobs and QEMU see each other's locks. */
class ImageLockingTest {

    @TempDir
    Path dir;
    Path image;

    @BeforeEach
    void image() {
        image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "8M");
    }

    @Test
    void qemuCannotWriteWhileBlockjobsWrites() throws IOException {
        try (BlockNode node = Images.open(image, null, true)) {
            Qemu.Result r = Qemu.run("qemu-io", "-f", "qcow2", "-c", "write 0 4k", image.toString());
            assertThat(r.exit()).isNotZero();
            assertThat(r.err()).contains("Failed to get \"write\" lock");
            // Even reading needs others not to write, as qemu-img info does without -U.
            Qemu.Result info = Qemu.run("qemu-img", "info", image.toString());
            assertThat(info.exit()).isNotZero();
            assertThat(info.err()).contains("Failed to get shared \"write\" lock");
            assertThat(node.size()).isEqualTo(8 << 20);
        }
        Qemu.io(image, "qcow2", "write 0 4k"); // free again once closed
    }

    @Test
    void qemuReadersMayShareWithBlockjobsReaders() throws IOException {
        try (BlockNode node = Images.open(image, null, false)) {
            Qemu.img("info", image.toString());
            assertThat(node.isReadOnly()).isTrue();
        }
    }

    @Test
    void blockjobsCannotWriteWhileQemuWrites() throws Exception {
        Process qemuIo = new ProcessBuilder("qemu-io", "-f", "qcow2", image.toString()).start();
        try (Writer in = new OutputStreamWriter(qemuIo.getOutputStream(), StandardCharsets.UTF_8);
             BufferedReader out = new BufferedReader(new InputStreamReader(qemuIo.getInputStream(), StandardCharsets.UTF_8))) {
            // Once qemu-io has answered a command, it holds the image open for writing.
            in.write("write -P 0x42 0 4k\n");
            in.flush();
            String line;
            while ((line = out.readLine()) != null && !line.contains("wrote 4096/4096 bytes")) {
                assertThat(line).doesNotContain("failed");
            }
            assertThat(line).isNotNull();
            assertThatThrownBy(() -> Images.open(image, null, true))
                    .isInstanceOf(ImageLockedException.class)
                    .hasMessageContaining(image.toString())
                    .hasMessageContaining("lock");
            assertThatThrownBy(() -> Images.open(image, null, false))
                    .isInstanceOf(ImageLockedException.class);
            in.write("quit\n");
            in.flush();
        }
        assertThat(qemuIo.waitFor(30, TimeUnit.SECONDS)).isTrue();
        try (BlockNode node = Images.open(image, null, true)) {
            ByteBuffer b = ByteBuffer.allocate(1);
            node.read(0, b);
            assertThat(b.get(0)).isEqualTo((byte) 0x42);
        }
    }

    @Test
    void twoNodesInOneProcessCannotBothWrite() throws IOException {
        try (BlockNode writer = Images.open(image, null, true)) {
            assertThatThrownBy(() -> Images.open(image, null, true))
                    .isInstanceOf(ImageLockedException.class)
                    .hasMessageContaining("already in use here");
            assertThatThrownBy(() -> Images.open(image, null, false))
                    .isInstanceOf(ImageLockedException.class);
            assertThat(writer.isReadOnly()).isFalse();
        }
        // Readers share, and after they close a writer may come.
        try (BlockNode a = Images.open(image, null, false); BlockNode b = Images.open(image, null, false)) {
            assertThat(a.size()).isEqualTo(b.size());
        }
        Images.open(image, null, true).close();
    }
}
