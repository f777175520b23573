package io.blockjobs.sdk.job;

import io.blockjobs.sdk.error.CommandException;
import java.nio.file.Path;
import java.util.List;

/** Finding layers in a backing chain the way QEMU's commands name them. */
public final class Chains {
    private Chains() {
    }

    /** The index in {@code chain} of the layer with node name {@code nodeName}, or -1. */
    public static int indexOfNode(List<ChainLink> chain, String nodeName) {
        for (int i = 0; i < chain.size(); i++) {
            if (chain.get(i).nodeName().equals(nodeName)) {
                return i;
            }
        }
        return -1;
    }

    /**
     * The index of the layer whose image file is {@code filename} (as given, or resolved against
     * the folder of the layer above, as QEMU's backing names are), or -1.
     */
    public static int indexOfFile(List<ChainLink> chain, String filename) {
        for (int i = 0; i < chain.size(); i++) {
            String f = chain.get(i).filename();
            if (f.equals(filename)) {
                return i;
            }
            if (i > 0) {
                Path above = Path.of(chain.get(i - 1).filename()).toAbsolutePath().getParent();
                if (above != null && above.resolve(filename).normalize().equals(Path.of(f).toAbsolutePath().normalize())) {
                    return i;
                }
            }
        }
        return -1;
    }

    /**
     * The layer a command names by node name or by file name (at most one of them), searched
     * below {@code from}; -1 if neither is given.
     *
     * @throws CommandException with QEMU's messages if both are given or the layer is not there
     */
    public static int find(List<ChainLink> chain, int from, String nodeArg, String node, String fileArg, String file) {
        if (node != null && file != null) {
            throw new CommandException("'" + fileArg + "' and '" + nodeArg + "' cannot be specified at the same time");
        }
        int index = node != null ? indexOfNode(chain, node) : file != null ? indexOfFile(chain, file) : -1;
        if (node == null && file == null) {
            return -1;
        }
        if (index < 0) {
            String name = node != null ? node : file;
            throw new CommandException("'" + name + "' is not in this backing file chain");
        }
        if (index <= from) {
            throw new CommandException("'" + (node != null ? node : file) + "' is not below '"
                    + chain.get(from).nodeName() + "' in this backing file chain");
        }
        return index;
    }
}
