package io.blockjobs.plugins.colo;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.driver.GraphQuery;
import io.blockjobs.sdk.driver.OptionSpec;
import io.blockjobs.sdk.error.CommandException;
import java.util.List;

/**
 * QEMU's {@code replication} filter ({@code BlockdevOptionsReplication}): {@code file}, the
 * node it forwards to, {@code mode} ({@code primary} or {@code secondary}) and {@code top-id},
 * which the secondary needs and the primary refuses, checked as {@code replication_open} checks
 * them.
 */
public final class ReplicationDriver implements BlockDriver {
    private final Replications registry;

    ReplicationDriver(Replications registry) {
        this.registry = registry;
    }

    @Override
    public String name() {
        return "replication";
    }

    @Override
    public List<OptionSpec> options() {
        return List.of(OptionSpec.required("file", "BlockdevRef"), OptionSpec.required("mode", "str"),
                OptionSpec.optional("top-id", "str"));
    }

    @Override
    public DriverNode open(DriverContext ctx) {
        DriverOptions o = ctx.options();
        // QAPI first (file, then mode, a ReplicationMode); then replication_open: the file, then mode's rules.
        if (!o.has("file")) {
            throw new CommandException("Parameter 'file' is missing");
        }
        String mode = o.string("mode");
        if (!mode.equals("primary") && !mode.equals("secondary")) {
            throw new CommandException("Parameter 'mode' does not accept value '" + mode + "'");
        }
        String topId = o.optString("top-id");
        BlockNode file = ctx.child("file", ChildRole.FILTERED);
        boolean primary = mode.equals("primary");
        if (primary && topId != null) {
            throw new CommandException("The primary side does not support option top-id");
        }
        if (!primary && topId == null) {
            throw new CommandException("Missing the option top-id");
        }
        try {
            registry.useEvents(ctx.events());
        } catch (UnsupportedOperationException e) {
            // a graph without events (a test's): COLO_EXIT goes nowhere
        }
        GraphQuery graph;
        try {
            graph = ctx.graph();
        } catch (UnsupportedOperationException e) {
            graph = null; // a graph that answers no questions (a test's): top-id is not checked
        }
        return new ReplicationNode(ctx.nodeName(), file, primary, topId, registry, graph);
    }
}
