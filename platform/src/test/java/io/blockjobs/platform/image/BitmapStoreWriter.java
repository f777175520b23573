package io.blockjobs.platform.image;

import io.blockjobs.platform.image.PersistentBitmaps.ToStore;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockStatus;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;

/**
 * The child process of {@link Qcow2BitmapsTest}'s kill test: round after round opens an image
 * read-write, loads its bitmaps (marking them in use), removes one of them every other round,
 * stores them all with new bits and closes, printing {@code stored N} after each round. Just
 * before its {@code killAt}-th write, write-zeroes, discard or flush to the file it sends itself
 * SIGKILL, so that seed by seed the kill lands between any two of them.
 */
public final class BitmapStoreWriter {

    static final String[] NAMES = {"b0", "b1", "b2"};
    static final int[] GRANULARITY_BITS = {9, 16, 12};

    /** The bits bitmap {@code b} gets in round {@code round}. */
    static List<Qcow2BitmapsTest.Run> bits(long seed, long round, int b, long granules) {
        SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + round * 31 + b);
        return Qcow2BitmapsTest.randomRuns(r, granules, 1 + r.nextInt(40));
    }

    public static void main(String[] args) throws Exception {
        Path image = Path.of(args[0]);
        long seed = Long.parseLong(args[1]);
        long killAt = Long.parseLong(args[2]);
        long[] ops = {0};
        for (long round = 0; round < 1_000_000; round++) {
            BlockNode file = new KillingFile(FileNode.open(image, true), ops, killAt);
            try (Qcow2Node node = Qcow2Node.open(file, true, (name, format) -> null)) {
                node.load((name, granularityBits, inUse, auto) -> (first, count) -> { });
                if (round % 2 == 1) {
                    node.remove("b1");
                }
                List<ToStore> all = new ArrayList<>();
                for (int b = 0; b < NAMES.length; b++) {
                    long granules = Qcow2BitmapsTest.granules(node.size(), GRANULARITY_BITS[b]);
                    all.add(new ToStore(NAMES[b], GRANULARITY_BITS[b], b != 2,
                            Qcow2BitmapsTest.source(bits(seed, round, b, granules))));
                }
                node.store(all);
            }
            System.out.println("stored " + round);
            System.out.flush();
        }
    }

    /** The file, until the operation that kills the process. */
    private record KillingFile(FileNode file, long[] ops, long killAt) implements BlockNode {

        private void next() throws IOException {
            if (++ops[0] == killAt) {
                try {
                    new ProcessBuilder("kill", "-KILL", String.valueOf(ProcessHandle.current().pid())).start().waitFor();
                    new CountDownLatch(1).await(); // until the signal lands
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                throw new IOException("still alive after SIGKILL");
            }
        }

        @Override
        public String driver() {
            return file.driver();
        }

        @Override
        public String filename() {
            return file.filename();
        }

        @Override
        public long size() throws IOException {
            return file.size();
        }

        @Override
        public boolean isReadOnly() {
            return file.isReadOnly();
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            file.read(offset, dst);
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            next();
            file.write(offset, src);
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
            next();
            file.writeZeroes(offset, length, mayUnmap);
        }

        @Override
        public void discard(long offset, long length) throws IOException {
            next();
            file.discard(offset, length);
        }

        @Override
        public void flush() throws IOException {
            next();
            file.flush();
        }

        @Override
        public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
            return file.blockStatus(offset, maxLength);
        }

        @Override
        public void close() throws IOException {
            file.close();
        }
    }
}
