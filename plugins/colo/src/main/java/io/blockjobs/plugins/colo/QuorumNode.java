package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.block.BlockStatus;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import io.blockjobs.sdk.driver.ChildChanges;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverEvents;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A {@code quorum} node, as QEMU's {@code block/quorum.c}. Writes (and write-zeroes) go to every
 * child at once and succeed when at least {@code vote-threshold} children succeed. Reads with
 * {@code read-pattern=quorum} read every child and vote on the data ({@link Vote}); with
 * {@code fifo} they read the first child and go to the next on an error. Each child that fails
 * or loses a vote is reported ({@code QUORUM_REPORT_BAD}); a request that misses the threshold
 * is reported too ({@code QUORUM_FAILURE}) and fails with the errno most children gave. With
 * {@code rewrite-corrupted} the children that lost a read's vote are written the winning data.
 * Discards do nothing (QEMU's quorum has no discard). Children come and go with
 * {@code x-blockdev-change} ({@link #childChanges()}).
 */
final class QuorumNode implements DriverNode, ChildChanges {
    private static final Logger LOG = LoggerFactory.getLogger(QuorumNode.class);
    private static final int SECTOR = 512;

    /** One child: its name in the graph ({@code children.N}) and its request entry point. */
    record Child(String name, BlockNode node) {
    }

    private final String name;
    private final int threshold;
    private final boolean blkverify;
    private final boolean rewriteCorrupted;
    private final boolean fifo;
    private final long size;
    private final boolean readOnly;
    private final DriverEvents events;
    /** Replaced whole on a change (main loop, drained); each request works on the array it read. */
    private volatile Child[] children;
    private int nextChildIndex; // QEMU's next_child_index: names are never reused while a later one exists

    QuorumNode(String name, List<BlockNode> children, int threshold, boolean blkverify, boolean rewriteCorrupted,
               boolean fifo, long size, boolean readOnly, DriverEvents events) {
        this.name = name;
        this.threshold = threshold;
        this.blkverify = blkverify;
        this.rewriteCorrupted = rewriteCorrupted;
        this.fifo = fifo;
        this.size = size;
        this.readOnly = readOnly;
        this.events = events;
        Child[] cs = new Child[children.size()];
        for (int i = 0; i < cs.length; i++) {
            cs[i] = new Child("children." + i, children.get(i));
        }
        this.children = cs;
        this.nextChildIndex = cs.length;
    }

    @Override
    public String driver() {
        return "quorum";
    }

    @Override
    public String filename() {
        return name;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isReadOnly() {
        return readOnly;
    }

    /** QEMU's quorum_child_perm: with rewrite-corrupted the node writes its children whatever its users do. */
    @Override
    public Set<BlockPermission> extraChildPermissions(String childName) {
        return rewriteCorrupted ? EnumSet.of(BlockPermission.WRITE) : Set.of();
    }

    // ---- reads -------------------------------------------------------------------------------------

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        Child[] cs = children;
        if (fifo) {
            readFifo(cs, offset, dst);
        } else {
            readQuorum(cs, offset, dst);
        }
    }

    /** QEMU's read_fifo_child: child 0 first, the next one on an error, until one succeeds. */
    private void readFifo(Child[] cs, long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        IOException last = null;
        for (Child c : cs) {
            ByteBuffer view = dst.duplicate();
            try {
                c.node().read(offset, view);
                dst.position(view.position());
                return;
            } catch (IOException e) {
                reportBad("read", offset, length, c, e);
                last = e;
            }
        }
        throw last;
    }

    /** QEMU's read_quorum_children and quorum_vote. */
    private void readQuorum(Child[] cs, long offset, ByteBuffer dst) throws IOException {
        int length = dst.remaining();
        ByteBuffer[] reads = new ByteBuffer[cs.length];
        IOException[] errors = all(cs.length, i -> {
            ByteBuffer b = ByteBuffer.allocate(length);
            cs[i].node().read(offset, b);
            reads[i] = b.flip();
        });
        int successes = 0;
        for (int i = 0; i < cs.length; i++) {
            if (errors[i] != null) {
                reads[i] = null;
                reportBad("read", offset, length, cs[i], errors[i]);
            } else {
                successes++;
            }
        }
        if (successes < threshold) {
            reportFailure(offset, length);
            throw votedError(errors);
        }
        if (blkverify) {
            checkBlkverify(reads, offset, length);
        }
        Vote vote = Vote.of(reads);
        if (vote.votes() < threshold) {
            reportFailure(offset, length);
            throw new BlockIoException(Errno.EIO, name + ": no " + threshold + " children agree on the data at offset "
                    + offset + " (" + length + " bytes)");
        }
        ByteBuffer winner = reads[vote.winner()];
        dst.put(winner.duplicate());
        for (int i : vote.losers()) {
            sendReportBad("read", offset, length, cs[i], null);
        }
        if (rewriteCorrupted) {
            for (int i : vote.losers()) {
                try { // a correction attempt only: its failure changes nothing for the reader, as in QEMU
                    cs[i].node().write(offset, winner.duplicate());
                } catch (IOException e) {
                    LOG.debug("{}: rewriting {} at {}: {}", name, cs[i].node().nodeName(), offset, e.getMessage());
                }
            }
        }
    }

    /**
     * blkverify mode: the two children must agree byte for byte. QEMU prints where they differ and
     * exits; a daemon that serves other disks must not, so the read fails instead, with QEMU's words.
     */
    private void checkBlkverify(ByteBuffer[] reads, long offset, int length) throws IOException {
        if (reads[0] == null || reads[1] == null) {
            return;
        }
        int at = reads[0].mismatch(reads[1]);
        if (at >= 0) {
            String msg = "quorum: offset=" + offset + " bytes=" + length + " contents mismatch at offset " + (offset + at);
            LOG.error("{}: {}", name, msg);
            throw new BlockIoException(Errno.EIO, name + ": " + msg);
        }
    }

    // ---- writes ------------------------------------------------------------------------------------

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        write(offset, src, RequestFlag.NONE);
    }

    /** QEMU's quorum_co_pwritev: every child at once; FUA as a flush of the quorum afterwards. */
    @Override
    public void write(long offset, ByteBuffer src, Set<RequestFlag> flags) throws IOException {
        int length = src.remaining();
        Set<RequestFlag> childFlags = without(flags, RequestFlag.FUA);
        Child[] cs = children;
        IOException[] errors = all(cs.length, i -> cs[i].node().write(offset, src.duplicate(), childFlags));
        checkWrite(cs, errors, offset, length);
        src.position(src.limit());
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writeZeroes(offset, length, mayUnmap ? EnumSet.of(RequestFlag.MAY_UNMAP) : RequestFlag.NONE);
    }

    /** QEMU's quorum_co_pwrite_zeroes: a write of zeroes to every child, with the caller's flags. */
    @Override
    public void writeZeroes(long offset, long length, Set<RequestFlag> flags) throws IOException {
        Set<RequestFlag> childFlags = without(flags, RequestFlag.FUA);
        Child[] cs = children;
        IOException[] errors = all(cs.length, i -> cs[i].node().writeZeroes(offset, length, childFlags));
        checkWrite(cs, errors, offset, length);
        if (flags.contains(RequestFlag.FUA)) {
            flush();
        }
    }

    private void checkWrite(Child[] cs, IOException[] errors, long offset, long length) throws IOException {
        int successes = 0;
        for (int i = 0; i < cs.length; i++) {
            if (errors[i] != null) {
                reportBad("write", offset, length, cs[i], errors[i]);
            } else {
                successes++;
            }
        }
        if (successes < threshold) {
            reportFailure(offset, length);
            throw votedError(errors);
        }
    }

    /** QEMU's quorum has no discard: the block layer accepts it and does nothing. */
    @Override
    public void discard(long offset, long length) {
    }

    /** QEMU's quorum_co_flush: every child in turn; enough successes make a success. */
    @Override
    public void flush() throws IOException {
        Child[] cs = children;
        IOException[] errors = new IOException[cs.length];
        int successes = 0;
        for (int i = 0; i < cs.length; i++) {
            try {
                cs[i].node().flush();
                successes++;
            } catch (IOException e) {
                errors[i] = e;
                reportBad("flush", 0, 0, cs[i], e);
            }
        }
        if (successes < threshold) {
            throw votedError(errors);
        }
    }

    /**
     * QEMU's quorum_co_block_status: zeroes where every child's chain says so (over the shortest
     * such run), data otherwise (over the longest); a child that fails is reported and makes it data.
     */
    @Override
    public BlockStatus blockStatus(long offset, long maxLength) throws IOException {
        long count = Math.min(maxLength, size - offset);
        long zeroRun = count;
        long dataRun = 0;
        for (Child c : children) {
            BlockStatus s;
            try {
                s = c.node().chainStatus(offset, count);
            } catch (IOException e) {
                reportBad("read", offset, count, c, e);
                dataRun = count;
                break;
            }
            if (s.zero()) {
                zeroRun = Math.min(zeroRun, s.length());
            } else {
                dataRun = Math.max(dataRun, s.length());
            }
        }
        return dataRun > 0 ? new BlockStatus(offset, dataRun, true, false, 0)
                : new BlockStatus(offset, zeroRun, true, true, 0);
    }

    @Override
    public void reopenReadWrite() {
        // nothing of its own: the graph reopens the children
    }

    @Override
    public void close() {
        // the graph closes the children
    }

    // ---- x-blockdev-change -------------------------------------------------------------------------

    @Override
    public Optional<ChildChanges> childChanges() {
        return Optional.of(this);
    }

    /** QEMU's quorum_add_child. */
    @Override
    public void add(Attacher attacher) {
        if (blkverify) {
            throw new CommandException("Cannot add a child to a quorum in blkverify mode");
        }
        String childName = "children." + nextChildIndex;
        BlockNode node = attacher.attach(childName, ChildRole.DATA); // a conflict leaves the index as it was
        nextChildIndex++;
        Child[] cs = Arrays.copyOf(children, children.length + 1);
        cs[cs.length - 1] = new Child(childName, node);
        children = cs;
    }

    /** QEMU's quorum_del_child. */
    @Override
    public void remove(String childName) {
        Child[] cs = children;
        int at = -1;
        for (int i = 0; i < cs.length; i++) {
            if (cs[i].name().equals(childName)) {
                at = i;
            }
        }
        if (at < 0) {
            throw new CommandException("The node " + name + " does not have a child named " + childName);
        }
        if (cs.length <= threshold) {
            throw new CommandException("The number of children cannot be lower than the vote threshold " + threshold);
        }
        if (childName.equals("children." + (nextChildIndex - 1))) {
            nextChildIndex--;
        }
        List<Child> rest = new ArrayList<>(Arrays.asList(cs));
        rest.remove(at);
        children = rest.toArray(Child[]::new);
    }

    /** The children's names, in request order (for tests). */
    List<String> childNames() {
        return Arrays.stream(children).map(Child::name).toList();
    }

    // ---- helpers -----------------------------------------------------------------------------------

    /** A request to child {@code i}. */
    @FunctionalInterface
    interface ChildRequest {
        void run(int i) throws IOException;
    }

    /**
     * Runs the request on every child at once (QEMU starts a coroutine per child): child 0 on
     * this thread, the others on virtual threads. Returns each child's error, or null.
     */
    static IOException[] all(int n, ChildRequest request) throws InterruptedIOException {
        IOException[] errors = new IOException[n];
        Thread[] threads = new Thread[n];
        for (int i = 1; i < n; i++) {
            int child = i;
            threads[i] = Thread.ofVirtual().start(() -> errors[child] = attempt(request, child));
        }
        errors[0] = attempt(request, 0);
        boolean interrupted = false;
        for (int i = 1; i < n; i++) {
            while (true) {
                try {
                    threads[i].join(); // the child's request always ends; its result is needed
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        return errors;
    }

    private static IOException attempt(ChildRequest request, int i) {
        try {
            request.run(i);
            return null;
        } catch (IOException e) {
            return e;
        } catch (RuntimeException | Error e) { // a child that did not answer has not got the data
            return new BlockIoException(Errno.EIO, e.toString(), e);
        }
    }

    /** The error most children failed with (QEMU's quorum_vote_error), keeping that child's message. */
    private static IOException votedError(IOException[] errors) {
        IOException e = Vote.error(Arrays.asList(errors), (a, b) -> Errno.of(a) == Errno.of(b));
        return e instanceof BlockIoException ? e : new BlockIoException(Errno.of(e), e.getMessage(), e);
    }

    private static Set<RequestFlag> without(Set<RequestFlag> flags, RequestFlag flag) {
        if (!flags.contains(flag)) {
            return flags;
        }
        Set<RequestFlag> out = EnumSet.noneOf(RequestFlag.class);
        out.addAll(flags);
        out.remove(flag);
        return out;
    }

    private void reportBad(String type, long offset, long length, Child c, IOException e) {
        sendReportBad(type, offset, length, c, Errno.of(e).message());
    }

    /** QEMU's quorum_report_bad: the 512-byte sectors the request covers, strerror's text if it failed. */
    private void sendReportBad(String type, long offset, long length, Child c, String error) {
        long start = offset / SECTOR;
        long end = ceilDiv(offset + length, SECTOR);
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("type", type);
        if (error != null) {
            data.put("error", error);
        }
        data.put("node-name", c.node().nodeName());
        data.put("sector-num", start);
        data.put("sectors-count", end - start);
        events.send("QUORUM_REPORT_BAD", data);
    }

    /** QEMU's quorum_report_failure. */
    private void reportFailure(long offset, long length) {
        long start = offset / SECTOR;
        long end = ceilDiv(offset + length, SECTOR);
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("reference", name);
        data.put("sector-num", start);
        data.put("sectors-count", end - start);
        events.send("QUORUM_FAILURE", data);
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }
}
