package io.blockjobs.platform.daemon;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;

import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.StorageDaemon;
import io.blockjobs.platform.testkit.StorageDaemon.Kind;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

/**
 * Persistent dirty bitmaps in qcow2, as QEMU stores them: what blockjobd stores, {@code qemu-img}
 * and qemu-storage-daemon read with the same bits; what they store, blockjobd reads; a daemon
 * killed with bitmaps open leaves them {@code in-use}, loaded {@code inconsistent}; and every
 * image stays {@code qemu-img check} clean.
 */
class BitmapPersistenceIT {
    @TempDir
    Path dir;
    private final List<StorageDaemon> running = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (StorageDaemon d : running) {
            d.close();
        }
    }

    private StorageDaemon start(Kind kind, Path image) throws Exception {
        Path run = Files.createDirectories(dir.resolve("run-" + kind + "-" + running.size()));
        StorageDaemon s = StorageDaemon.start(kind, run, List.of(
                "--blockdev", "driver=file,node-name=f,filename=" + image,
                "--blockdev", "driver=qcow2,node-name=disk,file=f",
                "--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on"));
        running.add(s);
        return s;
    }

    /** Each bitmap of the node: name → {count, granularity, recording, persistent, inconsistent?}. */
    private static Map<String, String> bitmaps(StorageDaemon s) throws Exception {
        Map<String, String> out = new TreeMap<>();
        for (JsonNode n : s.qmp.ok("query-named-block-nodes", map("flat", true))) {
            if (n.get("node-name").asString().equals("disk")) {
                for (JsonNode b : n.path("dirty-bitmaps")) {
                    String name = b.get("name").asString();
                    JsonNode sha = s.qmp.execute("x-debug-block-dirty-bitmap-sha256", map("node", "disk", "name", name));
                    out.put(name, "count=" + b.get("count") + " granularity=" + b.get("granularity")
                            + " recording=" + b.get("recording") + " persistent=" + b.get("persistent")
                            + " inconsistent=" + b.path("inconsistent").asBoolean(false)
                            + " sha256=" + sha.path("return").path("sha256").asString(sha.path("error").path("desc").asString()));
                }
            }
        }
        return out;
    }

    /** {@code qemu-img info}'s bitmaps: name → "granularity flags". */
    private static Map<String, String> imgBitmaps(Path image) {
        Map<String, String> out = new TreeMap<>();
        JsonNode info = Qemu.JSON.readTree(Qemu.run("qemu-img", "info", "-U", "--output=json", image.toString()).ok().out());
        for (JsonNode b : info.path("format-specific").path("data").path("bitmaps")) {
            List<String> flags = new ArrayList<>();
            b.path("flags").forEach(f -> flags.add(f.asString()));
            out.put(b.get("name").asString(), b.get("granularity").asLong() + " " + flags);
        }
        return out;
    }

    @Test
    void whatBlockjobdStoresQemuReadsAndTheOtherWayRound() throws Exception {
        Path image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "64M");
        StorageDaemon bj = start(Kind.BLOCKJOBD, image);
        bj.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "p", "persistent", true));
        bj.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "fine", "persistent", true, "granularity", 512));
        bj.qmp.ok("block-dirty-bitmap-add", map("node", "disk", "name", "mem"));
        Qemu.ioNbd(bj.nbdUri("disk"), "write -P 0x51 0 100k", "write -P 0x52 33M 3000", "write -z 50M 2M");
        bj.qmp.ok("block-dirty-bitmap-disable", map("node", "disk", "name", "fine"));
        Map<String, String> stored = bitmaps(bj);
        stored.remove("mem"); // not persistent: gone with the daemon
        bj.quit();
        Qemu.assertClean(image);
        assertThat(imgBitmaps(image)).isEqualTo(Map.of("p", "65536 [auto]", "fine", "512 []"));

        StorageDaemon qsd = start(Kind.QEMU, image);
        assertThat(bitmaps(qsd)).as("qemu-storage-daemon loads blockjobd's bitmaps").isEqualTo(stored);
        Qemu.ioNbd(qsd.nbdUri("disk"), "write -P 0x53 60M 64k");
        qsd.qmp.ok("block-dirty-bitmap-enable", map("node", "disk", "name", "fine"));
        Qemu.ioNbd(qsd.nbdUri("disk"), "write -P 0x54 1M 512");
        Map<String, String> byQemu = bitmaps(qsd);
        assertThat(byQemu).isNotEqualTo(stored);
        qsd.quit();
        Qemu.assertClean(image);

        StorageDaemon again = start(Kind.BLOCKJOBD, image);
        assertThat(bitmaps(again)).as("blockjobd loads what qemu-storage-daemon stored").isEqualTo(byQemu);
        again.quit();
        Qemu.assertClean(image);
        assertThat(imgBitmaps(image)).isEqualTo(Map.of("p", "65536 [auto]", "fine", "512 [auto]"));
    }

    @Test
    void qemuImgBitmapEditsWhatBlockjobdStored() throws Exception {
        Path image = dir.resolve("disk.qcow2");
        Qemu.img("create", "-f", "qcow2", image.toString(), "64M");
        Qemu.img("bitmap", "--add", "-g", "4096", image.toString(), "b");
        Qemu.img("bitmap", "--add", "--disable", image.toString(), "off");
        StorageDaemon bj = start(Kind.BLOCKJOBD, image);
        assertThat(bitmaps(bj)).containsKeys("b", "off");
        assertThat(bitmaps(bj).get("off")).contains("recording=false", "count=0");
        Qemu.ioNbd(bj.nbdUri("disk"), "write -P 0x61 8M 1M");
        assertThat(bitmaps(bj).get("b")).contains("count=1048576", "recording=true");
        bj.quit();
        Qemu.img("bitmap", "--merge", "b", image.toString(), "off");
        Qemu.img("bitmap", "--clear", image.toString(), "b");
        Qemu.img("bitmap", "--add", image.toString(), "new");
        Qemu.img("bitmap", "--remove", image.toString(), "new");
        Qemu.assertClean(image);
        StorageDaemon reopened = start(Kind.BLOCKJOBD, image);
        Map<String, String> after = bitmaps(reopened);
        assertThat(after.keySet()).containsExactly("b", "off");
        assertThat(after.get("b")).contains("count=0");
        assertThat(after.get("off")).contains("count=1048576", "recording=false");
        reopened.qmp.ok("block-dirty-bitmap-remove", map("node", "disk", "name", "off"));
        assertThat(imgBitmaps(image)).as("removed from the image at once").doesNotContainKey("off");
        reopened.quit();
        Qemu.assertClean(image);
        assertThat(imgBitmaps(image)).isEqualTo(Map.of("b", "4096 [auto]"));
    }

    /** SIGKILL with a persistent bitmap open: in-use on disk, inconsistent when loaded, only removable; as QEMU. */
    @Test
    void aKilledDaemonsBitmapsAreNeverTrusted() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Path image = dir.resolve(kind + ".qcow2");
            Qemu.img("create", "-f", "qcow2", image.toString(), "64M");
            Qemu.img("bitmap", "--add", image.toString(), "p");
            StorageDaemon s = start(kind, image);
            Qemu.ioNbd(s.nbdUri("disk"), "write -P 0x71 0 1M");
            List<String> r = new ArrayList<>();
            r.add("while open: " + imgBitmaps(image));
            s.killHard();
            r.add("after kill: " + imgBitmaps(image));
            Qemu.assertNoCorruption(image);
            StorageDaemon again = start(kind, image);
            r.add(bitmaps(again).toString());
            for (String c : List.of("block-dirty-bitmap-clear", "block-dirty-bitmap-enable", "x-debug-block-dirty-bitmap-sha256")) {
                JsonNode reply = again.qmp.execute(c, map("node", "disk", "name", "p"));
                r.add(c + " -> " + reply.path("error").path("desc").asString(String.valueOf(reply.get("return"))));
            }
            again.qmp.ok("block-dirty-bitmap-remove", map("node", "disk", "name", "p"));
            again.quit();
            r.add("after remove: " + imgBitmaps(image));
            Qemu.assertNoCorruption(image);
            seen.put(kind, r);
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU));
        assertThat(seen.get(Kind.BLOCKJOBD).get(0)).contains("in-use");
        assertThat(seen.get(Kind.BLOCKJOBD).get(2)).contains("inconsistent=true");
        assertThat(seen.get(Kind.BLOCKJOBD).get(3)).contains("Bitmap 'p' is inconsistent and cannot be used");
    }

    @Test
    void refusesPersistentBitmapsWhereQemuDoes() throws Exception {
        Map<Kind, List<String>> seen = new EnumMap<>(Kind.class);
        for (Kind kind : List.of(Kind.BLOCKJOBD, Kind.QEMU)) {
            Path image = dir.resolve(kind + "-v2.qcow2");
            Qemu.img("create", "-f", "qcow2", "-o", "compat=0.10", image.toString(), "64M");
            StorageDaemon s = start(kind, image);
            List<String> r = new ArrayList<>();
            for (Object args : List.of(
                    map("node", "disk", "name", "p", "persistent", true),
                    map("node", "f", "name", "p", "persistent", true))) {
                JsonNode reply = s.qmp.execute("block-dirty-bitmap-add", args);
                r.add(reply.path("error").path("desc").asString(String.valueOf(reply.get("return"))));
            }
            s.quit();
            Qemu.assertClean(image);
            seen.put(kind, r);
        }
        assertThat(seen.get(Kind.BLOCKJOBD)).isEqualTo(seen.get(Kind.QEMU));
    }
}
