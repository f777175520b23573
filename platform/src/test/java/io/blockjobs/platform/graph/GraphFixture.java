package io.blockjobs.platform.graph;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.image.ImageDrivers;
import io.blockjobs.platform.image.Images;
import io.blockjobs.platform.image.Qcow2CreateOptions;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.WriteHook;
import io.blockjobs.sdk.block.WriteRequest;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Predicate;

/**
 * A real graph for tests: the built-in image and filter drivers registered as the daemon
 * registers them, nodes added from JSON text as a QMP client sends {@code blockdev-add}, and
 * the thread helpers the ordering tests need (a request started on its own virtual thread, a
 * check that it is parked inside the graph's wait, a hook that records and can hold a write).
 */
final class GraphFixture implements AutoCloseable {
    /** How long a test waits for something that must happen before it calls the graph broken. */
    static final long PATIENCE_SECONDS = 30;

    final Path dir;
    final DriverRegistry registry = new DriverRegistry();
    final BlockGraph graph = new BlockGraph(registry);
    private int exports;

    GraphFixture(Path dir) {
        this.dir = dir;
        ImageDrivers.all().forEach(d -> registry.register(d, "built-in"));
        FilterDrivers.all(graph).forEach(d -> registry.register(d, "built-in"));
    }

    /** {@code blockdev-add} with these arguments (JSON text; {@code %s} filled in first). */
    GraphNode add(String json, Object... args) {
        return graph.add(Json.MAPPER.readTree(args.length == 0 ? json : String.format(json, args)));
    }

    /** A fresh qcow2 image of {@code size} bytes in the test's folder, optionally over a backing file. */
    Path qcow2(String name, long size, String backing) throws IOException {
        Path p = dir.resolve(name);
        Qcow2CreateOptions o = Qcow2CreateOptions.of(size);
        Images.createQcow2(p, backing == null ? o : o.withBacking(backing, "qcow2"));
        return p;
    }

    /** A raw image of {@code size} zero bytes. */
    Path raw(String name, long size) throws IOException {
        Path p = dir.resolve(name);
        Images.createRaw(p, size);
        return p;
    }

    /** Adds a file node {@code f-NAME} and a qcow2 node {@code NAME} on it (backing given by name, or none). */
    GraphNode qcow2Node(String name, Path image, String backing) {
        add("""
                {"driver": "file", "node-name": "f-%s", "filename": "%s"}""", name, image);
        if (backing == null) {
            return add("""
                    {"driver": "qcow2", "node-name": "%s", "file": "f-%s", "backing": null}""", name, name);
        }
        return add("""
                {"driver": "qcow2", "node-name": "%s", "file": "f-%s", "backing": "%s"}""", name, name, backing);
    }

    /**
     * The chain QEMU's experiments use: {@code top -> mid -> base}, each a qcow2 node on its own
     * file node ({@code f-top}, ...), images of {@code size} bytes whose headers name their backing files.
     */
    void chain(long size) throws IOException {
        chainImages(size);
        openChain();
    }

    /** The images of {@link #chain}, not opened yet. */
    void chainImages(long size) throws IOException {
        qcow2("base.qcow2", size, null);
        qcow2("mid.qcow2", size, "base.qcow2");
        qcow2("top.qcow2", size, "mid.qcow2");
    }

    /** Opens the images of {@link #chainImages} as {@link #chain} does. */
    void openChain() {
        qcow2Node("base", dir.resolve("base.qcow2"), null);
        qcow2Node("mid", dir.resolve("mid.qcow2"), "base");
        qcow2Node("top", dir.resolve("top.qcow2"), "mid");
    }

    GraphNode node(String name) {
        return graph.require(name);
    }

    /**
     * An NBD export's root edge as QEMU's {@code blk_exp_add} makes it: attached taking consistent
     * read (and write) and sharing everything, then {@code nbd_export_create} unshares resize. The
     * two steps give QEMU's messages: a writer conflicts on 'write' first, a reader on 'resize'.
     */
    Edge export(String nodeName, boolean writable) {
        int perm = Perm.CONSISTENT_READ.bit() | (writable ? Perm.WRITE.bit() : 0);
        Edge e = graph.attachRoot(BlockGraph.RootUser.export("e" + ++exports), "root", graph.require(nodeName), perm,
                Perm.ALL, true);
        try {
            graph.setRootPermissions(e, perm, Perm.ALL & ~Perm.RESIZE.bit());
        } catch (RuntimeException ex) {
            graph.detachRoot(e);
            throw ex;
        }
        return e;
    }

    @Override
    public void close() {
        graph.close();
    }

    // ---- data ---------------------------------------------------------------------------------

    static ByteBuffer pattern(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return ByteBuffer.wrap(b);
    }

