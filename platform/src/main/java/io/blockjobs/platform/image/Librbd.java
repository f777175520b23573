package io.blockjobs.platform.image;

import com.sun.jna.Callback;
import com.sun.jna.CallbackThreadInitializer;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The calls of Ceph's C libraries ({@code librados2}, {@code librbd1}) the {@code rbd} driver
 * makes, bound with JNA's direct mapping as the other native calls are. Return values are
 * librados' convention: 0 or a count on success, {@code -errno} on failure.
 *
 * <p>Asynchronous requests ({@code rbd_aio_*}) complete on librbd's own threads: the completion
 * callback hands the result to a {@link CompletableFuture} that the requesting (virtual) thread
 * waits on, so no thread of the daemon is held in native code while the cluster works.
 */
final class Librbd {
    private Librbd() {
    }

    private static String load() {
        try {
            if (Native.POINTER_SIZE != 8) {
                return "a 64-bit JVM is needed (rbd_completion_t comes back in a long)";
            }
            Native.register(Rados.class, "rados");
            Native.register(Rbd.class, "rbd");
            // librbd's threads call back often: attach them once, as daemon threads
            Native.setCallbackThreadInitializer(DONE, new CallbackThreadInitializer(true, false, "librbd-completion"));
            Native.setCallbackThreadInitializer(FIRST_RUN, new CallbackThreadInitializer(true, false, "librbd-diff"));
            return null;
        } catch (Throwable t) {
            return t.toString();
        }
    }

    /** Throws if librados/librbd are missing, with what to install. */
    static void require() {
        if (UNAVAILABLE != null) {
            throw new IllegalStateException("the rbd driver needs Ceph's librbd1 and librados2 (apt-get install librbd1): "
                    + UNAVAILABLE);
        }
    }

    /** {@code librados.h}. */
    static final class Rados {
        private Rados() {
        }

        static native int rados_create(PointerByReference cluster, String id);

        static native int rados_conf_read_file(Pointer cluster, String path);

        static native int rados_conf_set(Pointer cluster, String option, String value);

        static native int rados_conf_get(Pointer cluster, String option, byte[] buf, long len);

        static native int rados_connect(Pointer cluster);

        static native void rados_shutdown(Pointer cluster);

        static native int rados_ioctx_create(Pointer cluster, String pool, PointerByReference ioctx);

        static native void rados_ioctx_set_namespace(Pointer ioctx, String namespace);

        static native void rados_ioctx_destroy(Pointer ioctx);
    }

    /** {@code rbd/librbd.h}. */
    static final class Rbd {
        private Rbd() {
        }

        static final long FEATURE_FAST_DIFF = 1L << 4;
        static final long FLAG_FAST_DIFF_INVALID = 1L << 1;

        static native int rbd_create(Pointer ioctx, String name, long size, IntByReference order);

        static native int rbd_open(Pointer ioctx, String name, PointerByReference image, String snapshot);

        static native int rbd_close(Pointer image);

        static native int rbd_get_size(Pointer image, LongByReference size);

        static native int rbd_stat(Pointer image, Pointer info, long infoSize);

        static native int rbd_get_features(Pointer image, LongByReference features);

        static native int rbd_get_flags(Pointer image, LongByReference flags);

        static native int rbd_resize(Pointer image, long size);

        static native int rbd_diff_iterate2(Pointer image, String fromSnapshot, long offset, long length,
                                            byte includeParent, byte wholeObject, DiffCallback cb, Pointer arg);

        static native int rbd_aio_create_completion(Pointer arg, Completion cb, long[] completion);

        static native long rbd_aio_get_return_value(Pointer completion);

        static native void rbd_aio_release(Pointer completion);

        static native int rbd_aio_read(Pointer image, long offset, long length, Pointer buf, Pointer completion);

        static native int rbd_aio_write(Pointer image, long offset, long length, Pointer buf, Pointer completion);

        static native int rbd_aio_discard(Pointer image, long offset, long length, Pointer completion);

        static native int rbd_aio_write_zeroes(Pointer image, long offset, long length, Pointer completion, int zeroFlags,
                                               int opFlags);

        static native int rbd_aio_flush(Pointer image, Pointer completion);
    }

