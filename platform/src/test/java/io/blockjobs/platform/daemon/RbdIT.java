package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.CephCluster;
import io.blockjobs.platform.testkit.Qemu;
import org.junit.jupiter.api.Test;

/**
 * The {@code rbd} protocol driver against a real single-node Ceph cluster ({@link CephCluster}),
 * with QEMU's tools ({@code qemu-img}, {@code qemu-io} through {@code rbd:} names) as the judges.
 */
class RbdIT {

    @Test
    void theClusterServesQemusRbdDriver() {
        CephCluster ceph = CephCluster.get();
        String name = ceph.rbdName("fixture");
        Qemu.img("create", "-f", "raw", name, "64M");
        Qemu.Result info = Qemu.img("info", "--output=json", name);
        assertThat(info.out()).contains("\"virtual-size\": 67108864");
        assertThat(ceph.startMillis).as("cluster start").isLessThan(60_000);
    }
}
