package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.ChainLink;
import io.blockjobs.sdk.job.ErrorAction;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.JobBody;
import io.blockjobs.sdk.job.JobCancelledException;
import io.blockjobs.sdk.job.JobCommand;
import io.blockjobs.sdk.job.JobContext;
import io.blockjobs.sdk.job.JobSetup;
import io.blockjobs.sdk.job.OnError;
import io.blockjobs.sdk.job.WriteTracker;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a job plugin's command without a daemon: named in-memory nodes, a context that records
 * progress, counts throttled bytes and pause points, and can cancel the job after a number of
 * pause points. Speed limits are accounted, not slept.
 */
public final class JobHarness {
    private final Map<String, BlockNode> nodes = new HashMap<>();
    private final List<String> claimed = new ArrayList<>();

    /** What a run did. */
    public record Outcome(boolean completed, boolean cancelled, Exception error, long progressDone,
                          long progressTotal, long throttledBytes, int pausePoints, List<String> errorActions) {
    }

    /** Adds a node under {@code name}. */
    public JobHarness node(String name, BlockNode node) {
        nodes.put(name, node);
        return this;
    }

    /** Nodes the last prepared job claimed. */
    public List<String> claimed() {
        return claimed;
    }

    /** Prepares the job as the platform would (the factory sees a {@link JobSetup}). */
    public <A extends JobArgs> JobBody prepare(JobCommand<A> command, A args) {
        claimed.clear();
        JobSetup setup = new JobSetup() {
            @Override
            public BlockNode claim(String name) {
                BlockNode n = nodes.get(name);
                if (n == null) {
                    throw new CommandException("Device '" + name + "' not found");
                }
                if (claimed.contains(name)) {
                    throw new CommandException("Node '" + name + "' is busy");
                }
                claimed.add(name);
                return n;
            }

            @Override
            public BlockNode claimWritable(String name) {
                return claim(name);
            }

            @Override
            public BlockNode use(String name, String role, java.util.Set<io.blockjobs.sdk.block.BlockPermission> perm,
                                 java.util.Set<io.blockjobs.sdk.block.BlockPermission> shared) {
                return claim(name);
            }

            @Override
            public void reopenReadWrite(String name) {
                if (!nodes.containsKey(name)) {
                    throw new CommandException("Device '" + name + "' not found");
                }
            }

            @Override
            public BlockNode insertFilter(String name, io.blockjobs.sdk.job.FilterSpec filter) {
                BlockNode below = nodes.get(name);
                if (below == null) {
                    throw new CommandException("Device '" + name + "' not found");
                }
                String filterName = filter.nodeName() != null ? filter.nodeName() : name + "-filter";
                BlockNode f = new HarnessFilter(filterName, below, filter.driver().equals("copy-on-read"));
                nodes.put(filterName, f);
                return f;
            }

            @Override
            public void freezeBackingChain(String top, String base) {
            }

            @Override
            public WriteTracker trackWrites(String name, String filterNodeName) {
                return new WriteTracker() { // no clients write in the harness
                    @Override
                    public String filterNodeName() {
                        return filterNodeName != null ? filterNodeName : name + "-filter";
                    }

                    @Override
                    public List<Range> takeDirty() {
                        return List.of();
                    }

                    @Override
                    public boolean awaitDirty(long millis) {
                        return false;
                    }

                    @Override
                    public AutoCloseable blockWrites() {
                        return () -> { };
                    }
                };
            }

            @Override
            public List<ChainLink> chain(String name) {
                BlockNode n = nodes.get(name);
                if (n == null) {
                    throw new CommandException("Device '" + name + "' not found");
                }
                List<ChainLink> links = new ArrayList<>();
                for (BlockNode b = n; b != null; b = b.backing().orElse(null)) {
                    links.add(new ChainLink(nameOf(b), b, b.filename(), b.driver()));
                }
                return links;
            }
        };
        return command.factory().prepare(args, setup);
    }

    private String nameOf(BlockNode node) {
        return nodes.entrySet().stream().filter(e -> e.getValue() == node).map(Map.Entry::getKey).findFirst()
                .orElse(node.filename());
    }

    /** Runs {@code body} to its end on this thread; cancels it at pause point {@code cancelAt} (or never: -1). */
    public Outcome run(JobBody body, OnError onError, int cancelAt) {
        Context ctx = new Context(onError, cancelAt);
        try {
            body.run(ctx);
            return ctx.outcome(true, false, null);
        } catch (JobCancelledException e) {
            return ctx.outcome(false, true, null);
        } catch (Exception e) {
            return ctx.outcome(false, false, e);
        }
    }

