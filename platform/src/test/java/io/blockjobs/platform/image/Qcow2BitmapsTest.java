package io.blockjobs.platform.image;

import static io.blockjobs.platform.testkit.QmpArgs.map;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.image.PersistentBitmaps.RunSource;
import io.blockjobs.platform.image.PersistentBitmaps.ToStore;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.platform.testkit.QemuStorageDaemon;
import io.blockjobs.platform.testkit.QmpClient;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.error.CommandException;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import tools.jackson.databind.JsonNode;

/**
 * qcow2's persistent dirty bitmaps through {@link Qcow2Node}'s {@link PersistentBitmaps}, with
 * QEMU as the oracle: what blockjobs stores, {@code qemu-img info}, {@code qemu-img bitmap} and
 * {@code qemu-storage-daemon} read with the same bits; what they write, blockjobs loads; the in-use
 * and autoclear rules, the refusals and the damaged directories are QEMU's; {@code qemu-img check}
 * finds nothing after every step, nor corruption after a SIGKILL.
 */
class Qcow2BitmapsTest {

    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    // ---- round trips ------------------------------------------------------------------------------

    @Test
    void storedBitmapsShowInQemuImgInfoAndQemuImgBitmapEditsLoad() throws IOException {
        Path img = create("a.qcow2", "64M");
        List<Run> a = runs(0, 1, 5, 3, 1000, 24); // 64 KiB granules: 1024 of them
        List<Run> b = runs(2, 1, 40, 7);          // 1 MiB granules: 64 of them
        try (Qcow2Node node = open(img, true)) {
            assertThat(load(node)).isEmpty();
            node.store(List.of(new ToStore("a", 16, true, source(a)), new ToStore("b", 20, false, source(b))));
        }
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("a [auto] 65536", "b [] 1048576");

        Map<String, Loaded> loaded = reload(img);
        assertThat(loaded.get("a")).isEqualTo(new Loaded(16, false, true, a));
        assertThat(loaded.get("b")).isEqualTo(new Loaded(20, false, false, b));
        storeBack(img, loaded); // loading marked them in use; a clean close stores them
        Qemu.assertClean(img);

        // qemu-img bitmap edits what blockjobs stored, and blockjobs loads the edits.
        Qemu.img("bitmap", "--disable", img.toString(), "a");
        Qemu.img("bitmap", "--enable", img.toString(), "b");
        Qemu.img("bitmap", "--add", "-g", "65536", img.toString(), "c");
        Qemu.img("bitmap", "--merge", "a", img.toString(), "c");
        Qemu.img("bitmap", "--clear", img.toString(), "b");
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("a [] 65536", "b [auto] 1048576", "c [auto] 65536");
        loaded = reload(img);
        assertThat(loaded.get("a")).isEqualTo(new Loaded(16, false, false, a));
        assertThat(loaded.get("b")).isEqualTo(new Loaded(20, false, true, List.of()));
        assertThat(loaded.get("c")).isEqualTo(new Loaded(16, false, true, a));
        storeBack(img, loaded);
        Qemu.assertClean(img);

        Qemu.img("bitmap", "--remove", img.toString(), "a");
        Qemu.assertClean(img);
        assertThat(reload(img).keySet()).containsExactly("b", "c");
    }

    @Test
    void bitsThatQemuIoWritesIntoEnabledBitmapsLoad() throws IOException {
        Path img = create("q.qcow2", "32M");
        Qemu.img("bitmap", "--add", "-g", "65536", img.toString(), "on");
        Qemu.img("bitmap", "--add", "-g", "4096", img.toString(), "fine");
        Qemu.img("bitmap", "--add", "--disable", img.toString(), "off");
        Qemu.io(img, "qcow2", "write -P 1 1M 64k", "write -P 2 5000000 300000", "write -z 30M 2M",
                "discard 8M 1M", "write -P 3 33553920 512");
        Qemu.assertClean(img);
        long[][] writes = {{MIB, 65536}, {5000000, 300000}, {30 * MIB, 2 * MIB}, {8 * MIB, MIB}, {33553920, 512}};
        Map<String, Loaded> loaded = reload(img);
        assertThat(loaded.get("on")).isEqualTo(new Loaded(16, false, true, dirtied(16, writes)));
        assertThat(loaded.get("fine")).isEqualTo(new Loaded(12, false, true, dirtied(12, writes)));
        assertThat(loaded.get("off")).isEqualTo(new Loaded(16, false, false, List.of()));
        Qemu.assertClean(img);
    }

    // ---- in use -------------------------------------------------------------------------------------

