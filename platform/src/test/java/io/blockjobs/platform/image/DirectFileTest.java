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

    @Test
    void misalignedAndHeapBuffersGoThroughAlignedBounceBuffers() throws Exception {
        // An NBD write's payload sits 28 bytes into the received bytes; a qcow2 table write is a heap buffer.
        Path file = dir.resolve("bounce.img");
        Files.write(file, new byte[4 << 20]);
        try (FileNode node = FileNode.open(file, new FileNode.Mode(true, false, true, true, false))) {
            int align = node.limits().requestAlignment();
            int length = (1 << 20) + align; // not a bucket's size: a kept buffer serves a shorter request
            ByteBuffer received = ByteBuffer.allocateDirect(28 + length).position(28);
            for (int i = 0; i < length; i++) {
                received.put(28 + i, (byte) (i * 7 + 1));
            }
            node.write(align, received);
            assertThat(received.remaining()).isZero();
            node.write(3L << 20, ByteBuffer.wrap(new byte[align]).put(0, (byte) 0x77).asReadOnlyBuffer());
            ByteBuffer back = ByteBuffer.allocateDirect(28 + length).position(28);
            node.read(align, back);
            assertThat(back.position()).isEqualTo(28 + length);
            for (int i = 0; i < length; i++) {
                assertThat(back.get(28 + i)).as("byte %d", i).isEqualTo((byte) (i * 7 + 1));
            }
            ByteBuffer heap = ByteBuffer.allocate(align);
            node.read(3L << 20, heap);
            assertThat(heap.get(0)).isEqualTo((byte) 0x77);
        }
        ByteBuffer a = BounceBuffers.take(100_000, 512);
        assertThat(a.limit()).isEqualTo(100_000);
        assertThat(a.alignmentOffset(0, BounceBuffers.ALIGNMENT)).isZero();
        BounceBuffers.give(a);
        ByteBuffer b = BounceBuffers.take(70_000, 4096);
        assertThat(b.limit()).isEqualTo(70_000);
        assertThat(b.position()).isZero();
        BounceBuffers.give(b);
    }
}
