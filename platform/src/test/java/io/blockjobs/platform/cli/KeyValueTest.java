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
}
