package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.driver.OptionSpec;
import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.util.List;

/**
 * QEMU's {@code quorum} driver ({@code BlockdevOptionsQuorum}): {@code children} (node names or
 * inline options), {@code vote-threshold}, {@code blkverify}, {@code rewrite-corrupted} and
 * {@code read-pattern} ({@code quorum} or {@code fifo}), checked as QEMU's {@code quorum_open}
 * checks them, with its messages.
 */
public final class QuorumDriver implements BlockDriver {

    @Override
    public String name() {
        return "quorum";
    }

    @Override
    public List<OptionSpec> options() {
        return List.of(OptionSpec.optional("blkverify", "bool"), OptionSpec.required("children", "[BlockdevRef]"),
                OptionSpec.required("vote-threshold", "int"), OptionSpec.optional("rewrite-corrupted", "bool"),
                OptionSpec.optional("read-pattern", "str"));
    }

    @Override
    public DriverNode open(DriverContext ctx) throws IOException {
        DriverOptions o = ctx.options();
        // QAPI's checks first, in the schema's member order; then quorum_open's.
        boolean blkverify = o.bool("blkverify", false);
        if (!o.has("children")) {
            throw new CommandException("Parameter 'children' is missing");
        }
        long threshold = o.integer("vote-threshold");
        boolean rewrite = o.bool("rewrite-corrupted", false);
        String pattern = o.optString("read-pattern");
        if (pattern != null && !pattern.equals("quorum") && !pattern.equals("fifo")) {
            throw new CommandException("Parameter 'read-pattern' does not accept value '" + pattern + "'");
        }
        boolean fifo = "fifo".equals(pattern);
        List<BlockNode> children = ctx.children("children", ChildRole.DATA);
        if (children.isEmpty()) {
            throw new CommandException("Number of provided children must be 1 or more");
        }
        if (threshold < 1) {
            throw new CommandException("Parameter 'vote-threshold' expects a value >= 1");
        }
        if (threshold > children.size()) {
            throw new CommandException("threshold may not exceed children count");
        }
        if (fifo) {
            blkverify = false; // QEMU reads both only for the quorum pattern
            rewrite = false;
        } else {
            if (blkverify && (children.size() != 2 || threshold != 2)) {
                throw new CommandException(
                        "blkverify=on can only be set if there are exactly two files and vote-threshold is 2");
            }
            if (rewrite && blkverify) {
                throw new CommandException("rewrite-corrupted=on cannot be used with blkverify=on");
            }
        }
        // QEMU's bdrv_open_driver reads the length once; quorum's getlength fails on unequal children.
        long size = children.get(0).size();
        for (BlockNode c : children.subList(1, children.size())) {
            if (c.size() != size) {
                throw new CommandException("Could not refresh total sector count: Input/output error");
            }
        }
        return new QuorumNode(ctx.nodeName(), children, (int) threshold, blkverify, rewrite, fifo, size,
                ctx.readOnly(), ctx.events());
    }
}
