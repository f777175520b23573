package io.blockjobs.platform.qmp;

import io.blockjobs.sdk.error.CommandException;
import io.netty.channel.Channel;
import tools.jackson.databind.JsonNode;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;

/**
 * The daemon's character devices (its {@code --chardev} options) as QEMU 7.2's
 * {@code query-chardev}, {@code query-chardev-backends}, {@code chardev-add},
 * {@code chardev-change}, {@code chardev-remove} and {@code chardev-send-break} show and change
 * them, with QEMU's messages.
 *
 * <p>QEMU's socket chardev carries one connection at a time; a blockjobd monitor socket serves
 * many, and {@code query-chardev} names the newest one still open.
 */
public final class Chardevs {
    /** The backends blockjobd has: QEMU 7.2 lists every one it was built with; these are the ones it can open. */
    static final List<String> BACKENDS = List.of("socket", "stdio", "ringbuf", "memory");

    /** QEMU 7.2's {@code ChardevBackendKind}: a name outside it is a wrong value, inside it one blockjobd lacks. */
    private static final List<String> QEMU_KINDS = List.of("file", "serial", "parallel", "pipe", "socket", "udp", "pty",
            "null", "mux", "msmouse", "wctablet", "braille", "testdev", "stdio", "console", "spicevmc", "spiceport",
            "qemu-vdagent", "dbus", "vc", "ringbuf", "memory");

    /** QEMU's default ring size; blockjobd also bounds it, where QEMU allocates whatever is asked. */
    public static final long DEFAULT_RING = 65536;
    static final long MAX_RING = 64L << 20;

    private final Map<String, Chardev> byLabel = new ConcurrentHashMap<>();
    private final List<String> order = new java.util.concurrent.CopyOnWriteArrayList<>();

    /** QMP's {@code ChardevInfo}. */
    public record ChardevInfo(String label, String filename, boolean frontendOpen) {
    }

    /** QMP's {@code ChardevBackendInfo}. */
    public record ChardevBackendInfo(String name) {
    }

    /** {@code chardev-remove}'s and {@code chardev-send-break}'s arguments. */
    public record IdArgs(String id) {
    }

    /** QMP's {@code DataFormat}. */
    public enum DataFormat { UTF8, BASE64 }

    /** {@code ringbuf-write}'s arguments. */
    public record RingbufWriteArgs(String device, String data, Optional<DataFormat> format) {
    }

    /** {@code ringbuf-read}'s arguments. */
    public record RingbufReadArgs(String device, long size, Optional<DataFormat> format) {
    }

    /** {@code chardev-add}'s and {@code chardev-change}'s arguments: QMP's {@code ChardevBackend} is {@code {type, data}}. */
    public record ChardevAddArgs(String id, JsonNode backend) {
    }

    /**
     * One character device. {@code address} is QEMU's {@code unix:PATH} or {@code tcp:HOST:PORT}
     * (null for stdio); {@code monitor} says whether a monitor uses it (QEMU's open front end).
     */
    public static final class Chardev {
        private final String label;
        private final String address;
        private final boolean server;
        private final boolean monitor;
        private final Deque<Channel> open = new ConcurrentLinkedDeque<>();
        private final String ringKind; // "ringbuf" or "memory" (QEMU's alias), null for others
        private final byte[] ring;
        private long produced; // QEMU's prod and cons: bytes ever written, and ever consumed
        private long consumed;

        Chardev(String label, String address, boolean server, boolean monitor) {
            this(label, address, server, monitor, null, 0);
        }

        private Chardev(String label, String address, boolean server, boolean monitor, String ringKind, long ringSize) {
            this.label = label;
            this.address = address;
            this.server = server;
            this.monitor = monitor;
            this.ringKind = ringKind;
            this.ring = ringKind == null ? null : new byte[(int) ringSize];
        }

        /** QEMU's {@code ringbuf_chr_write}: a full ring drops its oldest bytes. */
        synchronized void write(byte[] data) {
            for (byte b : data) {
                if (ring.length > 0) {
                    ring[(int) (produced & (ring.length - 1))] = b;
                }
                produced++;
                if (produced - consumed > ring.length) {
                    consumed = produced - ring.length;
                }
            }
        }

        /** QEMU's {@code ringbuf_chr_read}: up to {@code max} of the oldest bytes, consumed. */
        synchronized byte[] read(long max) {
            int n = (int) Math.min(max, produced - consumed);
            byte[] out = new byte[n];
            for (int i = 0; i < n; i++) {
                out[i] = ring[(int) (consumed++ & (ring.length - 1))];
            }
            return out;
        }

