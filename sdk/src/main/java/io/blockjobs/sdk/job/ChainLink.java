package io.blockjobs.sdk.job;

import io.blockjobs.sdk.block.BlockNode;

/**
 * One layer of a backing chain as a job sees it.
 *
 * @param nodeName the layer's node name (QEMU's {@code node-name})
 * @param node     the layer
 * @param filename its image file, as {@code backing-file} strings name it
 * @param format   its format ({@code qcow2}, {@code raw})
 */
public record ChainLink(String nodeName, BlockNode node, String filename, String format) {
}
