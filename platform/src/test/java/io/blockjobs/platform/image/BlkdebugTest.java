package io.blockjobs.platform.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.graph.Edge;
import io.blockjobs.platform.graph.GraphNode;
import io.blockjobs.platform.graph.Perm;
import io.blockjobs.platform.testkit.Qemu;
import io.blockjobs.sdk.block.BlockIoException;
import io.blockjobs.sdk.block.Errno;
import io.blockjobs.sdk.block.RequestFlag;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * blkdebug through a real graph, rule by rule as QEMU 7.2's block/blkdebug.c runs them: each
 * expectation below is what QEMU did in the same situation (measured with qemu-io over
 * raw-over-blkdebug, which sees the same events as a blockjobs blkdebug node).
 */
class BlkdebugTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    Path raw;
    DriverGraph g;

    @BeforeEach
    void setUp() throws IOException {
        raw = dir.resolve("x.raw");
        byte[] data = new byte[MIB];
        Arrays.fill(data, (byte) 0x11);
        Files.write(raw, data);
        g = new DriverGraph();
    }

    @AfterEach
    void tearDown() {
        g.close();
    }

    /** A blkdebug node {@code bd} over the raw file with these extra members, and a user of it. */
    private Edge blkdebug(String members) {
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"image\":{\"driver\":\"file\",\"filename\":\""
                + raw + "\"}" + (members.isEmpty() ? "" : "," + members) + "}");
        return g.user("bd");
    }

    private Path config(String text) throws IOException {
        Path c = dir.resolve("bd.conf");
        Files.writeString(c, text);
        return c;
    }

    private static void read(Edge e, long offset, int length) throws IOException {
        e.read(offset, ByteBuffer.allocate(length));
    }

    private static void write(Edge e, long offset, int length) throws IOException {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) 0x42);
        e.write(offset, ByteBuffer.wrap(b));
    }

    /** The errno a request fails with, or null if it succeeds. */
    private static Errno outcome(IoAction a) {
        try {
            a.run();
            return null;
        } catch (BlockIoException e) {
            return e.errno();
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    private interface IoAction {
        void run() throws IOException;
    }

    @Test
    void aReadAioRuleAboveQcow2FailsReadsWithItsErrnoAndWordsThenEveryLaterRequest() throws IOException {
        Path q = dir.resolve("q.qcow2");
        Qemu.img("create", "-f", "qcow2", q.toString(), "1M");
        g.add("{\"driver\":\"qcow2\",\"node-name\":\"q\",\"file\":{\"driver\":\"file\",\"filename\":\"" + q + "\"}}");
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"image\":\"q\","
                + "\"inject-error\":[{\"event\":\"read_aio\",\"errno\":28}]}");
        Edge e = g.user("bd");
        write(e, 0, 4096); // no read yet: the rule is not active
        assertThatThrownBy(() -> read(e, 0, 512)).isInstanceOf(BlockIoException.class)
                .hasMessage("No space left on device")
                .satisfies(t -> assertThat(((BlockIoException) t).errno()).isEqualTo(Errno.ENOSPC));
        // Active rules stay active and apply to every iotype but block status.
        assertThat(outcome(() -> write(e, 0, 4096))).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(e::flush)).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> e.blockStatus(0, 4096))).isNull();
    }

    @Test
    void aConfigFileWithSetStateMakesTheThirdReadFailOnce() throws IOException {
        Path c = config("""
                # the third read fails, once
                [set-state]
                event = "read_aio"
                state = "1"
                new_state = "2"

                [set-state]
                event = "read_aio"
                state = "2"
                new_state = "3"

                [inject-error]
                event = "read_aio"
                state = "3"
                once = "on"
                """);
        Edge e = blkdebug("\"config\":\"" + c + "\"");
        BlkdebugNode node = (BlkdebugNode) g.graph.require("bd").driverNode();
        assertThat(node.rules().state()).isEqualTo(1);
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        assertThat(node.rules().state()).isEqualTo(3);
        assertThat(outcome(() -> read(e, 0, 512))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
    }

    @Test
    void theInjectRulesOfAnEventReplaceTheActiveSet() {
        // [none iotype=read errno 28][pwritev_done iotype=write errno 1]: read ENOSPC; write OK; read OK; write EPERM
        Edge e = blkdebug("\"inject-error\":[{\"event\":\"none\",\"iotype\":\"read\",\"errno\":28},"
                + "{\"event\":\"pwritev_done\",\"iotype\":\"write\",\"errno\":1}]");
        assertThat(outcome(() -> read(e, 0, 512))).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> write(e, 0, 512))).isNull();
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        assertThat(outcome(() -> write(e, 0, 512))).isEqualTo(Errno.EPERM);
    }

    @Test
    void theFirstDefinedRuleWinsAndErrnoZeroMasksTheOthers() throws IOException {
        Edge first = blkdebug("\"inject-error\":[{\"event\":\"none\",\"errno\":28},{\"event\":\"none\",\"errno\":1}]");
        assertThat(outcome(() -> read(first, 0, 512))).isEqualTo(Errno.ENOSPC);
        g.graph.detachRoot(first);
        g.graph.delete("bd", n -> null);
        Edge masked = blkdebug("\"inject-error\":[{\"event\":\"none\",\"errno\":0},{\"event\":\"none\",\"errno\":1}]");
        assertThat(outcome(() -> read(masked, 0, 512))).isNull();
    }

    @Test
    void statesAreThoseAtTheEventAndAPwritevRuleWaitsForTheSecondWrite() {
        // set-state {none -> 2} + inject {none, state 2}: the inject rule saw state 1
        Edge e = blkdebug("\"set-state\":[{\"event\":\"none\",\"new_state\":2}],"
                + "\"inject-error\":[{\"event\":\"none\",\"state\":2}],"
                + "\"take-child-perms\":[],\"unshare-child-perms\":[]");
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        g.graph.detachRoot(e);
        g.graph.delete("bd", n -> null);
        // [set-state pwritev 1->2][inject pwritev state=2]: write OK; write FAIL; write FAIL; read FAIL
        Edge w = blkdebug("\"set-state\":[{\"event\":\"pwritev\",\"state\":1,\"new_state\":2}],"
                + "\"inject-error\":[{\"event\":\"pwritev\",\"state\":2}]");
        assertThat(outcome(() -> write(w, 0, 512))).isNull();
        assertThat(outcome(() -> write(w, 0, 512))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> write(w, 0, 512))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> read(w, 0, 512))).isEqualTo(Errno.EIO);
    }

    @Test
    void aSectorRuleFailsRequestsThatHoldTheSector() {
        // event none, sector=8: read 0 512 OK; read 0 4096 OK; read 4096 512 FAIL; read 0 4097 FAIL; write 4096 512 FAIL
        Edge e = blkdebug("\"inject-error\":[{\"event\":\"none\",\"sector\":8}]");
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        assertThat(outcome(() -> read(e, 0, 4096))).isNull();
        assertThat(outcome(() -> read(e, 4096, 512))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> read(e, 0, 4097))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> write(e, 4096, 512))).isEqualTo(Errno.EIO);
        assertThat(outcome(() -> read(e, 4097, 512))).as("only the sector's first byte counts").isNull();
    }

    @Test
    void flushesMatchOnlyRulesWithoutASectorAndBlockStatusOnlyWhenAsked() {
        Edge e = blkdebug("\"inject-error\":[{\"event\":\"none\",\"iotype\":\"flush\",\"sector\":0},"
                + "{\"event\":\"none\",\"iotype\":\"block-status\",\"errno\":61}]");
        assertThat(outcome(e::flush)).isNull();
        assertThatThrownBy(() -> e.blockStatus(0, 512)).isInstanceOf(BlockIoException.class)
                .hasMessage("No data available"); // an errno the SDK does not name keeps its words
    }

    @Test
    void alignPadsRequestsSoRulesSeeThePaddedRange() throws IOException {
        // align=4096, sector=7: read 0 512 fails, because it reached blkdebug as 0..4096
        Edge aligned = blkdebug("\"align\":4096,\"inject-error\":[{\"event\":\"none\",\"sector\":7,\"iotype\":\"read\"}]");
        assertThat(g.graph.require("bd").limits().requestAlignment()).isEqualTo(4096);
        assertThat(outcome(() -> read(aligned, 0, 512))).isEqualTo(Errno.EIO);
        g.graph.detachRoot(aligned);
        g.graph.delete("bd", n -> null);
        Edge plain = blkdebug("\"inject-error\":[{\"event\":\"none\",\"sector\":7,\"iotype\":\"read\"}]");
        assertThat(outcome(() -> read(plain, 0, 512))).isNull();
    }

    @Test
    void anUnalignedWriteIsAReadModifyWriteThatKeepsTheBytesAround() throws IOException {
        Edge e = blkdebug("\"align\":4096");
        e.write(4097, ByteBuffer.wrap(new byte[] {0x42, 0x43}));
        e.flush();
        byte[] file = Files.readAllBytes(raw);
        assertThat(file[4096]).isEqualTo((byte) 0x11);
        assertThat(file[4097]).isEqualTo((byte) 0x42);
        assertThat(file[4098]).isEqualTo((byte) 0x43);
        assertThat(file[4099]).isEqualTo((byte) 0x11);
        assertThat(file[8191]).isEqualTo((byte) 0x11);
    }

    @Test
    void aFailedReadModifyWriteReadFailsTheWrite() throws IOException {
        // QEMU 7.2 ignores this read's failure and writes zeroes around the data; blockjobs fails the write.
        Edge e = blkdebug("\"align\":4096,\"inject-error\":[{\"event\":\"pwritev_rmw_head\",\"errno\":28}]");
        assertThat(outcome(() -> e.write(4097, ByteBuffer.wrap(new byte[] {0x42})))).isEqualTo(Errno.ENOSPC);
        assertThat(Files.readAllBytes(raw)[4097]).isEqualTo((byte) 0x11);
        // pwritev_rmw_tail fires for a write whose tail only is unaligned
        g.graph.detachRoot(e);
        g.graph.delete("bd", n -> null);
        Edge t = blkdebug("\"align\":4096,\"inject-error\":[{\"event\":\"pwritev_rmw_after_tail\",\"iotype\":\"write\"}]");
        assertThat(outcome(() -> write(t, 0, 4096))).as("aligned: no read-modify-write").isNull();
        assertThat(outcome(() -> write(t, 8192, 100))).isEqualTo(Errno.EIO);
    }

    @Test
    void maxTransferSplitsRequestsIntoPiecesTheRulesCheckOneByOne() {
        // sector 0 masks (errno 0) whatever request holds it; the other rule fails the rest.
        String rules = "\"inject-error\":[{\"event\":\"none\",\"sector\":0,\"errno\":0},{\"event\":\"none\",\"errno\":28}]";
        Edge whole = blkdebug(rules);
        assertThat(outcome(() -> read(whole, 0, 8192))).isNull();
        g.graph.detachRoot(whole);
        g.graph.delete("bd", n -> null);
        Edge split = blkdebug("\"max-transfer\":4096," + rules);
        assertThat(outcome(() -> read(split, 0, 4096))).isNull();
        assertThat(outcome(() -> read(split, 0, 8192))).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> write(split, 0, 8192))).isEqualTo(Errno.ENOSPC);
    }

    @Test
    void writeZeroesSmallerThanOptWriteZeroBecomeWrites() throws IOException {
        String rule = "\"inject-error\":[{\"event\":\"none\",\"iotype\":\"write\",\"errno\":28}]";
        Edge plain = blkdebug(rule);
        plain.writeZeroes(65536 + 512, 8192, false);
        g.graph.detachRoot(plain);
        g.graph.delete("bd", n -> null);
        Edge opt = blkdebug("\"opt-write-zero\":4096," + rule);
        assertThat(outcome(() -> opt.writeZeroes(4096, 8192, false))).as("aligned: real write-zeroes").isNull();
        assertThat(outcome(() -> opt.writeZeroes(512, 8192, false))).as("the head is written").isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> opt.writeZeroes(512, 1024, Set.of(RequestFlag.NO_FALLBACK)))).isEqualTo(Errno.ENOTSUP);
        byte[] file = Files.readAllBytes(raw);
        assertThat(file[65536 + 512]).isZero();
        assertThat(file[4095]).isEqualTo((byte) 0x11);
        assertThat(file[4096]).isZero();
        assertThat(file[4096 + 8191]).isZero();
        assertThat(file[4096 + 8192]).isEqualTo((byte) 0x11);
    }

    @Test
    void discardsAreSplitAtOptDiscardAndMaxDiscard() {
        // sector 8 (4096) masks what holds it; max-discard 4096 makes [0, 8192) two discards
        String rules = "\"discard\":\"unmap\",\"inject-error\":[{\"event\":\"none\",\"sector\":8,\"errno\":0},"
                + "{\"event\":\"none\",\"iotype\":\"discard\",\"errno\":28}]";
        Edge whole = blkdebug(rules);
        assertThat(outcome(() -> whole.discard(0, 8192))).isNull();
        g.graph.detachRoot(whole);
        g.graph.delete("bd", n -> null);
        Edge split = blkdebug("\"max-discard\":4096," + rules);
        assertThat(outcome(() -> split.discard(0, 8192))).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> split.discard(4096, 4096))).isNull();
    }

    @Test
    void limitsAreValidatedWithQemusMessages() {
        String image = "\"image\":{\"driver\":\"file\",\"filename\":\"" + raw + "\"}";
        String direct = "\"image\":{\"driver\":\"file\",\"filename\":\"" + raw + "\",\"cache\":{\"direct\":true}}";
        assertThat(g.error(bd(image, "\"align\":3"))).isEqualTo("Cannot meet constraints with align 3");
        assertThat(g.error(bd(image, "\"align\":\"1000\""))).isEqualTo("Cannot meet constraints with align 1000");
        assertThat(g.error(bd(image, "\"align\":2147483648"))).isEqualTo("Cannot meet constraints with align 2147483648");
        assertThat(g.error(bd(image, "\"align\":-1")))
                .isEqualTo("Parameter 'align' expects a non-negative number below 2^64");
        assertThat(g.error(bd(image, "\"align\":4096,\"max-transfer\":6144")))
                .isEqualTo("Cannot meet constraints with max-transfer 6144");
        assertThat(g.error(bd(image, "\"max-transfer\":3000000000"))).isEqualTo("Parameter 'max-transfer' expects int32_t");
        assertThat(g.error(bd(image, "\"opt-write-zero\":1024,\"max-write-zero\":1536")))
                .isEqualTo("Cannot meet constraints with max-write-zero 1536");
        assertThat(g.error(bd(direct, "\"opt-discard\":100")))
                .as("checked against the image's alignment (512 with O_DIRECT)")
                .isEqualTo("Cannot meet constraints with opt-discard 100");
        assertThat(g.error(bd(image, "\"take-child-perms\":[\"bogus\"]")))
                .isEqualTo("Parameter 'null' does not accept value 'bogus'");
        assertThat(g.error(bd(image, "\"bogus\":1"))).isEqualTo("Parameter 'bogus' is unexpected");
        assertThat(g.error("{\"driver\":\"blkdebug\",\"node-name\":\"bd\"}")).isEqualTo("Parameter 'image' is missing");
        g.add(bd(image, "\"align\":\"1k\",\"max-transfer\":1073741824"));
        assertThat(g.graph.require("bd").limits().requestAlignment()).isEqualTo(1024);
        assertThat(g.graph.require("bd").limits().maxTransfer()).isEqualTo(1 << 30);
        // with the buffered file's alignment of 1, these need not be powers of two
        g.graph.delete("bd", n -> null);
        g.add(bd(image, "\"opt-write-zero\":100,\"max-discard\":100,\"max-transfer\":1000"));
    }

    @Test
    void aFilterTakesItsImagesAlignmentUnlessAlignSaysOtherwise() {
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"image\":{\"driver\":\"file\",\"filename\":\"" + raw
                + "\",\"cache\":{\"direct\":true}},\"max-transfer\":65536}");
        GraphNode bd = g.graph.require("bd");
        assertThat(bd.limits().requestAlignment()).isGreaterThan(1)
                .isEqualTo(bd.childNode("image").limits().requestAlignment());
        assertThat(bd.limits().maxTransfer()).isEqualTo(65536);
    }

    private static String bd(String image, String members) {
        return "{\"driver\":\"blkdebug\",\"node-name\":\"bd\"," + image + "," + members + "}";
    }

    @Test
    void rulesInTheOptionsAreCheckedAsQmpChecksThem() {
        String image = "\"image\":{\"driver\":\"file\",\"filename\":\"" + raw + "\"}";
        assertThat(g.error(bd(image, "\"inject-error\":[{\"event\":\"bogus\"}]")))
                .isEqualTo("Parameter 'event' does not accept value 'bogus'");
        assertThat(g.error(bd(image, "\"inject-error\":[{\"errno\":5}]")))
                .isEqualTo("Parameter 'inject-error[0].event' is missing");
        assertThat(g.error(bd(image, "\"inject-error\":[{\"event\":\"none\",\"iotype\":\"bogus\"}]")))
                .isEqualTo("Parameter 'iotype' does not accept value 'bogus'");
        assertThat(g.error(bd(image, "\"inject-error\":[{\"event\":\"none\",\"bogus\":1}]")))
                .isEqualTo("Parameter 'inject-error[0].bogus' is unexpected");
        assertThat(g.error(bd(image, "\"set-state\":[{\"event\":\"none\"}]")))
                .isEqualTo("Parameter 'set-state[0].new_state' is missing");
        assertThat(g.error(bd(image, "\"inject-error\":{\"event\":\"none\"}")))
                .isEqualTo("Invalid parameter type for 'inject-error', expected: array");
        // an event the node never sees is accepted, as QEMU accepts it
        g.add(bd(image, "\"inject-error\":[{\"event\":\"l2_update\",\"immediately\":true}]"));
    }

    @Test
    void configFilesAreReadAsQemuReadsThem() throws IOException {
        String image = "\"image\":{\"driver\":\"file\",\"filename\":\"" + raw + "\"}";
        assertThat(g.error(bd(image, "\"config\":\"" + dir.resolve("nope.conf") + "\"")))
                .isEqualTo("Could not read blkdebug config file: No such file or directory");
        assertThat(g.error(bd(image, "\"config\":\"" + dir + "\""))).isEqualTo("Cannot read config file: Is a directory");
        String[][] cases = {
            {"event = \"none\"\n", "no group defined"},
            {"[bogus]\nevent = \"none\"\n", "There is no option group 'bogus'"},
            {"[inject-error]\nevent = \"none\"\nfoo = \"1\"\n", "Invalid parameter 'foo'"},
            {"[inject-error]\nevent = \"none\"\nerrno = \"abc\"\n", "Parameter 'errno' expects a number"},
            {"[inject-error]\nevent = \"none\"\nonce = \"maybe\"\n", "Parameter 'once' expects 'on' or 'off'"},
            {"[inject-error]\nevent = none\n", "invalid parameter value: "},
            {"[inject-error]\nevent = \"bogus_event\"\n", "invalid parameter value: bogus_event"},
            {"[inject-error]\nerrno = \"5\"\n", "Missing event name for rule"},
            {"[inject-error]\nevent = \"none\"\niotype = \"bogus\"\n", "invalid parameter value: bogus"},
            {"[set-state]\nevent = \"none\"\n   \n", "parse error"},
            {"[inject-error \"a\"]\nevent = \"none\"\n[inject-error \"a\"]\nevent = \"none\"\n",
                "Duplicate ID 'a' for inject-error"},
        };
        for (String[] c : cases) {
            Path conf = config(c[0]);
            assertThat(g.error(bd(image, "\"config\":\"" + conf + "\""))).as(c[0]).isEqualTo(c[1]);
        }
    }

    @Test
    void configRulesComeBeforeOptionRulesAndNumbersAreQemus() throws IOException {
        // the file's errno 0x1c (28) rule is defined first, so it wins over the option's
        Path c = config("[inject-error]\nevent = \"none\"\nerrno = \"0x1c\"\nsector = \"-1\"\nonce = \"yes\"\n");
        Edge e = blkdebug("\"config\":\"" + c + "\",\"inject-error\":[{\"event\":\"none\",\"errno\":1}]");
        assertThat(outcome(() -> read(e, 0, 512))).isEqualTo(Errno.ENOSPC);
        assertThat(outcome(() -> read(e, 0, 512))).as("once: gone, the next rule decides").isEqualTo(Errno.EPERM);
    }

    @Test
    void aBlkdebugFilenameStandsForConfigAndAnImageProtocolNode() throws IOException {
        Path c = config("[inject-error]\nevent = \"none\"\niotype = \"write\"\nerrno = \"28\"\n");
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"filename\":\"blkdebug:" + c + ":" + raw + "\"}");
        GraphNode bd = g.graph.require("bd");
        assertThat(bd.childNode("image").driver()).isEqualTo("file");
        assertThat(bd.childNode("image").filename()).isEqualTo(raw.toString());
        Edge e = g.user("bd");
        assertThat(outcome(() -> read(e, 0, 512))).isNull();
        assertThat(outcome(() -> write(e, 0, 512))).isEqualTo(Errno.ENOSPC);
        // no config; a nested blkdebug; null-co
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"b2\",\"filename\":\"blkdebug::blkdebug::null-co://\"}");
        assertThat(g.graph.require("b2").childNode("image").driver()).isEqualTo("blkdebug");
        assertThat(g.graph.require("b2").childNode("image").childNode("image").driver()).isEqualTo("null-co");
        Path other = dir.resolve("other.raw");
        Files.write(other, new byte[4096]);
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"b3\",\"filename\":\"" + other + "\"}");
        assertThat(g.graph.require("b3").childNode("image").filename()).isEqualTo(other.toString());
        assertThat(g.error("{\"driver\":\"blkdebug\",\"node-name\":\"b4\",\"filename\":\"blkdebug:x.raw\"}"))
                .isEqualTo("blkdebug requires both config file and image path");
        assertThat(g.error("{\"driver\":\"blkdebug\",\"node-name\":\"b4\",\"filename\":\"blkdebug::nbd:x:1\"}"))
                .isEqualTo("Unknown protocol 'nbd'");
        assertThat(g.error("{\"driver\":\"blkdebug\",\"node-name\":\"b4\",\"filename\":\"blkdebug::" + raw
                + "\",\"image\":\"bd\"}")).isEqualTo("Can't specify 'image' and 'filename' options at the same time");
    }

    @Test
    void takeChildPermsAndUnshareChildPermsChangeWhatTheImageEdgeHolds() {
        g.add("{\"driver\":\"file\",\"node-name\":\"f\",\"filename\":\"" + raw + "\"}");
        g.add("{\"driver\":\"blkdebug\",\"node-name\":\"bd\",\"image\":\"f\",\"take-child-perms\":[\"resize\"],"
                + "\"unshare-child-perms\":[\"write\"]}");
        Edge image = g.graph.require("bd").child("image");
        assertThat(Perm.RESIZE.in(image.perm())).isTrue();
        assertThat(Perm.WRITE.in(image.shared())).isFalse();
        assertThatThrownBy(() -> g.graph.attachRoot(BlockGraph.RootUser.export("w"), "root", g.graph.require("f"),
                Perm.of(Perm.WRITE), Perm.ALL, false))
                .hasMessage("Permission conflict on node 'f': permissions 'write' are both required by an unnamed block "
                        + "device (uses node 'f' as 'root' child) and unshared by node 'bd' (uses node 'f' as 'image' child).");
    }
}
