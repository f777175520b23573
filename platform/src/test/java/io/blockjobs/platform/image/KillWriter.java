package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * The child process of {@link KillTest}: writes a seeded, reproducible sequence of operations
 * into an image and prints {@code flushed N} after each flush, until it is killed.
 */
public final class KillWriter {

    /** One operation of the sequence; {@code kind} 0 write, 1 write-zeroes, 2 discard. */
    record Op(int kind, long offset, int length, byte fill) {
        void applyTo(BlockNode node) throws java.io.IOException {
            switch (kind) {
                case 0 -> node.write(offset, ByteBuffer.wrap(data()));
                case 1 -> node.writeZeroes(offset, length, (fill & 1) == 0);
                default -> node.discard(offset, length);
            }
        }

        byte[] data() {
            byte[] d = new byte[length];
            for (int k = 0; k < length; k++) {
                d[k] = (byte) (fill + k / 512); // misplaced sectors would show
            }
            return d;
        }

        /** What the operation does to a model of the disk (qcow2 v3 semantics). */
        void applyTo(byte[] model, int clusterSize) {
            switch (kind) {
                case 0 -> System.arraycopy(data(), 0, model, (int) offset, length);
                case 1 -> Arrays.fill(model, (int) offset, (int) offset + length, (byte) 0);
                default -> {
                    long end = offset + length;
                    long first = (offset + clusterSize - 1) / clusterSize * clusterSize;
                    long last = end == model.length ? end : end / clusterSize * clusterSize;
                    if (first < last) {
                        Arrays.fill(model, (int) first, (int) last, (byte) 0);
                    }
                }
            }
        }
    }

    static Op op(long seed, long i, int size, int clusterSize) {
        SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + i);
        int kindRoll = r.nextInt(10);
        int kind = kindRoll < 7 ? 0 : kindRoll < 9 ? 1 : 2;
        long offset = r.nextBoolean() ? r.nextInt(size / 512) * 512L : r.nextInt(size);
        int length = (int) Math.min(size - offset, 1 + r.nextInt(3 * clusterSize));
        return new Op(kind, offset, length, (byte) r.nextInt());
    }

    public static void main(String[] args) throws Exception {
        Path image = Path.of(args[0]);
        long seed = Long.parseLong(args[1]);
        int flushEvery = Integer.parseInt(args[2]);
        try (BlockNode node = Images.open(image, null, true)) {
            int size = (int) node.size();
            for (long i = 0; i < 1_000_000; i++) {
                op(seed, i, size, node.clusterSize()).applyTo(node);
                if ((i + 1) % flushEvery == 0) {
                    node.flush();
                    System.out.println("flushed " + i);
                    System.out.flush();
                }
            }
        }
    }
}
