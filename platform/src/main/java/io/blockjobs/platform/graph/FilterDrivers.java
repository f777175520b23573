package io.blockjobs.platform.graph;

import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.driver.BlockDriver;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import java.util.List;

/** The filter drivers the graph itself provides: {@code copy-on-read}. */
public final class FilterDrivers {
    private FilterDrivers() {
    }

    /** The filter drivers, for the registry. */
    public static List<BlockDriver> all(BlockGraph graph) {
        return List.of(copyOnRead(graph));
    }

    /** QEMU's {@code copy-on-read} ({@code BlockdevOptionsCor}: {@code file}, {@code bottom}). */
    static BlockDriver copyOnRead(BlockGraph graph) {
        return new BlockDriver() {
            @Override
            public String name() {
                return "copy-on-read";
            }

            @Override
            public List<io.blockjobs.sdk.driver.OptionSpec> options() {
                return List.of(io.blockjobs.sdk.driver.OptionSpec.required("file", "BlockdevRef"),
                        io.blockjobs.sdk.driver.OptionSpec.optional("bottom", "str"));
            }

            @Override
            public DriverNode open(DriverContext ctx) {
                String bottom = ctx.options().optString("bottom");
                GraphNode bottomNode = bottom == null ? null : graph.require(bottom);
                BlockNode file = ctx.child("file", ChildRole.FILTERED);
                return new CopyOnReadFilter(file, bottomNode);
            }
        };
    }
}