    @Test
    void aReadWriteOpenMarksBitmapsInUseOnDiskLoadReadsThemAndStoreClearsIt() throws IOException {
        Path img = create("u.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "x");
        Qemu.img("bitmap", "--add", "--disable", img.toString(), "y");
        Qemu.io(img, "qcow2", "write 0 64k");
        try (Qcow2Node node = open(img, true)) {
            // Durable at open, as in QEMU: QEMU, sharing the image, sees both in use.
            assertThat(bitmapsInfo(Qemu.img("info", "-U", "--output=json", img.toString()).out()))
                    .containsExactly("x [in-use, auto] 65536", "y [in-use] 65536");
            Map<String, Loaded> loaded = load(node);
            assertThat(loaded.get("x")).isEqualTo(new Loaded(16, false, true, runs(0, 1)));
            assertThat(loaded.get("y")).isEqualTo(new Loaded(16, false, false, List.of()));
            assertThat(bitmapsInfo(Qemu.img("info", "-U", "--output=json", img.toString()).out()))
                    .containsExactly("x [in-use, auto] 65536", "y [in-use] 65536");
            assertThat(load(node).get("x").inUse()).as("bits are given out once").isTrue();
            node.store(List.of(new ToStore("x", 16, true, source(runs(3, 2))),
                    new ToStore("y", 16, false, source(List.of()))));
            assertThat(bitmapsInfo(Qemu.img("info", "-U", "--output=json", img.toString()).out()))
                    .containsExactly("x [auto] 65536", "y [] 65536");
        }
        Qemu.assertClean(img);
    }

    @Test
    void bitmapsFoundInUseAreAnnouncedInUseUnreadAndKeptUntilRemoved() throws IOException {
        Path img = create("i.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "stale");
        Qemu.img("bitmap", "--add", img.toString(), "kept");
        try (Qcow2Node node = open(img, true)) {
            // A writer that neither loads nor stores them (or crashes) leaves them inconsistent, not stale.
            node.write(0, ByteBuffer.allocate(4096));
        }
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("stale [in-use, auto] 65536", "kept [in-use, auto] 65536");
        try (Qcow2Node node = open(img, true)) {
            Map<String, Loaded> loaded = new LinkedHashMap<>();
            node.load((name, granularityBits, inUse, auto) -> {
                loaded.put(name, new Loaded(granularityBits, inUse, auto, List.of()));
                return (first, count) -> {
                    throw new AssertionError("bits of in-use bitmap " + name + " were read");
                };
            });
            assertThat(loaded).containsEntry("stale", new Loaded(16, true, true, List.of()))
                    .containsEntry("kept", new Loaded(16, true, true, List.of()));
            // A bitmap made anew replaces an inconsistent one; the one not listed stays as it is.
            node.store(List.of(new ToStore("kept", 16, true, source(runs(7, 9)))));
            assertThat(bitmapsInfo(Qemu.img("info", "-U", "--output=json", img.toString()).out()))
                    .containsExactly("stale [in-use, auto] 65536", "kept [auto] 65536");
            node.remove("stale");
            node.remove("never-stored"); // absence is not an error
        }
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("kept [auto] 65536");
        assertThat(reload(img).get("kept").runs()).isEqualTo(runs(7, 9));
    }

    @Test
    void storeOverAConsistentStoredBitmapIsRefusedAsQemuDoes() throws IOException {
        Path img = create("r.qcow2", "16M");
        try (Qcow2Node node = open(img, true)) {
            node.store(List.of(new ToStore("x", 16, true, source(runs(1, 1)))));
            // Stored, so no longer in use: QEMU's store refuses to overwrite it, or to take a name twice.
            assertThatThrownBy(() -> node.store(List.of(new ToStore("x", 16, true, source(List.of())))))
                    .isInstanceOf(BlockIoException.class).hasMessage("Bitmap 'x' already exists in the image");
            assertThatThrownBy(() -> node.store(List.of(new ToStore("y", 16, true, source(List.of())),
                    new ToStore("y", 16, true, source(List.of())))))
                    .isInstanceOf(BlockIoException.class).hasMessage("Bitmap 'y' already exists in the image");
        }
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("x [auto] 65536");
        assertThat(reload(img).get("x").runs()).isEqualTo(runs(1, 1));
    }

    // ---- autoclear -----------------------------------------------------------------------------------

    @Test
    void anExtensionInvalidatedByAnOlderProgramLoadsNothingAndIsDroppedByAWriter() throws IOException {
        Path img = create("o.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "x");
        Qemu.io(img, "qcow2", "write 0 64k");
        setAutoclear(img, autoclear(img) & ~1L); // what a program lacking bitmap support does when it writes
        byte[] before = Files.readAllBytes(img);

        try (Qcow2Node node = open(img, false)) {
            assertThat(load(node)).isEmpty();
        }
        assertThat(Files.readAllBytes(img)).as("a reader changes nothing").isEqualTo(before);

        try (Qcow2Node node = open(img, true)) {
            assertThat(load(node)).isEmpty();
        }
        assertThat(bitmapsExtension(img)).as("bitmaps extension").isNull();
        assertThat(bitmapsInfo(img)).isEmpty();
        // The dropped bitmap's clusters leak, as QEMU warns; nothing is corrupt.
        Qemu.assertNoCorruption(img);
        Qemu.img("check", "-r", "leaks", img.toString());
        Qemu.assertClean(img);

        // The image takes new bitmaps as any other.
        try (Qcow2Node node = open(img, true)) {
            node.store(List.of(new ToStore("y", 16, true, source(runs(0, 1)))));
        }
        assertThat(autoclear(img) & 1).isEqualTo(1);
        assertThat(bitmapsInfo(img)).containsExactly("y [auto] 65536");
        Qemu.assertClean(img);
    }

    @Test
    void aWriterClearsUnknownAutoclearBitsAndKeepsTheBitmapsBit() throws IOException {
        Path img = create("k.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "x");
        setAutoclear(img, autoclear(img) | 1L << 5);
        try (Qcow2Node node = open(img, false)) {
            load(node);
        }
        assertThat(autoclear(img)).as("a reader keeps them").isEqualTo(1L | 1L << 5);
        try (Qcow2Node node = open(img, true)) {
            assertThat(load(node)).containsKey("x");
        }
        assertThat(autoclear(img)).isEqualTo(1L);
        Qemu.assertClean(img);
    }

    @Test
    void aStoreOfNothingWithNothingStoredTouchesNothing() throws IOException {
        Path img = create("n.qcow2", "16M");
        byte[] before = Files.readAllBytes(img);
        try (Qcow2Node node = open(img, true)) {
            assertThat(load(node)).isEmpty();
            node.store(List.of());
            node.remove("none");
        }
        assertThat(Files.readAllBytes(img)).isEqualTo(before);
        assertThat(bitmapsExtension(img)).isNull();
        assertThat(autoclear(img)).isZero();
    }

    @Test
    void removingTheLastBitmapDropsTheExtensionAndFreesEveryCluster() throws IOException {
        Path img = create("d.qcow2", "256M");
        long emptySize = Files.size(img);
        try (Qcow2Node node = open(img, true)) {
            SplittableRandom r = new SplittableRandom(7);
            node.store(List.of(new ToStore("p", 9, true, source(randomRuns(r, granules(node.size(), 9), 300))),
                    new ToStore("q", 12, false, source(runs(0, granules(node.size(), 12))))));
        }
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).containsExactly("p [auto] 512", "q [] 4096");
        assertThat(Files.size(img)).isGreaterThan(emptySize);
        try (Qcow2Node node = open(img, true)) {
            node.remove("p");
            Qemu.Result check = Qemu.run("qemu-img", "check", "-U", img.toString()); // while open: counted ahead, leaks
            assertThat(check.exit()).as("%s", check).isIn(0, 3);
            node.remove("q");
        }
        Qemu.assertClean(img); // no leak: every cluster of theirs is free again
        assertThat(bitmapsExtension(img)).isNull();
        assertThat(autoclear(img) & 1).isZero();
    }

    // ---- read-only -----------------------------------------------------------------------------------

    @Test
    void aReadOnlyImageLoadsWithoutMarkingAndRefusesToStoreOrRemove() throws IOException {
        Path img = create("ro.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "x");
        Qemu.io(img, "qcow2", "write 64k 64k");
        byte[] before = Files.readAllBytes(img);
        try (Qcow2Node node = open(img, false)) {
            assertThat(load(node).get("x")).isEqualTo(new Loaded(16, false, true, runs(1, 1)));
            assertThatThrownBy(() -> node.store(List.of(new ToStore("x", 16, true, source(List.of())))))
                    .isInstanceOf(BlockIoException.class).hasMessage("No write access")
                    .satisfies(e -> assertThat(((BlockIoException) e).errno()).isEqualTo(Errno.EPERM));
            assertThatThrownBy(() -> node.remove("x")).isInstanceOf(BlockIoException.class).hasMessage("No write access");
            node.store(List.of());
            node.remove("absent");
        }
        assertThat(Files.readAllBytes(img)).isEqualTo(before);
    }

    @Test
    void reopeningReadWriteMarksTheBitmapsLoadedReadOnlyInUse() throws IOException {
        Path img = create("rw.qcow2", "16M");
        Qemu.img("bitmap", "--add", img.toString(), "x");
        try (Qcow2Node node = open(img, false)) {
            Map<String, Loaded> loaded = load(node);
            assertThat(loaded.get("x").inUse()).isFalse();
            node.reopenReadWrite();
            assertThat(bitmapsInfo(Qemu.img("info", "-U", "--output=json", img.toString()).out()))
                    .containsExactly("x [in-use, auto] 65536");
            node.store(List.of(new ToStore("x", 16, true, source(runs(4, 4)))));
        }
        Qemu.assertClean(img);
        assertThat(reload(img).get("x").runs()).isEqualTo(runs(4, 4));
    }

    // ---- refusals ------------------------------------------------------------------------------------

    @Test
    void refusalsAreQemuStorageDaemonsWordForWord() throws IOException {
        Path v2 = dir.resolve("v2.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2.toString(), "1G");
        Path v3 = create("v3.qcow2", "1G");
        Path huge = create("huge.qcow2", "8T");
        String longName = "n".repeat(1024);
        try (Qcow2Node node = open(v3, true)) {
            node.store(List.of(new ToStore("b", 16, true, source(List.of()))));
        }
        // QEMU's answers to block-dirty-bitmap-add persistent=true on the same images.
        Map<String, String> qemu = new LinkedHashMap<>();
        try (QemuStorageDaemon qsd = QemuStorageDaemon.startWithMonitor(dir, List.of(
                "--blockdev", "driver=file,node-name=f2,filename=" + v2, "--blockdev", "driver=qcow2,node-name=n2,file=f2",
                "--blockdev", "driver=file,node-name=f3,filename=" + v3, "--blockdev", "driver=qcow2,node-name=n3,file=f3",
                "--blockdev", "driver=file,node-name=fh,filename=" + huge, "--blockdev", "driver=qcow2,node-name=nh,file=fh"));
                QmpClient qmp = QmpClient.connect(qsd.qmpSocket)) {
            qemu.put("v2", qsdRefusal(qmp, "n2", "b", 65536));
            qemu.put("name", qsdRefusal(qmp, "n3", longName, 65536));
            qemu.put("exists", qsdRefusal(qmp, "n3", "b", 65536));
            qemu.put("size", qsdRefusal(qmp, "nh", "b", 512));
            qmp.ok("quit");
            qsd.awaitExit();
        }
        Map<String, String> ours = new LinkedHashMap<>();
        try (Qcow2Node n2 = open(v2, true); Qcow2Node n3 = open(v3, true); Qcow2Node nh = open(huge, true)) {
            n2.setNodeName("n2");
            n3.setNodeName("n3");
            nh.setNodeName("nh");
            ours.put("v2", refusal(() -> n2.checkCanStore("b", 16)));
            ours.put("name", refusal(() -> n3.checkCanStore(longName, 16)));
            ours.put("exists", refusal(() -> n3.checkCanStore("b", 16)));
            ours.put("size", refusal(() -> nh.checkCanStore("b", 9)));
            nh.checkCanStore("b", 12); // 8 TiB at 4 KiB granules: 256 MiB of bits, under QEMU's 512 MiB
            // Beyond what QMP can ask (its granularity is a uint32 power of two of at least 512).
            assertThat(refusal(() -> n3.checkCanStore("g", 8)))
                    .isEqualTo("Can't make bitmap 'g' persistent in 'n3': Granularity is under minimum (512 bytes)");
            assertThat(refusal(() -> n3.checkCanStore("g", 32)))
                    .isEqualTo("Can't make bitmap 'g' persistent in 'n3': Granularity exceeds maximum (2147483648 bytes)");
            n3.checkCanStore("g", 31);
            n3.checkCanStore("n".repeat(1023), 16);
            assertThatThrownBy(() -> n2.store(List.of(new ToStore("b", 16, true, source(List.of())))))
                    .isInstanceOf(BlockIoException.class).hasMessage("Cannot store dirty bitmaps in qcow2 v2 files");
        }
        assertThat(ours).isEqualTo(qemu);
        assertThat(qemu.get("v2")).isEqualTo("Can't make bitmap 'b' persistent in 'n2': Cannot store dirty bitmaps in qcow2 v2 files");
        assertThat(qemu.get("exists")).isEqualTo("Bitmap already exists: b");
        Qemu.assertClean(v3);
        Qemu.assertClean(huge);
    }

    @Test
    void theCountAndTheDirectorySizeAreQemusLimits() throws IOException {
        Path img = create("many.qcow2", "1M");
        try (Qcow2Node node = open(img, true)) {
            node.setNodeName("node0");
            node.store(List.of(new ToStore("stored", 16, true, source(List.of()))));
            for (int i = 1; i < Qcow2Bitmaps.MAX_BITMAPS; i++) {
                node.checkCanStore("m" + i, 16);
            }
            node.checkCanStore("m1", 16); // asked again (a transaction aborted): not counted twice
            assertThat(refusal(() -> node.checkCanStore("one-more", 16)))
                    .isEqualTo("Can't make bitmap 'one-more' persistent in 'node0': "
                            + "Maximum number of persistent bitmaps is already reached");
            node.remove("m1"); // a bitmap removed before it was ever stored makes room
            node.checkCanStore("one-more", 16);
        }
        Path img2 = create("long.qcow2", "1M");
        try (Qcow2Node node = open(img2, true)) {
            node.setNodeName("node1");
            String stem = "x".repeat(1000);
            long size = 0;
            int i = 0;
            while (size + 1048 <= Qcow2Bitmaps.MAX_DIRECTORY_SIZE) { // entries of 1023-byte names take 1048 bytes
                String name = stem + String.format("%023d", i++);
                node.checkCanStore(name, 16);
                size += 1048;
            }
            String last = stem + String.format("%023d", i);
            assertThat(refusal(() -> node.checkCanStore(last, 16)))
                    .isEqualTo("Can't make bitmap '" + last + "' persistent in 'node1': Not enough space in the bitmap directory");
        }
        Qemu.assertClean(img);
    }

    // ---- damaged images -------------------------------------------------------------------------------

    /** One way of damaging an image with bitmaps "b" and "c": where, what, and QEMU's words. */
    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "reserved flag       | ENTRY+12 | 4 | 4        | Bitmap 'b' doesn't satisfy the constraints",
        "type                | ENTRY+16 | 1 | 2        | Bitmap 'b' doesn't satisfy the constraints",
        "granularity 8       | ENTRY+17 | 1 | 8        | Bitmap 'b' doesn't satisfy the constraints",
        "granularity 32      | ENTRY+17 | 1 | 32       | Bitmap 'b' doesn't satisfy the constraints",
        "table offset 0      | ENTRY+0  | 8 | 0        | Bitmap 'b' doesn't satisfy the constraints",
        "table unaligned     | ENTRY+0  | 8 | 65544    | Bitmap 'b' doesn't satisfy the constraints",
        "table size 0        | ENTRY+8  | 4 | 0        | Bitmap 'b' doesn't satisfy the constraints",
        "table too small     | ENTRY2+8 | 4 | 1        | Bitmap 'c' doesn't satisfy the constraints",
        "name too long       | ENTRY+18 | 2 | 1024     | Broken bitmap directory",
        "extra data          | ENTRY+20 | 4 | 64       | Broken bitmap directory",
        "extra data in place | ENTRY+18 | 6 | 1        | Bitmap extra data is not supported",
        "count too large     | EXT+0    | 4 | 3        | Less bitmaps found than specified in header extension",
        "count too small     | EXT+0    | 4 | 1        | More bitmaps found than specified in header extension",
        "count zero          | EXT+0    | 4 | 0        | found bitmaps extension with zero bitmaps",
        "count over maximum  | EXT+0    | 4 | 65536    | bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535",
        "reserved field      | EXT+4    | 4 | 1        | bitmaps_ext: Reserved field is not zero",
        "directory size 0    | EXT+8    | 8 | 0        | Requested bitmap directory size is zero",
        "directory too large | EXT+8    | 8 | 67107841 | bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size (67107840)",
        "directory truncated | EXT+8    | 8 | 40       | Broken bitmap directory",
        "directory unaligned | EXT+16   | 8 | 512      | bitmaps_ext: invalid bitmap directory offset",
        "table entry bits    | TABLE+0  | 8 | 2        | Could not read bitmap_table table from image for bitmap 'b': Invalid argument",
        "table entry ones    | TABLE+0  | 8 | 65537    | Could not read bitmap_table table from image for bitmap 'b': Invalid argument",
        "table larger        | ENTRY+8  | 4 | 2        | Could not read bitmap 'b' from image: Invalid argument",
    })
    void aDamagedBitmapDirectoryIsRefusedWithQemusMessage(String what, String where, int width, long value, String message)
            throws IOException {
        Path img = create("bad.qcow2", "1G");
        Qemu.img("bitmap", "--add", img.toString(), "b");
        Qemu.img("bitmap", "--add", "-g", "512", img.toString(), "c");
        Qemu.io(img, "qcow2", "write 0 64k");
        Ext ext = bitmapsExtension(img);
        long entry2 = ext.directoryOffset() + 32; // "b" takes 24 + 1, rounded up to 32
        long position = switch (where.substring(0, where.indexOf('+'))) {
            case "ENTRY" -> ext.directoryOffset();
            case "ENTRY2" -> entry2;
            case "EXT" -> ext.at();
            case "TABLE" -> readLong(img, ext.directoryOffset());
            default -> throw new AssertionError(where);
        } + Long.parseLong(where.substring(where.indexOf('+') + 1));
        patch(img, position, width, value);

        // QEMU opens the image and loads its bitmaps in one step, and fails with these words.
        Qemu.Result qemu = Qemu.run("qemu-img", "info", img.toString());
        assertThat(qemu.exit()).as("qemu-img info: %s", qemu.out()).isNotZero();
        assertThat(qemu.err()).contains(message);

        byte[] damaged = Files.readAllBytes(img);
        for (boolean readWrite : new boolean[] {false, true}) {
            assertThatThrownBy(() -> open(img, readWrite)).isInstanceOf(ImageException.class)
                    .hasMessage(img + ": " + message);
        }
        assertThat(Files.readAllBytes(img)).as("the damaged image is left as it was").isEqualTo(damaged);
    }

    // ---- large and sparse ------------------------------------------------------------------------------

    @ParameterizedTest(name = "1 TiB at 2^{0}-byte granules")
    @ValueSource(ints = {16, 9})
    void aLargeSparseBitmapStoresAndLoadsRunByRun(int granularityBits) throws IOException {
        Path img = create("big.qcow2", "1T");
        long granules = granules(1L << 40, granularityBits);
        long perCluster = 65536 * 8;
        List<Run> bits = normalize(List.of(new Run(0, 1), new Run(1000, 4000), new Run(perCluster - 100, 300),
                new Run(7 * perCluster, 3 * perCluster), new Run(granules / 2 + 1, 12345), new Run(granules - 10, 10)));
        try (Qcow2Node node = open(img, true)) {
            node.store(List.of(new ToStore("big", granularityBits, true, source(bits))));
        }
        Qemu.assertClean(img);
        // Data clusters only where bits are set: the first two, three whole ones, two more.
        long[] table = firstBitmapTable(img);
        assertThat(table).hasSize((int) (granules / perCluster));
        assertThat(java.util.Arrays.stream(table).filter(t -> t != 0).count()).isEqualTo(7);
        assertThat(Files.size(img)).isLessThan(2 * MIB);
        assertThat(bitmapsInfo(img)).containsExactly("big [auto] " + (1L << granularityBits));
        Map<String, Loaded> loaded = reload(img);
        assertThat(loaded.get("big").runs()).isEqualTo(bits);
        storeBack(img, loaded);
        Qemu.assertClean(img);
    }

    // ---- qemu-storage-daemon --------------------------------------------------------------------------

    @Test
    void qemuStorageDaemonLoadsTheSameBitsAndStoresWhatItWrites() throws IOException {
        Path img = create("s.qcow2", "64G");
        SplittableRandom r = new SplittableRandom(42);
        int[] granularities = {16, 20, 9};
        Map<String, List<Run>> bits = new LinkedHashMap<>();
        try (Qcow2Node node = open(img, true)) {
            List<ToStore> all = new ArrayList<>();
            for (int g : granularities) {
                List<Run> runs = randomRuns(r, granules(node.size(), g), 200);
                bits.put("g" + g, runs);
                all.add(new ToStore("g" + g, g, g != 20, source(runs)));
            }
            node.store(all);
        }
        Qemu.assertClean(img);
        try (QemuStorageDaemon qsd = QemuStorageDaemon.startWithMonitor(dir, List.of(
                "--blockdev", "driver=file,node-name=f0,filename=" + img, "--blockdev", "driver=qcow2,node-name=n0,file=f0"));
                QmpClient qmp = QmpClient.connect(qsd.qmpSocket)) {
            for (int g : granularities) {
                String name = "g" + g;
                long granules = granules(64L << 30, g);
                assertThat(qmp.ok("x-debug-block-dirty-bitmap-sha256", map("node", "n0", "name", name)).path("sha256").asString())
                        .as("QEMU's hash of %s", name).isEqualTo(qemuSha256(bits.get(name), granules));
            }
            Map<String, JsonNode> shown = new LinkedHashMap<>();
            for (JsonNode n : qmp.ok("query-named-block-nodes", map("flat", true))) {
                if (n.path("node-name").asString().equals("n0")) {
                    n.path("dirty-bitmaps").forEach(d -> shown.put(d.path("name").asString(), d));
                }
            }
            for (int g : granularities) {
                JsonNode d = shown.get("g" + g);
                assertThat(d.path("persistent").asBoolean()).isTrue();
                assertThat(d.path("recording").asBoolean()).isEqualTo(g != 20);
                assertThat(d.path("granularity").asLong()).isEqualTo(1L << g);
                assertThat(d.path("count").asLong()).isEqualTo(count(bits.get("g" + g)) << g);
            }
            // QEMU dirties its own bitmaps through an export, and stores them all when it quits.
            qmp.ok("block-dirty-bitmap-add", map("node", "n0", "name", "qemu", "granularity", 65536, "persistent", true));
            qmp.ok("block-dirty-bitmap-clear", map("node", "n0", "name", "g16"));
            qmp.ok("block-export-add", map("type", "nbd", "id", "e0", "node-name", "n0", "name", "e0", "writable", true));
            Qemu.ioNbd(qsd.nbdUri("e0"), "write -P 9 3M 100k", "write -z 60G 1M");
            qmp.ok("quit");
            qsd.awaitExit();
        }
        Qemu.assertClean(img);
        long[][] writes = {{3 * MIB, 100 << 10}, {60L << 30, MIB}};
        Map<String, Loaded> loaded = reload(img);
        assertThat(loaded.keySet()).containsExactly("g16", "g20", "g9", "qemu");
        assertThat(loaded.get("qemu")).isEqualTo(new Loaded(16, false, true, dirtied(16, writes)));
        assertThat(loaded.get("g16")).isEqualTo(new Loaded(16, false, true, dirtied(16, writes)));
        assertThat(loaded.get("g20")).isEqualTo(new Loaded(20, false, false, bits.get("g20")));
        assertThat(loaded.get("g9")).isEqualTo(new Loaded(9, false, true, union(bits.get("g9"), dirtied(9, writes))));
        storeBack(img, loaded);
        Qemu.assertClean(img);
    }

    // ---- header ---------------------------------------------------------------------------------------

    @Test
    void theHeadersOtherFieldsAndExtensionsSurviveStoreAndRemove() throws IOException {
        create("base.qcow2", "16M");
        Path img = dir.resolve("top.qcow2");
        Qemu.img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on", "-b", "base.qcow2", "-F",
                "qcow2", img.toString());
        Qemu.io(img, "qcow2", "write -P 5 1M 8k");
        JsonNode before = Qemu.info(img);
        try (Qcow2Node node = open(img, true)) {
            node.store(List.of(new ToStore("x", 9, true, source(runs(5, 100)))));
        }
        Qemu.assertClean(img);
        JsonNode after = Qemu.info(img);
        assertThat(after.path("backing-filename").asString()).isEqualTo("base.qcow2");
        assertThat(after.path("backing-filename-format").asString()).isEqualTo("qcow2");
        assertThat(after.path("format-specific").path("data").path("lazy-refcounts"))
                .isEqualTo(before.path("format-specific").path("data").path("lazy-refcounts"));
        assertThat(after.path("cluster-size")).isEqualTo(before.path("cluster-size"));
        assertThat(bitmapsInfo(img)).containsExactly("x [auto] 512");
        assertThat(reload(img).get("x").runs()).isEqualTo(runs(5, 100));
        try (Qcow2Node node = open(img, true)) {
            node.remove("x");
        }
        Qemu.assertClean(img);
        assertThat(Qemu.info(img).path("backing-filename").asString()).isEqualTo("base.qcow2");
        Qemu.io(img, "qcow2", "read -P 5 1M 8k");
    }

    // ---- crashes ---------------------------------------------------------------------------------------

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
    void aWriterKilledWhileStoringLeavesNoCorruptionAndNoStaleBitmap(long seed) throws Exception {
        Path img = create("kill.qcow2", "64M");
        long killAt = 1 + new SplittableRandom(seed).nextInt(400); // a round takes some 40 to 70 of them
        String java = ProcessHandle.current().info().command().orElse("java");
        Process child = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                BitmapStoreWriter.class.getName(), img.toString(), String.valueOf(seed), String.valueOf(killAt))
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
        long lastStored = -1;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = out.readLine()) != null) {
                lastStored = Long.parseLong(line.substring("stored ".length()));
            }
        }
        assertThat(child.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(child.exitValue()).as("killed by SIGKILL").isEqualTo(128 + 9);
        Qemu.assertNoCorruption(img);

        // Each bitmap is as the last round stored it, or as the interrupted round did, or in use, or gone
        // (killed while its in-use flag was written); never stale bits that claim to be consistent.
        List<ToStore> back = new ArrayList<>();
        try (Qcow2Node node = open(img, true)) {
            Map<String, Loaded> loaded = load(node);
            for (int b = 0; b < BitmapStoreWriter.NAMES.length; b++) {
                String name = BitmapStoreWriter.NAMES[b];
                Loaded l = loaded.get(name);
                if (l == null) {
                    continue;
                }
                long granules = granules(node.size(), BitmapStoreWriter.GRANULARITY_BITS[b]);
                if (l.inUse()) {
                    node.remove(name);
                } else {
                    List<List<Run>> possible = new ArrayList<>();
                    if (lastStored >= 0) {
                        possible.add(BitmapStoreWriter.bits(seed, lastStored, b, granules));
                    }
                    possible.add(BitmapStoreWriter.bits(seed, lastStored + 1, b, granules));
                    assertThat(l.runs()).as("seed %d, %s after round %d", seed, name, lastStored).isIn(possible);
                    back.add(new ToStore(name, l.granularityBits(), l.auto(), source(l.runs())));
                }
            }
            node.store(back);
        }
        Qemu.assertNoCorruption(img);
        Qemu.img("check", "-r", "leaks", img.toString());
        Qemu.assertClean(img);
        assertThat(bitmapsInfo(img)).hasSize(back.size()).noneMatch(s -> s.contains("in-use"));
    }

    // ---- helpers ----------------------------------------------------------------------------------------

    /** Granules {@code [first, first + count)}. */
    record Run(long first, long count) {
    }

    /** What {@link PersistentBitmaps#load} announced of one bitmap. */
    record Loaded(int granularityBits, boolean inUse, boolean auto, List<Run> runs) {
    }

    private Path create(String name, String size) {
        Path p = dir.resolve(name);
        Qemu.img("create", "-q", "-f", "qcow2", p.toString(), size);
        return p;
    }

    private static Qcow2Node open(Path img, boolean readWrite) throws IOException {
        return (Qcow2Node) Images.open(img, "qcow2", readWrite);
    }

    static Map<String, Loaded> load(Qcow2Node node) throws IOException {
        Map<String, Loaded> out = new LinkedHashMap<>();
        node.load((name, granularityBits, inUse, auto) -> {
            List<Run> runs = new ArrayList<>();
            out.put(name, new Loaded(granularityBits, inUse, auto, runs));
            return (first, count) -> {
                assertThat(inUse).as("bits of in-use bitmap %s", name).isFalse();
                assertThat(count).isPositive();
                if (!runs.isEmpty()) {
                    Run prev = runs.get(runs.size() - 1);
                    assertThat(first).as("runs of %s in order and apart", name).isGreaterThan(prev.first() + prev.count());
                }
                runs.add(new Run(first, count));
            };
        });
        return out;
    }

    /** Loads read-only, so that the image stays as it is. */
    private static Map<String, Loaded> reload(Path img) throws IOException {
        try (Qcow2Node node = open(img, false)) {
            return load(node);
        }
    }

    /** Loads read-write (marking them in use) and stores them back as they were, as a daemon's run does. */
    private static void storeBack(Path img, Map<String, Loaded> expected) throws IOException {
        try (Qcow2Node node = open(img, true)) {
            Map<String, Loaded> loaded = load(node);
            assertThat(loaded).isEqualTo(expected);
            List<ToStore> all = new ArrayList<>();
            loaded.forEach((name, l) -> all.add(new ToStore(name, l.granularityBits(), l.auto(), source(l.runs()))));
            node.store(all);
        }
    }

    static RunSource source(List<Run> runs) {
        return (from, to, sink) -> {
            for (Run r : runs) {
                long s = Math.max(from, r.first());
                long e = Math.min(to, r.first() + r.count());
                if (s < e) {
                    sink.run(s, e - s);
                }
            }
        };
    }

    /** Runs from {@code first, count} pairs. */
    static List<Run> runs(long... pairs) {
        List<Run> out = new ArrayList<>();
        for (int i = 0; i < pairs.length; i += 2) {
            out.add(new Run(pairs[i], pairs[i + 1]));
        }
        return normalize(out);
    }

    /** Sorted, with overlapping and touching runs joined. */
    static List<Run> normalize(List<Run> runs) {
        List<Run> sorted = new ArrayList<>(runs);
        sorted.sort(Comparator.comparingLong(Run::first));
        List<Run> out = new ArrayList<>();
        for (Run r : sorted) {
            if (r.count() <= 0) {
                continue;
            }
            if (!out.isEmpty()) {
                Run last = out.get(out.size() - 1);
                if (r.first() <= last.first() + last.count()) {
                    long end = Math.max(last.first() + last.count(), r.first() + r.count());
                    out.set(out.size() - 1, new Run(last.first(), end - last.first()));
                    continue;
                }
            }
            out.add(r);
        }
        return out;
    }

    static List<Run> union(List<Run> a, List<Run> b) {
        List<Run> all = new ArrayList<>(a);
        all.addAll(b);
        return normalize(all);
    }

    /** The granules that writes of {@code offset, length} pairs dirty. */
    static List<Run> dirtied(int granularityBits, long[]... writes) {
        List<Run> out = new ArrayList<>();
        for (long[] w : writes) {
            long first = w[0] >>> granularityBits;
            long last = (w[0] + w[1] - 1) >>> granularityBits;
            out.add(new Run(first, last - first + 1));
        }
        return normalize(out);
    }

    static long granules(long size, int granularityBits) {
        return (size + (1L << granularityBits) - 1) >>> granularityBits;
    }

    /** Up to {@code n} random runs within {@code [0, granules)}, some long, most short. */
    static List<Run> randomRuns(SplittableRandom r, long granules, int n) {
        List<Run> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long first = r.nextLong(granules);
            long max = Math.min(granules - first, r.nextInt(8) == 0 ? granules / 8 : 1 + r.nextInt(5000));
            out.add(new Run(first, 1 + r.nextLong(Math.max(1, max))));
        }
        return normalize(out);
    }

    private static long count(List<Run> runs) {
        return runs.stream().mapToLong(Run::count).sum();
    }

    /**
     * QEMU's {@code x-debug-block-dirty-bitmap-sha256}: SHA-256 over the bitmap as 64-bit
     * little-endian words, bit {@code i} is granule {@code i}.
     */
    private static String qemuSha256(List<Run> runs, long granules) {
        byte[] words = new byte[Math.toIntExact((granules + 63) / 64 * 8)];
        for (Run run : runs) {
            long g = run.first();
            long end = run.first() + run.count();
            for (; g < end && (g & 7) != 0; g++) {
                words[(int) (g >>> 3)] |= (byte) (1 << (g & 7));
            }
            if (g < (end & ~7L)) {
                java.util.Arrays.fill(words, (int) (g >>> 3), (int) (end >>> 3), (byte) 0xff);
                g = end & ~7L;
            }
            for (; g < end; g++) {
                words[(int) (g >>> 3)] |= (byte) (1 << (g & 7));
            }
        }
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(words));
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
    }

    private static String qsdRefusal(QmpClient qmp, String node, String name, long granularity) throws IOException {
        return qmp.error("block-dirty-bitmap-add", map("node", node, "name", name, "granularity", granularity,
                "persistent", true)).path("desc").asString();
    }

    private static String refusal(Runnable r) {
        try {
            r.run();
        } catch (CommandException e) {
            return e.getMessage();
        }
        throw new AssertionError("not refused");
    }

    /** {@code qemu-img info}'s bitmaps, each as "name [flags] granularity". */
    private static List<String> bitmapsInfo(Path img) {
        return bitmapsInfo(Qemu.img("info", "--output=json", img.toString()).out());
    }

    private static List<String> bitmapsInfo(String infoJson) {
        List<String> out = new ArrayList<>();
        for (JsonNode b : Qemu.JSON.readTree(infoJson).path("format-specific").path("data").path("bitmaps")) {
            List<String> flags = new ArrayList<>();
            b.path("flags").forEach(f -> flags.add(f.asString()));
            out.add(b.path("name").asString() + " " + flags + " " + b.path("granularity").asLong());
        }
        return out;
    }

    /** The bitmaps extension of an image: where its data starts, and its fields. */
    record Ext(long at, int count, long directorySize, long directoryOffset) {
    }

    private static Ext bitmapsExtension(Path img) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(65536);
        try (FileChannel ch = FileChannel.open(img)) {
            ch.read(h, 0);
        }
        int pos = h.getInt(100); // header_length (version 3)
        while (pos + 8 <= h.capacity()) {
            int type = h.getInt(pos);
            int length = h.getInt(pos + 4);
            if (type == 0) {
                return null;
            }
            if (type == Qcow2Header.EXT_BITMAPS) {
                return new Ext(pos + 8, h.getInt(pos + 8), h.getLong(pos + 16), h.getLong(pos + 24));
            }
            pos += 8 + (length + 7) / 8 * 8;
        }
        return null;
    }

    /** The bitmap table of the directory's first bitmap, as on disk. */
    private static long[] firstBitmapTable(Path img) throws IOException {
        Ext ext = bitmapsExtension(img);
        long tableOffset = readLong(img, ext.directoryOffset());
        ByteBuffer size = ByteBuffer.allocate(4);
        try (FileChannel ch = FileChannel.open(img)) {
            ch.read(size, ext.directoryOffset() + 8);
            ByteBuffer raw = ByteBuffer.allocate(size.getInt(0) * 8);
            ch.read(raw, tableOffset);
            long[] table = new long[size.getInt(0)];
            raw.flip().asLongBuffer().get(table);
            return table;
        }
    }

    private static long autoclear(Path img) throws IOException {
        return readLong(img, 88);
    }

    private static void setAutoclear(Path img, long value) throws IOException {
        patch(img, 88, 8, value);
    }

    private static long readLong(Path img, long position) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8);
        try (FileChannel ch = FileChannel.open(img)) {
            ch.read(b, position);
        }
        return b.getLong(0);
    }

    /** Writes {@code value} big-endian into {@code width} bytes at {@code position}. */
    private static void patch(Path img, long position, int width, long value) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(width);
        for (int i = 0; i < width; i++) {
            b.put(width - 1 - i, (byte) (value >>> (8 * i)));
        }
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(b, position);
        }
    }
}
