package io.blockjobs.platform.image;

import io.blockjobs.sdk.driver.Limits;

/**
 * A node that says what requests it takes: the graph's nodes do, so that a filter over one can
 * take its child's request alignment and check its own limits against it, as QEMU's filters do.
 */
public interface NodeLimits {

    /** The node's limits. */
    Limits limits();
}
