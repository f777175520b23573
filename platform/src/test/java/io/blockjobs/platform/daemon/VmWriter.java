package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

/**
 * A VM writing to a disk over NBD, one 64 KiB block at a time at random places: every write is
 * stamped (each 8 bytes of it hold the writer's id and the write's number), and a {@link Model}
 * records which stamps each block may hold, so that a whole disk can be checked byte for byte.
 * A write in flight when the writer stops (its daemon killed, say) stays uncertain: its block may
 * hold the old stamp or the new one, sector by sector.
 */
final class VmWriter implements AutoCloseable {
    static final int BLOCK = 64 * 1024;
    static final int SECTOR = 512;
    static final Duration WAIT = Duration.ofMinutes(2);

    /** What each block of a disk may hold: a set of stamps, one once its last write was acknowledged. */
    static final class Model {
        private final List<Set<Long>> allowed = new ArrayList<>();

        /** A disk of {@code size} bytes every 8 bytes of which hold {@code initial}. */
        Model(long size, long initial) {
            for (long i = 0; i < size / BLOCK; i++) {
                allowed.add(new HashSet<>(Set.of(initial)));
            }
        }

        int blocks() {
            return allowed.size();
        }

        synchronized void begin(int block, long stamp) {
            allowed.get(block).add(stamp);
        }

        synchronized void acked(int block, long stamp) {
            allowed.set(block, new HashSet<>(Set.of(stamp)));
        }

        /** This model becomes a copy of {@code other}: a checkpoint. */
        void copyFrom(Model other) {
            Model snapshot = other.copy();
            synchronized (this) {
                allowed.clear();
                allowed.addAll(snapshot.allowed);
            }
        }

        Model copy() {
            Model m = new Model(0, 0);
            synchronized (this) {
                for (Set<Long> s : allowed) {
                    m.allowed.add(new HashSet<>(s));
                }
            }
            return m;
        }

        /** Mismatches of {@code disk} (at most a few, described), none if it equals the model. */
        synchronized List<String> mismatches(byte[] disk) {
            List<String> bad = new ArrayList<>();
            if (disk.length != (long) allowed.size() * BLOCK) {
                bad.add("the disk has " + disk.length + " bytes, the model " + (long) allowed.size() * BLOCK);
                return bad;
            }
            ByteBuffer b = ByteBuffer.wrap(disk);
            for (int s = 0; s < disk.length / SECTOR && bad.size() < 8; s++) {
                long first = b.getLong(s * SECTOR);
                boolean uniform = true;
                for (int i = 8; i < SECTOR && uniform; i += 8) {
                    uniform = b.getLong(s * SECTOR + i) == first;
                }
                Set<Long> ok = allowed.get(s * SECTOR / BLOCK);
                if (!uniform || !ok.contains(first)) {
                    bad.add("sector " + s + " holds " + Long.toHexString(first) + (uniform ? "" : " (torn)")
                            + ", the model allows " + ok.stream().map(Long::toHexString).toList());
                }
            }
            return bad;
        }

        void assertMatches(byte[] disk, String what) {
            assertThat(mismatches(disk)).as(what + " equals its model").isEmpty();
        }
    }

    final Model model;
    private final int id;
    private final Semaphore gate = new Semaphore(1);
    private final CompletableFuture<Void> done;
    private volatile boolean running = true;
    private volatile boolean paused;
    private volatile Throwable error;
    private int acked; // guarded by this

    /** Starts writing to {@code export} on the NBD server at {@code socket}; {@code id} goes into each stamp. */
    VmWriter(Path socket, String export, Model model, int id, long seed) {
        this.model = model;
        this.id = id;
        SplittableRandom random = new SplittableRandom(seed);
        done = new CompletableFuture<>();
        Thread.ofVirtual().name("vm-writer-" + id).start(() -> { // not the common pool: a paused writer would hold it
            try (RawNbdClient nbd = RawNbdClient.open(UnixDomainSocketAddress.of(socket), export, false)) {
                for (long n = 1; running; n++) {
                    gate.acquireUninterruptibly();
                    try {
                        if (!running) {
                            break;
                        }
                        write(nbd, random.nextInt(model.blocks()), ((long) id << 48) | n);
                    } finally {
                        gate.release();
                    }
                }
            } catch (Throwable t) {
                error = t; // the write in flight stays uncertain in the model
            }
            done.complete(null);
        });
    }

    private void write(RawNbdClient nbd, int block, long stamp) throws Exception {
        ByteBuffer data = ByteBuffer.allocate(BLOCK);
        while (data.hasRemaining()) {
            data.putLong(stamp);
        }
        model.begin(block, stamp);
        nbd.request(0, RawNbdClient.CMD_WRITE, stamp, (long) block * BLOCK, BLOCK, data.array());
        RawNbdClient.Reply r = nbd.reply(0, WAIT);
        if (r.errno() != 0) {
            throw new java.io.IOException("write of block " + block + " failed: errno " + r.errno());
        }
        model.acked(block, stamp);
        synchronized (this) {
            acked++;
            notifyAll();
        }
    }

    synchronized int acked() {
        return acked;
    }

    /** The error that stopped this writer, or null. */
    Throwable error() {
        return error;
    }

    /** Waits until {@code more} writes beyond {@code since} are acknowledged; fails if the writer stopped. */
    synchronized int awaitAcked(int since, int more) throws InterruptedException {
        long end = System.nanoTime() + WAIT.toNanos();
        while (acked < since + more && error == null && !done.isDone()) {
            long left = end - System.nanoTime();
            assertThat(left).as("writer %d: %d writes acknowledged in time", id, more).isPositive();
            wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
        }
        assertThat(acked).as("writer %d's acknowledged writes (error: %s)", id, error).isGreaterThanOrEqualTo(since + more);
        return acked;
    }

    /** Holds further writes once the one in flight, if any, is acknowledged: the VM paused. */
    void pause() {
        gate.acquireUninterruptibly();
        paused = true;
    }

    void resume() {
        paused = false;
        gate.release();
    }

    /** Stops after the write in flight, acknowledged or failed, and waits for that; paused, it writes no more. */
    void stop() throws Exception {
        running = false;
        if (paused) {
            resume();
        }
        done.get(WAIT.toSeconds(), TimeUnit.SECONDS);
    }

    /** Stops without waiting; a paused writer is let go so that its thread ends. */
    @Override
    public void close() {
        running = false;
        if (paused) {
            resume();
        }
    }
}
