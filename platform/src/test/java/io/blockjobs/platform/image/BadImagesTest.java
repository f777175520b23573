package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Damaged and unsupported images are refused with an error that names the file and the
 * problem; nothing crashes and nothing is "repaired" behind the user's back.
 */
class BadImagesTest {

    @TempDir
    Path dir;
    Path image;

    @BeforeEach
    void qemuMadeImage() {
        image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "8M");
        Qemu.io(image, "qcow2", "write -P 0x11 0 128k");
    }

    @Test
    void wrongMagic() throws IOException {
        patch(0, ByteBuffer.allocate(4).putInt(0, 0x12345678));
        assertRefused("not a qcow2 image (wrong magic)");
        // Probing takes such a file for raw, as QEMU does.
        try (BlockNode node = Images.open(image, null, false)) {
            assertThat(node.driver()).isEqualTo("raw");
        }
    }

    @Test
    void truncatedHeader() throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.WRITE)) {
            ch.truncate(50);
        }
        assertRefused("truncated qcow2 header");
    }

    @Test
    void l1EntryPastTheEndOfTheFile() throws IOException {
        long l1 = headerLong(40);
        patch(l1, ByteBuffer.allocate(8).putLong(0, Qcow2Node.COPIED | (1L << 40)));
        assertRefused("L1 entry 0 points past the end of the file");
    }

    @Test
    void l2EntryPastTheEndOfTheFile() throws IOException {
        long l2 = readLong(headerLong(40)) & Qcow2Node.OFFSET_MASK;
        patch(l2, ByteBuffer.allocate(8).putLong(0, Qcow2Node.COPIED | (1L << 40)));
        try (BlockNode node = Images.open(image, "qcow2", false)) {
            assertThatThrownBy(() -> node.read(0, ByteBuffer.allocate(4096)))
                    .hasMessageContaining(image.toString())
                    .hasMessageContaining("L2 entry for guest offset 0 points past the end of the file");
            // The rest of the disk still reads.
            ByteBuffer rest = ByteBuffer.allocate(4096);
            node.read(65536, rest);
            assertThat(rest.get(0)).isEqualTo((byte) 0x11);
        }
    }

    @Test
    void overlappingMetadata() throws IOException {
        long l1 = headerLong(40);
        patch(48, ByteBuffer.allocate(8).putLong(0, l1)); // refcount table on top of the L1 table
        assertRefused("metadata overlap");
    }

    @Test
    void unknownIncompatibleFeature() throws IOException {
        patch(72, ByteBuffer.allocate(8).putLong(0, 1L << 20));
        assertRefused("unsupported incompatible feature bits 0x100000");
    }

    @Test
    void corruptBitAllowsReadingOnly() throws IOException {
        patch(72, ByteBuffer.allocate(8).putLong(0, Qcow2Header.INCOMPAT_CORRUPT));
        assertThatThrownBy(() -> Images.open(image, "qcow2", true))
                .hasMessageContaining(image.toString()).hasMessageContaining("marked corrupt");
        try (BlockNode node = Images.open(image, "qcow2", false)) {
            ByteBuffer b = ByteBuffer.allocate(512);
            node.read(0, b);
            assertThat(b.get(0)).isEqualTo((byte) 0x11);
        }
    }

    @Test
    void missingBackingFile() throws IOException {
        Path overlay = dir.resolve("overlay.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", "disk.qcow2", "-F", "qcow2", overlay.toString());
        Files.delete(image);
        assertThatThrownBy(() -> Images.open(overlay, null, false))
                .hasMessageContaining(overlay.toString())
                .hasMessageContaining("could not open backing file 'disk.qcow2'")
                .hasMessageContaining("no such file");
    }

    @Test
    void backingLoop() throws IOException {
        Path a = dir.resolve("a.qcow2");
        Path b = dir.resolve("b.qcow2");
        Qemu.img("create", "-f", "qcow2", "-b", "disk.qcow2", "-F", "qcow2", a.toString());
        Qemu.img("create", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b.toString());
        Qemu.img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a.toString()); // a -> b -> a
        assertThatThrownBy(() -> Images.open(b, null, false))
                .hasMessageContaining("backing chain loops");
    }

    @Test
    void protocolBackingNamesAreRefusedClearly() throws IOException {
        Path overlay = dir.resolve("remote.qcow2");
        Qemu.img("create", "-f", "qcow2", "-u", "-b", "nbd://localhost/x", "-F", "raw", overlay.toString(), "8M");
        assertThatThrownBy(() -> Images.open(overlay, null, false))
                .hasMessageContaining("nbd://localhost/x").hasMessageContaining("protocol");
    }

    @Test
    void garbageNeverCrashesTheOpen() throws IOException {
        // Random damage to the first cluster: every outcome is a clean open or an ImageException.
        byte[] original = Files.readAllBytes(image);
        java.util.SplittableRandom random = new java.util.SplittableRandom(42);
        for (int round = 0; round < 400; round++) {
            byte[] damaged = original.clone();
            int area = round % 2 == 0 ? 112 : Math.min(damaged.length, 5 << 16); // header, or metadata too
            for (int i = 0; i < 4; i++) {
                damaged[random.nextInt(area)] = (byte) random.nextInt();
            }
            Files.write(image, damaged);
            try (BlockNode node = Images.open(image, "qcow2", false)) {
                int n = (int) Math.min(node.size(), 8 << 20);
                node.read(0, ByteBuffer.allocate(n));
                for (long pos = 0; pos < n; ) {
                    pos = node.chainStatus(pos, n - pos).end();
                }
            } catch (IOException expected) {
                assertThat(expected.getMessage()).contains(image.toString());
            }
        }
    }

    private void assertRefused(String problem) {
        assertThatThrownBy(() -> Images.open(image, "qcow2", false))
                .isInstanceOf(ImageException.class)
                .hasMessageContaining(image.toString())
                .hasMessageContaining(problem);
    }

    private long headerLong(long offset) throws IOException {
        return readLong(offset);
    }

    private long readLong(long offset) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, offset);
            return b.getLong(0);
        }
    }

    private void patch(long offset, ByteBuffer bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.WRITE)) {
            ch.write(bytes, offset);
        }
    }
}
