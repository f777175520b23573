package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.error.CommandException;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** QEMU's {@code rbd:} names ({@code qemu_rbd_parse_filename}) and the rbd node's {@code json:} name. */
class RbdFilenameTest {

    @Test
    void poolNamespaceImageSnapshotAndOptions() {
        assertThat(ImageDrivers.parseRbdFilename("rbd:rbd/disk:conf=/etc/c.conf"))
                .containsExactly(Map.entry("pool", "rbd"), Map.entry("namespace", ""), Map.entry("image", "disk"),
                        Map.entry("conf", "/etc/c.conf"));
        Map<String, Object> all = ImageDrivers.parseRbdFilename(
                "rbd:p/ns/img@snap:id=alice:conf=/c:rbd_cache=false:mon_host=a\\:6789");
        assertThat(all).containsEntry("pool", "p").containsEntry("namespace", "ns").containsEntry("image", "img")
                .containsEntry("snapshot", "snap").containsEntry("user", "alice").containsEntry("conf", "/c")
                .containsEntry("=keyvalue-pairs", List.of("rbd_cache", "false", "mon_host", "a:6789"));
        assertThat(ImageDrivers.parseRbdFilename("rbd:p/im\\@age")).containsEntry("image", "im@age")
                .doesNotContainKey("snapshot");
    }

    @Test
    void badNamesAreRefusedAsQemuDoes() {
        assertThatThrownBy(() -> ImageDrivers.parseRbdFilename("rbd:nopool")).isInstanceOf(CommandException.class)
                .hasMessage("Pool name is required");
        assertThatThrownBy(() -> ImageDrivers.parseRbdFilename("rbd:p/i:novalue"))
                .hasMessage("conf option novalue has no value");
        assertThatThrownBy(() -> ImageDrivers.parseRbdFilename("nbd:x")).hasMessage("File name must start with 'rbd:'");
    }

    @Test
    void jsonNamesFollowQemusDictionaryOrder() {
        Map<String, Object> strong = new java.util.LinkedHashMap<>();
        strong.put("pool", "rbd");
        strong.put("image", "x");
        strong.put("conf", "/c");
        // as qemu-storage-daemon 7.2 names a blockdev-add'ed rbd node
        assertThat(QemuJson.filename("rbd", strong))
                .isEqualTo("json:{\"pool\": \"rbd\", \"image\": \"x\", \"conf\": \"/c\", \"driver\": \"rbd\"}");
    }
}
