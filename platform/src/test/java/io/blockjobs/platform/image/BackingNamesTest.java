package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/** Where a backing file name points, as QEMU resolves it ({@code bdrv_get_full_backing_filename}). */
class BackingNamesTest {
    private final Path overlay = Path.of("/images/vm/top.qcow2");

    @Test
    void relativeNamesResolveAgainstTheOverlaysFolderAbsoluteOnesStay() throws Exception {
        assertThat(Images.resolveBacking(overlay, "base.qcow2")).isEqualTo(Path.of("/images/vm/base.qcow2"));
        assertThat(Images.resolveBacking(overlay, "/srv/base.qcow2")).isEqualTo(Path.of("/srv/base.qcow2"));
        assertThat(Images.resolveBacking(overlay, "./a:b.qcow2")).isEqualTo(Path.of("/images/vm/./a:b.qcow2"));
    }

    @Test
    void theFileProtocolPrefixIsStrippedAndTheRestTakenAsItIs() throws Exception {
        assertThat(Images.resolveBacking(overlay, "file:/srv/base.qcow2")).isEqualTo(Path.of("/srv/base.qcow2"));
        // As qemu-img: a protocol name is not made absolute against the overlay's folder.
        assertThat(Images.resolveBacking(overlay, "file:base.qcow2")).isEqualTo(Path.of("base.qcow2"));
    }

    @Test
    void otherProtocolsAreRefused() {
        assertThatThrownBy(() -> Images.resolveBacking(overlay, "nbd://host/export"))
                .hasMessageContaining("uses a protocol blockjobs cannot open");
    }
}
