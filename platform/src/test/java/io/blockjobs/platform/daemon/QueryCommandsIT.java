package io.blockjobs.platform.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.DaemonProcess;
import io.blockjobs.platform.testkit.QmpClient;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * blockjobd's {@code query-commands} against qemu-storage-daemon 7.2's, checked in as test data
 * ({@code qemu/qsd-7.2-commands.txt}, captured from QSD once): every QSD command is either there
 * or listed in {@code qemu/qsd-7.2-commands-absent.txt} with a reason, deliberately absent or
 * pending an issue. A list entry for a command blockjobd has is stale and fails too.
 */
class QueryCommandsIT {

    @TempDir
    Path dir;

    @Test
    void everyQsdCommandIsThereOrListedWithAReason() throws Exception {
        Set<String> qsd = new TreeSet<>(lines("qemu/qsd-7.2-commands.txt"));
        Map<String, String> absent = new LinkedHashMap<>();
        for (String line : lines("qemu/qsd-7.2-commands-absent.txt")) {
            String[] parts = line.split("\\s+", 2);
            absent.put(parts[0], parts.length > 1 ? parts[1].trim() : "");
        }
        assertThat(qsd).as("the checked-in list is QSD 7.2's").hasSize(74).contains("query-commands", "block-commit");
        Set<String> ours = new TreeSet<>();
        try (DaemonProcess daemon = DaemonProcess.startWithMonitor(dir, List.of());
             QmpClient qmp = QmpClient.connect(daemon.qmpSocket)) {
            qmp.ok("query-commands").forEach(c -> ours.add(c.get("name").asString()));
        }
        Set<String> missing = new TreeSet<>(qsd);
        missing.removeAll(ours);
        Set<String> unlisted = new TreeSet<>(missing);
        unlisted.removeAll(absent.keySet());
        assertThat(unlisted).as("QSD 7.2 commands blockjobd lacks that qsd-7.2-commands-absent.txt does not list").isEmpty();
        Set<String> stale = new TreeSet<>(absent.keySet());
        stale.retainAll(ours);
        assertThat(stale).as("commands blockjobd has: remove them from qsd-7.2-commands-absent.txt").isEmpty();
        Set<String> notQsds = new TreeSet<>(absent.keySet());
        notQsds.removeAll(qsd);
        assertThat(notQsds).as("entries of qsd-7.2-commands-absent.txt that QSD 7.2 does not have").isEmpty();
        absent.forEach((name, reason) -> assertThat(reason).as("the reason %s is absent", name)
                .matches("(absent|pending): .+"));
    }

    /** The resource's lines, without comments and blank lines. */
    private static List<String> lines(String resource) throws IOException {
        try (InputStream in = QueryCommandsIT.class.getClassLoader().getResourceAsStream(resource)) {
            assertThat(in).as(resource).isNotNull();
            return new String(in.readAllBytes(), StandardCharsets.UTF_8).lines().map(String::strip)
                    .filter(l -> !l.isEmpty() && !l.startsWith("#")).toList();
        }
    }
}
