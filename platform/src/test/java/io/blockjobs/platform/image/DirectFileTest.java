package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code cache.direct=on}: whole-block requests on a file whose length is not a multiple of the block. */
class DirectFileTest {

    @TempDir
    Path dir;

    @Test
    void aReadAcrossTheEndOfAnUnalignedFileReturnsZeroesPastIt() throws Exception {
        // qemu-img leaves qcow2 files at lengths like 196616: the header read with O_DIRECT crosses the end.
        Path file = dir.resolve("odd.img");
        byte[] data = new byte[196616];
        java.util.Arrays.fill(data, (byte) 0x5a);
        Files.write(file, data);
        try (FileNode node = FileNode.open(file, new FileNode.Mode(true, false, true, true, false))) {
            int align = node.limits().requestAlignment();
            assertThat(align).isGreaterThanOrEqualTo(512);
            int length = (int) ((data.length + align - 1) / align * align) + align;
            ByteBuffer heap = ByteBuffer.allocate(length);
            node.read(0, heap);
            ByteBuffer direct = ByteBuffer.allocateDirect(length + align).alignedSlice(align).limit(length);
            node.read(0, direct);
            for (ByteBuffer b : new ByteBuffer[] {heap.flip(), direct.flip()}) {
                assertThat(b.remaining()).isEqualTo(length);
                for (int i = 0; i < length; i++) {
                    assertThat(b.get(i)).as("byte %d", i).isEqualTo(i < data.length ? (byte) 0x5a : 0);
                }
            }
        }
    }
}
