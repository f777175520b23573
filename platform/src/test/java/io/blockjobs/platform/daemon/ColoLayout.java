package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;

import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** QEMU's docs/COLO-FT.txt layout of the disks, over QMP, for the COLO tests and benchmark. */
final class ColoLayout {
    private ColoLayout() {
    }

    /** A qcow2 node over a file, with {@code backing} a node name or null for none. */
    static Map<String, Object> qcow2(String name, Path file, String backing) {
        Map<String, Object> m = new LinkedHashMap<>(map("driver", "qcow2", "node-name", name,
                "file", map("driver", "file", "filename", file.toString())));
        m.put("backing", backing); // null: none, whatever the header names
        return m;
    }

    /**
     * The secondary: {@code parent0} (the secondary disk, exported writable for the primary),
     * {@code hidden0.qcow2} and {@code active0.qcow2} in {@code dir} above it, the replication node
     * {@code childs0} and the secondary VM's quorum {@code colo-disk0}; replication started.
     */
    static void secondary(QmpClient s, Path dir, Path parent) throws IOException {
        s.ok("blockdev-add", qcow2("parent0", parent, null));
        s.ok("blockdev-add", qcow2("hidden0", dir.resolve("hidden0.qcow2"), "parent0"));
        s.ok("blockdev-add", qcow2("active0", dir.resolve("active0.qcow2"), "hidden0"));
        s.ok("blockdev-add", map("driver", "replication", "node-name", "childs0", "mode", "secondary",
                "top-id", "colo-disk0", "file", "active0"));
        s.ok("blockdev-add", map("driver", "quorum", "node-name", "colo-disk0", "read-pattern", "fifo",
                "vote-threshold", 1, "children", List.of("childs0")));
        s.ok("block-export-add", map("type", "nbd", "id", "e-parent0", "node-name", "parent0", "name", "parent0",
                "writable", true));
        s.ok("xen-set-replication", map("enable", true, "primary", false));
    }

    /**
     * The primary: {@code disk0} and, if {@code secondarySocket} is not null, {@code replication0}
     * over an NBD node of the secondary's {@code parent0}, under the VM's quorum {@code colo-disk0},
     * exported writable; replication started.
     */
    static void primary(QmpClient p, Path disk, Path secondarySocket) throws IOException {
        p.ok("blockdev-add", qcow2("disk0", disk, null));
        List<Object> children = new java.util.ArrayList<>(List.of("disk0"));
        if (secondarySocket != null) {
            p.ok("blockdev-add", map("driver", "nbd", "node-name", "nbd0", "export", "parent0",
                    "server", map("type", "unix", "path", secondarySocket.toString())));
            p.ok("blockdev-add", map("driver", "replication", "node-name", "replication0", "mode", "primary",
                    "file", "nbd0"));
            children.add("replication0");
        }
        p.ok("blockdev-add", map("driver", "quorum", "node-name", "colo-disk0", "read-pattern", "fifo",
                "vote-threshold", 1, "children", children));
        p.ok("block-export-add", map("type", "nbd", "id", "e-vm", "node-name", "colo-disk0", "name", "colo-disk0",
                "writable", true));
        if (secondarySocket != null) {
            p.ok("xen-set-replication", map("enable", true, "primary", true));
        }
    }
}
