package io.blockjobs.platform.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** QEMU's key=value option syntax. */
class KeyValueTest {

    @Test
    void dottedKeysNestAndCommasEscape() {
        var n = KeyValue.parse("driver=qcow2,node-name=top,file.driver=file,file.filename=/a,,b.qcow2", null);
        assertThat(n.toString()).isEqualTo(
                "{\"driver\":\"qcow2\",\"node-name\":\"top\",\"file\":{\"driver\":\"file\",\"filename\":\"/a,b.qcow2\"}}");
    }

    @Test
    void impliedFirstKey() {
        assertThat(KeyValue.parse("socket,id=mon0,path=/x", "backend").get("backend").asString()).isEqualTo("socket");
        assertThatThrownBy(() -> KeyValue.parse("socket,id=mon0", null)).hasMessageContaining("'socket'");
        assertThatThrownBy(() -> KeyValue.parse("id=a,socket", "backend")).hasMessageContaining("'socket'");
    }

    @Test
    void jsonIsTakenAsItIs() {
        var n = KeyValue.parse("{\"driver\":\"file\",\"read-only\":true}", null);
        assertThat(n.get("read-only").asBoolean()).isTrue();
        assertThatThrownBy(() -> KeyValue.parse("{\"driver\":", null)).hasMessageContaining("invalid JSON");
    }

    @Test
    void conflictsAndDuplicatesAreRefused() {
        assertThatThrownBy(() -> KeyValue.parse("a=1,a=2", null)).hasMessageContaining("given twice");
        assertThatThrownBy(() -> KeyValue.parse("a=1,a.b=2", null)).hasMessageContaining("conflicts");
        assertThatThrownBy(() -> KeyValue.parse("a..b=1", null)).hasMessageContaining("invalid key");
    }

    @Test
    void indexKeysMakeListsAsQemusKeyvalListify() {
        var n = KeyValue.parse("type=nbd,bitmaps.1.node=top,bitmaps.1.name=b1,bitmaps.0=b0", "type");
        assertThat(n.toString()).isEqualTo("{\"type\":\"nbd\",\"bitmaps\":[\"b0\",{\"node\":\"top\",\"name\":\"b1\"}]}");
        assertThatThrownBy(() -> KeyValue.parse("bitmaps.1=b1", null)).hasMessage("Parameter 'bitmaps.0' missing");
        assertThatThrownBy(() -> KeyValue.parse("a.b.0=x,a.b.2=y", null)).hasMessage("Parameter 'a.b.1' missing");
        assertThatThrownBy(() -> KeyValue.parse("bitmaps.0=b0,bitmaps.x=b1", null))
                .hasMessage("Parameters 'bitmaps.*' used inconsistently");
        assertThat(KeyValue.parse("0=x", null).toString()).as("the top level stays an object").isEqualTo("{\"0\":\"x\"}");
    }
}
