package io.blockjobs.plugins.throttle;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.ThrottleGroup;
import io.blockjobs.sdk.error.CommandException;

/**
 * QEMU's {@code throttle} driver ({@code BlockdevOptionsThrottle}): {@code throttle-group}, the
 * id of a {@code throttle-group} object, and {@code file}, the node it filters.
 */
public final class ThrottleDriver implements BlockDriver {

    @Override
    public String name() {
        return "throttle";
    }

    @Override
    public DriverNode open(DriverContext ctx) {
        // QAPI checks the member first; QEMU's throttle_open then opens the child, then looks the group up.
        String groupName = ctx.options().string("throttle-group");
        BlockNode file = ctx.child("file", ChildRole.FILTERED);
        ThrottleGroup group;
        try {
            group = ctx.object(groupName, ThrottleGroup.class);
        } catch (CommandException e) {
            throw new CommandException("Throttle group '" + groupName + "' does not exist");
        }
        return new ThrottleNode(file, group.join(ctx.nodeName()));
    }
}
