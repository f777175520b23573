package io.blockjobs.sdk.driver;

import io.blockjobs.sdk.block.BlockNode;
import java.util.Optional;

/**
 * What a {@link BlockDriver} may use while it opens a node, on the daemon's main loop.
 */
public interface DriverContext {

    /** The node's name ({@code node-name}, or one the graph generated). */
    String nodeName();

    /** The node's own options ({@code driver} and the generic node options already taken). */
    DriverOptions options();

    /** Whether the node opens read-only ({@code read-only}, or inherited from a parent). */
    boolean readOnly();

    /**
     * The generic open flags of the node that a protocol driver acts on ({@code auto-read-only},
     * {@code force-share}, {@code cache.direct}); the graph itself applies the others.
     */
    OpenFlags flags();

    /**
     * Attaches the child named by option {@code key}: a node name, or inline options for a new
     * node. The returned node is the child's request entry point; keep it for I/O.
     *
     * @param key  the option and the child's name ({@code file}, {@code image})
     * @param role what the child is to this node, which decides the permissions taken on it
     * @throws io.blockjobs.sdk.error.CommandException if the option is missing or the child
     *         cannot be attached (a permission conflict)
     */
    BlockNode child(String key, ChildRole role);

    /**
     * Attaches the children a list option names (quorum's {@code children}): each element a node
     * name or inline options, attached as child {@code key.N}, N its index in the list.
     *
     * @throws io.blockjobs.sdk.error.CommandException if the option is missing or not a list, or
     *         a child cannot be attached
     */
    default java.util.List<BlockNode> children(String key, ChildRole role) {
        throw new UnsupportedOperationException("this graph cannot attach a list of children");
    }

    /**
     * Where the node sends QEMU's events about itself, for as long as it is open (see
     * {@link DriverEvents}).
     */
    default DriverEvents events() {
        throw new UnsupportedOperationException("this graph sends no driver events");
    }

    /** The graph the node is opened in, for questions beyond its children (see {@link GraphQuery}). */
    default GraphQuery graph() {
        throw new UnsupportedOperationException("this graph answers no questions");
    }

    /** As {@link #child}, but empty when the option is absent. */
    Optional<BlockNode> optionalChild(String key, ChildRole role);

    /**
     * The backing child of a format node, as QEMU chooses it: the {@code backing} option if
     * given (a node, inline options, or null for none), else the backing file the image's header
     * records, opened read-only beneath this node.
     *
     * @param recordedName   the backing file name in the image's header, or null
     * @param recordedFormat the backing format in the header, or null to probe
     */
    Optional<BlockNode> backing(String recordedName, String recordedFormat);

    /**
     * A user-creatable object ({@code --object} or {@code object-add}) of the given type.
     *
     * @throws io.blockjobs.sdk.error.CommandException if there is none with this id and type
     */
    <T> T object(String id, Class<T> type);
}