        /** Called for each connection the chardev's monitor gets; forgotten when it closes. */
        public void connected(Channel ch) {
            open.addLast(ch);
            ch.closeFuture().addListener(f -> open.remove(ch));
        }

        /** QEMU's {@code qemu_chr_compute_filename} (connected) or {@code disconnected:} form. */
        String filename() {
            if (ringKind != null) {
                return ringKind;
            }
            if (address == null) {
                return "stdio";
            }
            String listen = server ? ",server=on" : "";
            Channel ch = open.peekLast();
            if (ch == null || !ch.isActive()) {
                return "disconnected:" + address + listen;
            }
            if (ch.localAddress() instanceof InetSocketAddress local && ch.remoteAddress() instanceof InetSocketAddress peer) {
                return "tcp:" + hostPort(local) + listen + " <-> " + hostPort(peer);
            }
            // QEMU prints the connection's own socket path: the listening path, empty for a client
            return server ? address + listen : "unix:";
        }

        private static String hostPort(InetSocketAddress a) {
            String host = a.getAddress().getHostAddress();
            return (host.contains(":") ? "[" + host + "]" : host) + ":" + a.getPort();
        }
    }

    /**
     * Adds a chardev. {@code path} or {@code host}/{@code port} name a socket, neither is stdio.
     *
     * @return the chardev, for its monitor's connections to be reported to
     */
    public Chardev add(String label, String path, String host, String port, boolean server, boolean monitor) {
        String address = path != null ? "unix:" + path : host != null ? "tcp:" + host + ":" + port : null;
        Chardev c = new Chardev(label, address, server, monitor);
        if (byLabel.putIfAbsent(label, c) != null) {
            throw new IllegalArgumentException("duplicate chardev id '" + label + "'");
        }
        order.add(label);
        return c;
    }

    /**
     * Adds a ring buffer of {@code size} bytes ({@code kind} {@code ringbuf} or its alias
     * {@code memory}), with QEMU's check.
     */
    public void addRingbuf(String label, String kind, long size) {
        if ((size & (size - 1)) != 0 || size < 0) {
            throw new IllegalArgumentException("size of ringbuf chardev must be power of two");
        }
        if (size > MAX_RING) {
            throw new IllegalArgumentException("size of ringbuf chardev must be at most " + MAX_RING + " in blockjobd");
        }
        if (byLabel.putIfAbsent(label, new Chardev(label, null, false, false, kind, size)) != null) {
            throw new IllegalArgumentException("Chardev with id '" + label + "' already exists");
        }
        order.add(label);
    }

    public static void register(QmpDispatcher d, Chardevs chardevs) {
        d.register(QmpCommand.of("query-chardev", Void.class, QmpTypes.listOf(ChardevInfo.class), a -> {
            List<ChardevInfo> infos = new ArrayList<>();
            for (String label : chardevs.order) {
                Chardev c = chardevs.byLabel.get(label);
                infos.add(new ChardevInfo(c.label, c.filename(), c.monitor));
            }
            return infos;
        }));
        d.register(QmpCommand.of("query-chardev-backends", Void.class, QmpTypes.listOf(ChardevBackendInfo.class),
                a -> BACKENDS.stream().map(ChardevBackendInfo::new).toList()));
        d.register(QmpCommand.of("chardev-remove", IdArgs.class, null, a -> {
            Chardev c = chardevs.find(a.id());
            if (c.monitor) {
                throw new CommandException("Chardev '" + a.id() + "' is busy"); // a monitor is its front end
            }
            chardevs.byLabel.remove(a.id());
            chardevs.order.remove(a.id());
            return null;
        }));
        d.register(QmpCommand.of("chardev-add", ChardevAddArgs.class, null, a -> {
            chardevs.addFromQmp(a.id(), a.backend());
            return null; // QEMU's ChardevReturn, empty but for a pty
        }));
        d.register(QmpCommand.of("chardev-change", ChardevAddArgs.class, null, a -> {
            chardevs.change(a.id(), a.backend());
            return null; // QEMU's ChardevReturn, empty but for a pty
        }));
        d.register(QmpCommand.of("ringbuf-write", RingbufWriteArgs.class, null, a -> {
            Chardev c = chardevs.ring(a.device());
            byte[] data = a.format().orElse(DataFormat.UTF8) == DataFormat.BASE64
                    ? SecretCrypto.base64(a.data().getBytes(StandardCharsets.US_ASCII))
                    : a.data().getBytes(StandardCharsets.UTF_8);
            c.write(data);
            return null;
        }));
        d.register(QmpCommand.of("ringbuf-read", RingbufReadArgs.class, String.class, a -> {
            Chardev c = chardevs.ring(a.device());
            if (a.size() <= 0) {
                throw new CommandException("size must be greater than zero");
            }
            byte[] data = c.read(a.size());
            if (a.format().orElse(DataFormat.UTF8) == DataFormat.BASE64) {
                return Base64.getEncoder().encodeToString(data);
            }
            int end = 0; // QEMU hands the bytes on as a C string: they end at the first NUL
            while (end < data.length && data[end] != 0) {
                end++;
            }
            return new String(data, 0, end, StandardCharsets.UTF_8); // invalid sequences become U+FFFD
        }));
        d.register(QmpCommand.of("chardev-send-break", IdArgs.class, null, a -> {
            chardevs.find(a.id()); // a break means nothing on a socket or stdio, as in QEMU without telnet
            return null;
        }));
    }

