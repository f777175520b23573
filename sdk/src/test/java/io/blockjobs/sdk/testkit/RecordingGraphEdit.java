package io.blockjobs.sdk.testkit;

import io.blockjobs.sdk.job.GraphEdit;
import java.util.ArrayList;
import java.util.List;

/**
 * The {@link GraphEdit} a harnessed job's {@code prepare}, {@code commit} and {@code abort} get:
 * it records every call, with the hook it came from, and applies it to the harness graph as the
 * platform does ({@code setBacking} relinks the {@link MemoryNode}s and rewrites the overlay's
 * header, {@code replaceUsers} moves clients, {@code removeFilter} takes the filter out). The
 * edits of {@code prepare} are undone if the transaction aborts. Made with {@code new}, outside a
 * harness, it only records.
 */
public final class RecordingGraphEdit implements GraphEdit {

    /** A recorded call. */
    public sealed interface Call permits SetBacking, ReplaceUsers, RemoveFilter {
        /** The hook that made it: {@code prepare}, {@code commit}, {@code abort} or {@code clean}. */
        String phase();
    }

    /** {@link GraphEdit#setBacking(String, String, String, boolean)}. */
    public record SetBacking(String phase, String overlayNode, String backingNode, String backingFile,
                             boolean maskProtocol) implements Call {
    }

    /** {@link GraphEdit#replaceUsers}. */
    public record ReplaceUsers(String phase, String fromNode, String toNode) implements Call {
    }

    /** {@link GraphEdit#removeFilter}. */
    public record RemoveFilter(String phase, String filterNodeName) implements Call {
    }

    private final HarnessJob job;
    private final List<Call> calls = new ArrayList<>();
    private volatile String phase = "prepare";

    /** An edit that only records. */
    public RecordingGraphEdit() {
        this(null);
    }

    RecordingGraphEdit(HarnessJob job) {
        this.job = job;
    }

    void phase(String name) {
        this.phase = name;
    }

    /** Every call so far, in order. */
    public synchronized List<Call> calls() {
        return List.copyOf(calls);
    }

    /** The calls one hook made. */
    public synchronized List<Call> calls(String hook) {
        return calls.stream().filter(c -> c.phase().equals(hook)).toList();
    }

    @Override
    public void setBacking(String overlayNode, String backingNode, String backingFile) {
        setBacking(overlayNode, backingNode, backingFile, false);
    }

    @Override
    public void setBacking(String overlayNode, String backingNode, String backingFile, boolean maskProtocol) {
        record(new SetBacking(phase, overlayNode, backingNode, backingFile, maskProtocol));
        if (job != null) {
            job.addEdit(job.graph().setBacking(job.owner(), overlayNode, backingNode, backingFile));
        }
    }

    @Override
    public void replaceUsers(String fromNode, String toNode) {
        record(new ReplaceUsers(phase, fromNode, toNode));
        if (job != null) {
            job.addEdit(job.graph().replaceUsers(fromNode, toNode, job.ownEdges()));
        }
    }

    @Override
    public void removeFilter(String filterNodeName) {
        record(new RemoveFilter(phase, filterNodeName));
        if (job != null) {
            job.graph().removeFilter(filterNodeName);
            job.forgetFilter(filterNodeName);
        }
    }

    private synchronized void record(Call call) {
        calls.add(call);
    }
}
