package io.blockjobs.platform.nbd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.nbd.NbdReply.Extent;
import java.util.List;
import org.junit.jupiter.api.Test;

/** QEMU's NBDExtentArray: merging, the 32-bit limit, a full array. */
class ExtentArrayTest {

    @Test
    void runsOfOneStateMergeUntilTheyWouldPass32Bits() {
        ExtentArray a = new ExtentArray(3);
        assertThat(a.add(0, 5)).as("nothing to add").isTrue();
        assertThat(a.add(10, 0)).isTrue();
        assertThat(a.add(20, 0)).isTrue();
        assertThat(a.add(0xffffffffL - 30, 1)).isTrue();
        assertThat(a.add(40, 1)).as("would pass 2^32 - 1: a new extent").isTrue();
        assertThat(a).containsExactly(new Extent(30, 0), new Extent(0xffffffffL - 30, 1), new Extent(40, 1));
        assertThat(a.totalLength()).isEqualTo(0xffffffffL + 40);
    }

    @Test
    void aFullArrayStillLengthensItsLastExtentThenRefusesForGood() {
        ExtentArray one = ExtentArray.forRequest(true);
        assertThat(one.add(4096, 0)).isTrue();
        assertThat(one.add(4096, 0)).isTrue();
        assertThat(one.add(512, 3)).isFalse();
        assertThat(one.isFull()).isTrue();
        assertThat(one).isEqualTo(List.of(new Extent(8192, 0)));
        assertThatThrownBy(() -> one.add(1, 0)).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void roomGrowsWithTheExtentsUpToTheCapacity() {
        ExtentArray a = ExtentArray.forRequest(false);
        for (int i = 0; i < ExtentArray.MAX; i++) {
            assertThat(a.add(1, i & 1)).isTrue();
        }
        assertThat(a.add(1, 1)).as("merges with the last").isTrue();
        assertThat(a.add(1, 0)).isFalse();
        assertThat(a.size()).isEqualTo(ExtentArray.MAX);
        assertThat(a.get(ExtentArray.MAX - 1)).isEqualTo(new Extent(2, 1));
    }
}