    /** A {@code ChardevBackend} as QMP gave it: its kind, and a ring buffer's size. */
    private record Backend(String kind, long size) {
        boolean ring() {
            return kind.equals("ringbuf") || kind.equals("memory");
        }
    }

    /**
     * Checks a {@code ChardevBackend} as QEMU's QAPI visitor does before {@code chardev-add} or
     * {@code chardev-change} runs, in its words; only a ring buffer's members are known here.
     */
    private static Backend parse(String id, JsonNode backend) {
        if (backend == null || !backend.isObject()) {
            throw new CommandException("Invalid parameter type for 'backend', expected: object");
        }
        JsonNode type = backend.get("type");
        if (type == null) {
            throw new CommandException("Parameter 'backend.type' is missing");
        }
        if (!type.isString() || !QEMU_KINDS.contains(type.asString())) {
            throw new CommandException("Parameter 'type' does not accept value '" + type.asString() + "'"); // QEMU's words
        }
        JsonNode data = backend.get("data");
        if (data == null) {
            throw new CommandException("Parameter 'backend.data' is missing");
        }
        Backend parsed = new Backend(type.asString(), DEFAULT_RING);
        if (!parsed.ring()) {
            return parsed;
        }
        long size = DEFAULT_RING;
        for (var member : data.properties()) {
            switch (member.getKey()) {
                case "size" -> {
                    if (!member.getValue().isIntegralNumber()) {
                        throw new CommandException("Invalid parameter type for 'backend.data.size', expected: integer");
                    }
                    size = member.getValue().asLong();
                }
                case "logfile", "logappend" -> throw new CommandException("Failed to add chardev '" + id
                        + "': blockjobd's ring buffers keep no log file");
                default -> throw new CommandException("Parameter 'backend.data." + member.getKey() + "' is unexpected");
            }
        }
        return new Backend(parsed.kind(), size);
    }

    /** blockjobd opens sockets and stdio from its command line only. */
    private static void refuseUnsupported(String id, Backend b) {
        if (!b.ring()) {
            throw new CommandException("Failed to add chardev '" + id + "': blockjobd adds only ringbuf and memory"
                    + " chardevs over QMP; give socket and stdio ones on the command line (--chardev)");
        }
    }

    private void addRing(String id, Backend b) {
        try {
            addRingbuf(id, b.kind(), b.size());
        } catch (IllegalArgumentException e) {
            throw new CommandException("Failed to add chardev '" + id + "': " + e.getMessage());
        }
    }

    private void addFromQmp(String id, JsonNode backend) {
        Backend b = parse(id, backend);
        refuseUnsupported(id, b);
        if (byLabel.containsKey(id)) {
            throw new CommandException("Chardev with id '" + id + "' already exists");
        }
        addRing(id, b);
    }

    /**
     * QEMU 7.2's {@code qmp_chardev_change}: a chardev a front end uses (here, a monitor) cannot
     * be swapped, as the monitor has no {@code chr_be_change}; one nobody uses is dropped and the
     * new one added in its place. As in 7.2, a new backend that fails to open leaves neither.
     */
    private void change(String id, JsonNode backend) {
        Backend b = parse(id, backend);
        Chardev c = byLabel.get(id);
        if (c == null) {
            throw new CommandException("Chardev '" + id + "' does not exist");
        }
        if (c.monitor) {
            throw new CommandException("Chardev user does not support chardev hotswap");
        }
        refuseUnsupported(id, b); // before the old one goes: QEMU would have opened this one
        byLabel.remove(id);
        order.remove(id);
        addRing(id, b);
    }

    private Chardev ring(String device) {
        Chardev c = byLabel.get(device);
        if (c == null) {
            throw new CommandException("Device '" + device + "' not found");
        }
        if (c.ring == null) {
            throw new CommandException(device + " is not a ringbuf device");
        }
        return c;
    }

    private Chardev find(String id) {
        Chardev c = byLabel.get(id);
        if (c == null) {
            throw new CommandException("Chardev '" + id + "' not found");
        }
        return c;
    }
}