    private static final class Context implements JobContext {
        private final OnError onError;
        private final int cancelAt;
        private long done;
        private long total;
        private long throttled;
        private int pausePoints;
        private final List<String> actions = new ArrayList<>();

        Context(OnError onError, int cancelAt) {
            this.onError = onError;
            this.cancelAt = cancelAt;
        }

        Outcome outcome(boolean completed, boolean cancelled, Exception error) {
            return new Outcome(completed, cancelled, error, done, total, throttled, pausePoints, actions);
        }

        @Override
        public String id() {
            return "harness";
        }

        @Override
        public void pausePoint() {
            if (++pausePoints == cancelAt) {
                throw new JobCancelledException();
            }
        }

        @Override
        public void throttle(long bytes) {
            throttled += bytes;
            pausePoint();
        }

        @Override
        public void progress(long d, long t) {
            done = d;
            total = t;
        }

        @Override
        public void ready() {
        }

        @Override
        public boolean completeRequested() {
            return true;
        }

        @Override
        public ErrorAction onIoError(IOException error, boolean read) throws IOException {
            actions.add(onError.name().toLowerCase(java.util.Locale.ROOT));
            if (onError == OnError.IGNORE) {
                return ErrorAction.IGNORE;
            }
            throw error;
        }

        @Override
        public Logger log() {
            return LoggerFactory.getLogger("harness");
        }

        @Override
        public io.blockjobs.sdk.job.Copier copier(int maxInFlight, int bufferSize) {
            Context ctx = this;
            return new io.blockjobs.sdk.job.Copier() { // copies at once, on the job's thread
                private IOException ignored;

                @Override
                public void copy(long offset, int length, Read read, Write write) throws IOException {
                    java.nio.ByteBuffer buffer = java.nio.ByteBuffer.allocate(length);
                    while (true) {
                        boolean reading = read != null;
                        try {
                            buffer.clear();
                            if (read != null) {
                                read.read(offset, buffer);
                                buffer.flip();
                            }
                            reading = false;
                            write.write(offset, buffer);
                            return;
                        } catch (IOException e) {
                            if (ctx.onIoError(e, reading) == ErrorAction.IGNORE) {
                                if (ignored == null) {
                                    ignored = e;
                                }
                                return;
                            }
                        }
                    }
                }

                @Override
                public void drain() {
                }

                @Override
                public IOException ignoredError() {
                    return ignored;
                }

                @Override
                public void close() {
                }
            };
        }
    }

    /** A filter above a harness node: forwards, and for copy-on-read writes what it read up. */
    private static final class HarnessFilter implements BlockNode {
        private final String name;
        private final BlockNode below;
        private final boolean copyOnRead;

        HarnessFilter(String name, BlockNode below, boolean copyOnRead) {
            this.name = name;
            this.below = below;
            this.copyOnRead = copyOnRead;
        }

        @Override
        public String driver() {
            return copyOnRead ? "copy-on-read" : "filter";
        }

        @Override
        public String filename() {
            return below.filename();
        }

        @Override
        public String nodeName() {
            return name;
        }

        @Override
        public long size() throws IOException {
            return below.size();
        }

        @Override
        public boolean isReadOnly() {
            return below.isReadOnly();
        }

        @Override
        public int clusterSize() {
            return below.clusterSize();
        }

        @Override
        public java.util.Optional<BlockNode> backing() {
            return below.backing();
        }

        @Override
        public void read(long offset, java.nio.ByteBuffer dst) throws IOException {
            java.nio.ByteBuffer copy = dst.duplicate();
            below.read(offset, dst);
            if (copyOnRead && !below.blockStatus(offset, copy.remaining()).allocated()) {
                copy.limit(dst.position());
                below.writeUnallocated(offset, copy);
            }
        }

        @Override
        public void write(long offset, java.nio.ByteBuffer src) throws IOException {
            below.write(offset, src);
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
            below.writeZeroes(offset, length, mayUnmap);
        }

        @Override
        public void discard(long offset, long length) throws IOException {
            below.discard(offset, length);
        }

        @Override
        public void flush() throws IOException {
            below.flush();
        }

        @Override
        public io.blockjobs.sdk.block.BlockStatus blockStatus(long offset, long maxLength) throws IOException {
            return below.blockStatus(offset, maxLength);
        }

        @Override
        public void close() {
        }
    }
}
