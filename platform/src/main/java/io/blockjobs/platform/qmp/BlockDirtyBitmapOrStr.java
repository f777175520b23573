package io.blockjobs.platform.qmp;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonProperty;
import java.util.Optional;

/**
 * QMP's {@code BlockDirtyBitmapOrStr}: a bitmap by name alone ({@code "b0"}, to be found where
 * the command looks: the target's node for a merge, the exported node and its chain for an
 * export) or by node and name ({@code {"node": "top", "name": "b0"}}, QMP's
 * {@code BlockDirtyBitmap}).
 *
 * @param node the node, given only in the object form
 * @param name the bitmap's name
 */
@QmpAlternate(name = "BlockDirtyBitmapOrStr", object = BitmapCommands.NameArgs.class)
public record BlockDirtyBitmapOrStr(Optional<String> node, String name) {

    @JsonCreator(mode = JsonCreator.Mode.PROPERTIES)
    public BlockDirtyBitmapOrStr(@JsonProperty("node") Optional<String> node, @JsonProperty("name") String name) {
        this.node = node == null ? Optional.empty() : node;
        this.name = name;
    }

    /** The string branch: a name alone. */
    @JsonCreator(mode = JsonCreator.Mode.DELEGATING)
    public static BlockDirtyBitmapOrStr local(String name) {
        return new BlockDirtyBitmapOrStr(Optional.empty(), name);
    }
}