    static byte[] read(BlockNode node, long offset, int length) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(length);
        node.read(offset, b);
        assertThat(b.hasRemaining()).as("read filled the buffer").isFalse();
        return b.array();
    }

    static byte[] filled(int length, int value) {
        return pattern(length, value).array();
    }

    // ---- threads ------------------------------------------------------------------------------

    /** A request running on its own virtual thread. */
    static final class Async<T> {
        final Thread thread;
        final CompletableFuture<T> result = new CompletableFuture<>();

        private Async(String name, Callable<T> body) {
            thread = Thread.ofVirtual().name(name).unstarted(() -> {
                try {
                    result.complete(body.call());
                } catch (Throwable t) {
                    result.completeExceptionally(t);
                }
            });
            thread.start();
        }

        /** Its result, failing the test if it does not come within {@link #PATIENCE_SECONDS}. */
        T join() throws Exception {
            try {
                return result.get(PATIENCE_SECONDS, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                throw new AssertionError(thread.getName() + " did not finish; it is at "
                        + Arrays.toString(thread.getStackTrace()), e);
            } catch (ExecutionException e) {
                if (e.getCause() instanceof Exception x) {
                    throw x;
                }
                throw e;
            }
        }

        boolean isDone() {
            return result.isDone();
        }
    }

    @FunctionalInterface
    interface IoAction {
        void run() throws Exception;
    }

    static <T> Async<T> async(String name, Callable<T> body) {
        return new Async<>(name, body);
    }

    static Async<Void> async(String name, IoAction body) {
        return new Async<>(name, () -> {
            body.run();
            return null;
        });
    }

    /**
     * Waits until {@code t} is parked on a condition inside {@code className.method} (the graph's
     * own wait: a tracked request, a drain gate), failing if it ends or runs on instead. This is
     * not a sleep: the thread's stack says where it waits.
     */
    static void awaitParkedIn(Async<?> a, String className, String method) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(PATIENCE_SECONDS);
        while (true) {
            Thread.State s = a.thread.getState();
            if (s == Thread.State.TERMINATED || a.isDone()) {
                fail(a.thread.getName() + " finished instead of waiting in " + className + "." + method
                        + (a.result.isCompletedExceptionally() ? " (it failed: " + a.result.exceptionNow() + ")" : ""));
            }
            if (s == Thread.State.WAITING && parkedIn(a.thread.getStackTrace(), className, method)) {
                return;
            }
            if (System.nanoTime() > deadline) {
                fail(a.thread.getName() + " is not waiting in " + className + "." + method + ": "
                        + Arrays.toString(a.thread.getStackTrace()));
            }
            LockSupport.parkNanos(200_000); // polling the thread's state, not waiting for time to pass
        }
    }

    private static boolean parkedIn(StackTraceElement[] stack, String className, String method) {
        boolean onCondition = false;
        for (StackTraceElement e : stack) {
            if (e.getMethodName().startsWith("await")) {
                onCondition = true; // a Condition's await, not a lock's brief contention
            }
            if (onCondition && e.getClassName().endsWith(className) && e.getMethodName().equals(method)) {
                return true;
            }
        }
        return false;
    }

    // ---- hooks --------------------------------------------------------------------------------

    /** What happened, in order, across threads. */
    static final class Events {
        private final List<String> list = Collections.synchronizedList(new ArrayList<>());

        void add(String e) {
            list.add(e);
        }

        List<String> snapshot() {
            synchronized (list) {
                return List.copyOf(list);
            }
        }
    }

    /**
     * A hook that records {@code TAG.before KIND@OFFSET+LENGTH} and {@code TAG.after ... ok|failed},
     * and holds the writes {@code hold} matches in {@code before} until {@link #release()}.
     */
    static final class RecordingHook implements WriteHook {
        private final String tag;
        private final Events events;
        private final Predicate<WriteRequest> hold;
        final CountDownLatch held = new CountDownLatch(1);
        private final CountDownLatch release = new CountDownLatch(1);

        RecordingHook(String tag, Events events) {
            this(tag, events, r -> false);
        }

        RecordingHook(String tag, Events events, Predicate<WriteRequest> hold) {
            this.tag = tag;
            this.events = events;
            this.hold = hold;
        }

        static String describe(WriteRequest r) {
            return r.kind() + "@" + r.offset() + "+" + r.length() + (r.flags().isEmpty() ? "" : " " + new java.util.TreeSet<>(r.flags()));
        }

        @Override
        public void before(WriteRequest request) throws IOException {
            events.add(tag + ".before " + describe(request));
            if (hold.test(request)) {
                held.countDown();
                try {
                    if (!release.await(PATIENCE_SECONDS, TimeUnit.SECONDS)) {
                        throw new IOException(tag + ": the test never released the held write");
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException(e);
                }
            }
        }

        @Override
        public void after(WriteRequest request, boolean succeeded) {
            events.add(tag + ".after " + describe(request) + (succeeded ? " ok" : " failed"));
        }

        /** Waits until a held write is inside {@code before}. */
        void awaitHeld() throws InterruptedException {
            assertThat(held.await(PATIENCE_SECONDS, TimeUnit.SECONDS)).as(tag + " holds a write").isTrue();
        }

        void release() {
            release.countDown();
        }
    }
}
