package io.blockjobs.sdk.job;

import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.error.ErrorClass;
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

    /**
     * QEMU's {@code bdrv_lookup_bs(device, device)}: the chain of the node a command names as its
     * {@code device} (a node name here: blockjobs has no BlockBackends of its own).
     *
     * @throws CommandException QEMU's {@code GenericError} "Cannot find device='X' nor
     *         node-name='X'" if there is no such node
     */
    public static List<ChainLink> lookup(JobSetup setup, String device) {
        try {
            return setup.chain(device);
        } catch (CommandException e) {
            if (e.errorClass() == ErrorClass.DEVICE_NOT_FOUND) {
                throw new CommandException("Cannot find device='" + device + "' nor node-name='" + device + "'");
            }
            throw e;
        }
    }

    /**
     * QEMU's {@code bdrv_lookup_bs(NULL, nodeName)}: refuses a node name that names no node, as
     * QEMU's {@code base-node}, {@code top-node} and {@code bottom} arguments do.
     *
     * @throws CommandException QEMU's "Cannot find device='' nor node-name='X'"
     */
    public static void requireNode(JobSetup setup, String nodeName) {
        try {
            setup.chain(nodeName);
        } catch (CommandException e) {
            if (e.errorClass() == ErrorClass.DEVICE_NOT_FOUND) {
                throw new CommandException("Cannot find device='' nor node-name='" + nodeName + "'");
            }
            throw e;
        }
    }

    /**
     * QEMU's {@code bdrv_find_backing_image}: the index of the layer below {@code from} whose image
     * file is {@code filename} (see {@link #indexOfFile}), or -1. The layer {@code from} itself
     * never matches.
     */
    public static int findBackingImage(List<ChainLink> chain, int from, String filename) {
        for (int i = from + 1; i < chain.size(); i++) {
            String f = chain.get(i).filename();
            if (f.equals(filename)) {
                return i;
            }
            Path above = Path.of(chain.get(i - 1).filename()).toAbsolutePath().getParent();
            if (above != null && above.resolve(filename).normalize().equals(Path.of(f).toAbsolutePath().normalize())) {
                return i;
            }
        }
        return -1;
    }
}
