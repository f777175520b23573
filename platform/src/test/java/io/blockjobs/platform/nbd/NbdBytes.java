package io.blockjobs.platform.nbd;

import static org.assertj.core.api.Assertions.assertThat;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

/** Bytes for the NBD codec tests, written out by hand (not by the codecs under test). */
final class NbdBytes {
    private NbdBytes() {
    }

    /** Bytes from hex digits; spaces and '|' separate fields for the reader. */
    static byte[] hex(String s) {
        return HexFormat.of().parseHex(s.replaceAll("[\\s|]", ""));
    }

    static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }

    static byte[] ascii(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    static byte[] u16(int v) {
        return new byte[] {(byte) (v >>> 8), (byte) v};
    }

    static byte[] u32(long v) {
        return new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) v};
    }

    static byte[] u64(long v) {
        return concat(u32(v >>> 32), u32(v));
    }

    /** A transmission request as on the wire. */
    static byte[] request(int flags, int type, long cookie, long offset, long length, byte[] data) {
        return concat(hex("25609513"), u16(flags), u16(type), u64(cookie), u64(offset), u32(length), data);
    }

    static byte[] request(int flags, int type, long cookie, long offset, long length) {
        return request(flags, type, cookie, offset, length, new byte[0]);
    }

    /** An option request as on the wire. */
    static byte[] option(int option, byte[] data) {
        return concat(hex("49484156454f5054"), u32(option), u32(data.length), data);
    }

    /** An option reply as on the wire. */
    static byte[] optionReply(int option, int type, byte[] data) {
        return concat(hex("0003e889045565a9"), u32(option), u32(type), u32(data.length), data);
    }

    /** A length-prefixed string, as in option data. */
    static byte[] string(String s) {
        byte[] b = ascii(s);
        return concat(u32(b.length), b);
    }

    /** A structured reply chunk as on the wire. */
    static byte[] chunk(int flags, int type, long cookie, byte[] payload) {
        return concat(hex("668e33ef"), u16(flags), u16(type), u64(cookie), u32(payload.length), payload);
    }

    /** A simple reply as on the wire. */
    static byte[] simple(int error, long cookie, byte[] data) {
        return concat(hex("67446698"), u32(error), u64(cookie), data);
    }

    /** A fresh reference-counted buffer holding {@code b}. */
    static ByteBuf buf(byte[] b) {
        return Unpooled.buffer(b.length).writeBytes(b);
    }

    /**
     * Everything the channel wrote, in order; each buffer is released here, and must then be
     * fully released (no one else holds it).
     */
    static byte[] outbound(EmbeddedChannel ch) {
        ch.runPendingTasks();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteBuf b;
        while ((b = ch.readOutbound()) != null) {
            out.writeBytes(ByteBufUtil.getBytes(b));
            b.release();
            if (b != Unpooled.EMPTY_BUFFER) { // written before a close, to flush what is before it
                assertThat(b.refCnt()).as("an outbound buffer is held elsewhere").isZero();
            }
        }
        return out.toByteArray();
    }

    /** Every message the channel passed inbound, in order. */
    static <T> List<T> inbound(EmbeddedChannel ch) {
        List<T> out = new ArrayList<>();
        T m;
        while ((m = ch.readInbound()) != null) {
            out.add(m);
        }
        return out;
    }
}
