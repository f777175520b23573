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
    }
}
