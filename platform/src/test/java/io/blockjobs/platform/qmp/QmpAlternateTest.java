package io.blockjobs.platform.qmp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.Json;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/** A QAPI alternate ({@code BlockDirtyBitmapOrStr}): checked, bound and described as QEMU's. */
class QmpAlternateTest {
    record Args(List<BlockDirtyBitmapOrStr> bitmaps, Optional<BlockDirtyBitmapOrStr> one) {
    }

    private static Args bind(String json, boolean keyval) {
        JsonNode checked = QmpTypes.check(Json.MAPPER.readTree(json), Args.class, "", keyval);
        JsonNode again = QmpTypes.check(checked, Args.class, "", false); // as executeKeyval, then execute
        return Json.MAPPER.treeToValue(again, Args.class);
    }

    @Test
    void aStringIsANameAloneAndAnObjectANodeAndName() {
        for (boolean keyval : new boolean[] {false, true}) {
            Args a = bind("{\"bitmaps\": [\"b0\", {\"node\": \"top\", \"name\": \"b1\"}], \"one\": \"b2\"}", keyval);
            assertThat(a.bitmaps()).containsExactly(new BlockDirtyBitmapOrStr(Optional.empty(), "b0"),
                    new BlockDirtyBitmapOrStr(Optional.of("top"), "b1"));
            assertThat(a.one()).contains(new BlockDirtyBitmapOrStr(Optional.empty(), "b2"));
        }
    }

    @Test
    void qemusMessages() {
        assertThatThrownBy(() -> bind("{\"bitmaps\": [1]}", false))
                .hasMessage("Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr");
        assertThatThrownBy(() -> bind("{\"bitmaps\": [], \"one\": true}", false))
                .hasMessage("Invalid parameter type for 'one', expected: BlockDirtyBitmapOrStr");
        assertThatThrownBy(() -> bind("{\"bitmaps\": [{\"node\": \"top\"}]}", false))
                .hasMessage("Parameter 'bitmaps[0].name' is missing");
        assertThatThrownBy(() -> bind("{\"bitmaps\": [{\"name\": \"b\", \"x\": 1}]}", false))
                .hasMessage("Parameter 'bitmaps[0].node' is missing");
        assertThatThrownBy(() -> bind("{\"bitmaps\": [{\"node\": \"top\"}]}", true))
                .as("on the command line, as QEMU's keyval visitor").hasMessage("Parameter 'bitmaps.0.name' is missing");
        assertThatThrownBy(() -> bind("{\"bitmaps\": \"b0\"}", false))
                .hasMessage("Invalid parameter type for 'bitmaps', expected: array");
    }

    @Test
    void theSchemaShowsAnAlternateOfStrAndBlockDirtyBitmap() {
        List<ObjectNode> schema = QmpSchema.of(List.of(QmpCommand.of("x-test", Args.class, null, a -> null)), Map.of());
        Map<String, ObjectNode> byName = new HashMap<>();
        schema.forEach(e -> byName.put(e.get("name").asString(), e));
        JsonNode args = byName.get(byName.get("x-test").get("arg-type").asString());
        JsonNode list = byName.get(args.get("members").get(0).get("type").asString());
        assertThat(list.get("meta-type").asString()).isEqualTo("array");
        JsonNode alternate = byName.get(list.get("element-type").asString());
        assertThat(alternate.get("meta-type").asString()).isEqualTo("alternate");
        assertThat(alternate.get("members").get(0).get("type").asString()).isEqualTo("str");
        JsonNode object = byName.get(alternate.get("members").get(1).get("type").asString());
        assertThat(object.get("members").toString())
                .isEqualTo("[{\"name\":\"node\",\"type\":\"str\"},{\"name\":\"name\",\"type\":\"str\"}]");
        assertThat(args.get("members").get(1).get("type").asString()).as("the same type again").isEqualTo(alternate.get("name").asString());
    }
}
