package io.blockjobs.sdk.job;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * Copies with several requests in flight and bounded buffers, from {@link JobContext#copier}.
 * Call it from the job's thread: {@link #copy} hands a range to a worker and returns at once,
 * or waits while the copier is full. A failed copy goes through the job's {@code on-error}
 * policy when the job thread next calls {@link #copy} or {@link #drain}: {@code report} throws
 * the error there, {@code stop} pauses the job and retries the range once it is resumed,
 * {@code ignore} skips it (see {@link #ignoredError()}). A pause waits for the copies in flight
 * before the job reports itself paused.
 */
public interface Copier extends AutoCloseable {

    /** Reads a range into a buffer of its length. */
    @FunctionalInterface
    interface Read {
        void read(long offset, ByteBuffer dst) throws IOException;
    }

    /** Writes a range from a buffer holding its data (null read: a buffer of nothing). */
    @FunctionalInterface
    interface Write {
        void write(long offset, ByteBuffer src) throws IOException;
    }

    /**
     * Copies {@code length} bytes at {@code offset}: {@code read} fills a buffer (skipped when
     * null), then {@code write} stores it. With a {@code read}, {@code length} is at most the
     * copier's buffer size; without one (a write-zeroes, say) it may be longer, and the buffer
     * {@code write} gets holds at most the buffer size.
     */
    void copy(long offset, int length, Read read, Write write) throws IOException;

    /** Waits for every copy handed over so far, applying the error policy to failures. */
    void drain() throws IOException;

    /** The first error the {@code ignore} policy skipped, or null. */
    IOException ignoredError();

    /** Waits for the copies in flight and frees the buffers, without applying the policy. */
    @Override
    void close();
}
