package io.blockjobs.platform.cli;

import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The built-in demo: a three-layer qcow2 chain written by blockjobs, and the map of where each
 * range of the top image's data lives, as {@code qemu-img map} shows it.
 */
final class Demo {
    private static final long MIB = 1 << 20;

    private Demo() {
    }

    static int run(String[] args) throws IOException {
        Path dir = args.length > 0 ? Path.of(args[0]) : Files.createTempDirectory("blockjobs-demo-");
        Files.createDirectories(dir);
        Path base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        Path top = dir.resolve("top.qcow2");
        Images.createQcow2(base, Qcow2CreateOptions.of(64 * MIB));
        Images.createQcow2(mid, Qcow2CreateOptions.of(64 * MIB).withBacking("base.qcow2", "qcow2"));
        Images.createQcow2(top, Qcow2CreateOptions.of(64 * MIB).withBacking("mid.qcow2", "qcow2"));
        fill(base, 0, 4 * MIB, (byte) 0xaa);
        fill(mid, 2 * MIB, 4 * MIB, (byte) 0xbb);
        fill(top, 5 * MIB, 3 * MIB, (byte) 0xcc);
        try (BlockNode node = Images.open(top, null, true)) {
            node.writeZeroes(MIB, MIB, true);
        }

        System.out.println("Chain in " + dir + ": base.qcow2 <- mid.qcow2 <- top.qcow2");
        System.out.printf("%12s %12s  %-5s %-5s %s%n", "start", "length", "depth", "zero", "layer");
        String[] layers = {"top.qcow2", "mid.qcow2", "base.qcow2", "(none)"};
        try (BlockNode node = Images.open(top, null, false)) {
            long pos = 0;
            while (pos < node.size()) {
                BlockStatus s = node.chainStatus(pos, node.size() - pos);
                System.out.printf("%12d %12d  %-5d %-5s %s%n", s.offset(), s.length(), s.depth(), s.zero(),
                        layers[Math.min(s.depth(), 3)]);
                pos = s.end();
            }
        }
        System.out.println("Check it with: qemu-img check " + top + " && qemu-img map " + top);
        return 0;
    }

    private static void fill(Path image, long offset, long length, byte value) throws IOException {
        byte[] chunk = new byte[(int) MIB];
        Arrays.fill(chunk, value);
        try (BlockNode node = Images.open(image, null, true)) {
            for (long pos = offset; pos < offset + length; pos += MIB) {
                node.write(pos, ByteBuffer.wrap(chunk));
            }
            node.flush();
        }
    }
}