    /** {@code rbd_callback_t}. */
    interface Completion extends Callback {
        void invoke(Pointer completion, Pointer arg);
    }

    /** {@code rbd_diff_iterate2}'s callback: {@code (offset, length, exists, arg)}; non-zero stops. */
    interface DiffCallback extends Callback {
        int invoke(long offset, long length, int exists, Pointer arg);
    }

    private static final ConcurrentHashMap<Long, CompletableFuture<Long>> PENDING = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT = new AtomicLong(1);

    /** The one completion callback: the argument is the number of the request's future. */
    private static final Completion DONE = (completion, arg) -> {
        long r = Rbd.rbd_aio_get_return_value(completion);
        Rbd.rbd_aio_release(completion);
        CompletableFuture<Long> f = PENDING.remove(Pointer.nativeValue(arg));
        if (f != null) {
            f.complete(r);
        }
    };

    /** What the diff callback returns to end the iteration early (QEMU's {@code QEMU_RBD_EXIT_DIFF_ITERATE2}). */
    static final int STOP = -9000;

    /** The first allocated extents' runs being looked for, by the number passed as the callback's argument. */
    private static final ConcurrentHashMap<Long, long[]> RUNS = new ConcurrentHashMap<>();

    /**
     * The one diff callback (JNA makes a native stub per callback object, so there is one, not
     * one per call): grows the first run of allocated extents and stops at the hole after it.
     */
    private static final DiffCallback FIRST_RUN = (offset, length, exists, arg) -> {
        long[] run = RUNS.get(Pointer.nativeValue(arg));
        if (exists == 0 || run == null) {
            return 0;
        }
        if (run[0] < 0) {
            run[0] = offset;
            run[1] = offset + length;
            return 0;
        }
        if (offset > run[1]) {
            return STOP; // a hole after the first run: done
        }
        run[1] = offset + length;
        return 0;
    };

    /**
     * {@code rbd_diff_iterate2} over whole objects of {@code [offset, offset + length)}, with
     * parents: sets {@code run} to the first run of allocated extents' start and end (left at
     * -1 when there is none). Returns librbd's result, {@link #STOP} when the run ended early.
     */
    static int firstAllocatedRun(Pointer image, long offset, long length, long[] run) {
        long id = NEXT.getAndIncrement();
        RUNS.put(id, run);
        try {
            return Rbd.rbd_diff_iterate2(image, null, offset, length, (byte) 1, (byte) 1, FIRST_RUN, new Pointer(id));
        } finally {
            RUNS.remove(id);
        }
    }

    /** Why the libraries could not be loaded, or null once they are (after the callbacks: it registers them). */
    private static final String UNAVAILABLE = load();

    /** Something that starts one request with the completion it is given, returning 0 or {@code -errno}. */
    @FunctionalInterface
    interface Submit {
        int start(Pointer completion);
    }

    /**
     * Starts an asynchronous request and waits for its result (a count or {@code -errno}). The
     * wait cannot be cut short: librbd may still use the request's buffer until it completes.
     * A cluster that does not answer makes it wait as long as librados does: forever with
     * librados' default {@code rados_osd_op_timeout} of 0, as in QEMU (the conf file can set it).
     */
    static long await(Submit submit) {
        long id = NEXT.getAndIncrement();
        CompletableFuture<Long> f = new CompletableFuture<>();
        PENDING.put(id, f);
        long[] c = new long[1]; // a primitive array: no JNA Memory object, and no Cleaner, per request
        int r = Rbd.rbd_aio_create_completion(new Pointer(id), DONE, c);
        if (r < 0) {
            PENDING.remove(id);
            return r;
        }
        Pointer completion = new Pointer(c[0]);
        r = submit.start(completion);
        if (r < 0) {
            PENDING.remove(id);
            Rbd.rbd_aio_release(completion);
            return r;
        }
        boolean interrupted = false;
        while (true) {
            try {
                long result = f.get();
                if (interrupted) {
                    Thread.currentThread().interrupt();
                }
                return result;
            } catch (InterruptedException e) {
                interrupted = true;
            } catch (java.util.concurrent.ExecutionException e) {
                throw new IllegalStateException(e.getCause());
            }
        }
    }
}
