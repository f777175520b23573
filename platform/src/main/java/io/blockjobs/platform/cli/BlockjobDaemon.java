package io.blockjobs.platform.cli;

import io.blockjobs.platform.nbd.NbdCommands;
import io.blockjobs.platform.qmp.Chardevs;
import io.blockjobs.platform.qmp.ObjectCommands;
import io.blockjobs.sdk.error.CommandException;
import java.io.BufferedReader;
import java.io.File;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.node.ObjectNode;

/**
 * {@code blockjobd}: the storage daemon, with {@code qemu-storage-daemon}'s command line.
 * Every option is checked before anything listens; a bad one exits with status 1 and a message
 * that names it.
 */
public final class BlockjobDaemon {
    private static final Logger LOG = LoggerFactory.getLogger(BlockjobDaemon.class);

    /** The locked pid file, held here for the daemon's life: its lock goes with its descriptor. */
    private static volatile PidFile pidFile;

    private BlockjobDaemon() {
    }

    /** One option as given. */
    private record Opt(String name, String value) {
        String shown() {
            return "--" + name + (value == null ? "" : " " + value);
        }
    }

    /** A bad option, named. */
    static final class OptionException extends Exception {
        private static final long serialVersionUID = 1L;

        OptionException(Opt opt, String message) {
            super(opt.shown() + ": " + message);
        }

        OptionException(String message) {
            super(message);
        }
    }

    /** Set in the process {@code --daemonize} starts: it tells its parent when it is ready. */
    private static final String DAEMONIZED_PROPERTY = "blockjobd.daemonized";
    private static final boolean DAEMONIZED = System.getProperty(DAEMONIZED_PROPERTY) != null;
    /** The line on which the daemonized process tells its parent it is ready; never shown. */
    private static final String READY_LINE = "\u0000blockjobd ready\u0000";

    private static final List<String> WITH_VALUE =
            List.of("blockdev", "object", "chardev", "monitor", "nbd-server", "export", "pidfile", "plugins",
                    "workflow-schedule", "backup-dir", "schedule-file");

    public static void main(String[] args) {
        List<Opt> opts;
        try {
            opts = parse(args);
        } catch (OptionException e) {
            System.err.println("blockjobd: " + e.getMessage());
            System.exit(1);
            return;
        }
        for (Opt o : opts) {
            if (o.name().equals("help")) {
                usage();
                return;
            }
            if (o.name().equals("version")) {
                System.out.println("blockjobd " + Version.get());
                return;
            }
        }
        if (!DAEMONIZED && opts.stream().anyMatch(o -> o.name().equals("daemonize"))) {
            System.exit(daemonize(args));
            return;
        }
        Path pidPath = null;
        for (Opt o : opts) {
            if (o.name().equals("pidfile")) {
                pidPath = Path.of(o.value()); // the last one counts, as in QEMU
            }
        }
        if (pidPath != null) {
            try {
                PidFile.checkNotHeld(pidPath); // before anything, so as not to touch a running daemon's sockets
            } catch (PidFile.PidFileException e) {
                System.err.println("blockjobd: cannot create PID file: " + e.getMessage());
                System.exit(1);
                return;
            }
        }
        Daemon daemon = new Daemon();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> daemon.shutdown("host-signal"), "blockjobd-exit"));
        // SIGTERM, SIGINT and SIGHUP ask for a clean stop, as in QEMU: the daemon then exits with 0.
        for (String signal : new String[] {"TERM", "INT", "HUP"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(signal),
                        s -> Thread.ofPlatform().start(() -> daemon.shutdown("host-signal")));
            } catch (IllegalArgumentException e) {
                LOG.debug("cannot handle SIG{}: {}", signal, e.getMessage());
            }
        }
        try {
            configure(daemon, opts);
            if (pidPath != null) {
                // Written once everything listens, as QEMU documents: then clients may connect.
                pidFile = PidFile.acquire(pidPath);
            }
        } catch (OptionException e) {
            System.err.println("blockjobd: " + e.getMessage());
            daemon.shutdown("host-error");
            Runtime.getRuntime().halt(1);
        } catch (PidFile.PidFileException e) {
            System.err.println("blockjobd: cannot create PID file: " + e.getMessage());
            daemon.shutdown("host-error");
            Runtime.getRuntime().halt(1);
        }
        LOG.info("blockjobd {} ready", Version.get());
        if (DAEMONIZED) {
            // As QEMU's os_setup_post: the parent may go, and the daemon's output goes nowhere from now on.
            System.err.println(READY_LINE);
            System.err.flush();
            PrintStream nowhere = new PrintStream(OutputStream.nullOutputStream());
            System.setErr(nowhere);
            System.setOut(nowhere);
        }
        try {
            daemon.awaitStop();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (pidFile != null) {
            try {
                pidFile.remove();
            } catch (IOException e) {
                LOG.warn("cannot remove {}: {}", pidFile.path(), e.getMessage());
            }
        }
        System.exit(0);
    }

    /**
     * {@code --daemonize}, as QEMU's: the daemon runs as a new process in a session of its own
     * (stdin and stdout /dev/null), and this one relays what it prints until it is ready (its pid
     * file written, everything listening), then exits 0 and leaves it running; if it fails first,
     * this exits 1 once it has shown its message. The JVM cannot fork, so the daemon is this same
     * command line again, less {@code --daemonize}.
     */
    private static int daemonize(String[] args) {
        ProcessHandle.Info self = ProcessHandle.current().info();
        String[] all = self.arguments().orElse(null);
        if (self.command().isEmpty() || all == null || all.length < args.length) {
            System.err.println("blockjobd: --daemonize: cannot tell this process's command line");
            return 1;
        }
        List<String> command = new ArrayList<>();
        if (Files.isExecutable(Path.of("/usr/bin/setsid"))) {
            command.add("/usr/bin/setsid"); // QEMU's setsid(): no terminal's signals reach the daemon
        }
        command.add(self.command().get());
        command.add("-D" + DAEMONIZED_PROPERTY + "=true");
        command.addAll(List.of(all).subList(0, all.length - args.length)); // the JVM's options and main class
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--daemonize") || a.equals("-daemonize")) {
                continue;
            }
            command.add(a);
            if (WITH_VALUE.contains(a.replaceFirst("^--?", "")) && i + 1 < args.length) {
                command.add(args[++i]); // a value, even one that reads "--daemonize"
            }
        }
        Process child;
        try {
            child = new ProcessBuilder(command).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        } catch (IOException e) {
            System.err.println("blockjobd: --daemonize: " + e.getMessage());
            return 1;
        }
        try (BufferedReader err = new BufferedReader(new InputStreamReader(child.getErrorStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = err.readLine()) != null) {
                if (line.equals(READY_LINE)) {
                    return 0;
                }
                System.err.println(line);
            }
            child.waitFor();
        } catch (IOException e) {
            System.err.println("blockjobd: --daemonize: " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return 1;
    }

    static List<Opt> parse(String[] args) throws OptionException {
        List<Opt> opts = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                opts.add(new Opt("help", null));
                continue;
            }
            if (a.equals("-V") || a.equals("--version")) {
                opts.add(new Opt("version", null));
                continue;
            }
            if (a.equals("--daemonize") || a.equals("-daemonize")) {
                opts.add(new Opt("daemonize", null));
                continue;
            }
            if (!a.startsWith("--") && !a.startsWith("-")) {
                throw new OptionException("unexpected argument '" + a + "' (try --help)");
            }
            String body = a.replaceFirst("^--?", "");
            String name = body;
            String value = null;
            int eq = body.indexOf('=');
            if (eq > 0 && WITH_VALUE.contains(body.substring(0, eq))) {
                name = body.substring(0, eq);
                value = body.substring(eq + 1);
            }
            if (!WITH_VALUE.contains(name)) {
                throw new OptionException("unknown option '" + a + "' (try --help)");
            }
            if (value == null) {
                if (i + 1 >= args.length) {
                    throw new OptionException("option '--" + name + "' needs a value");
                }
                value = args[++i];
            }
            opts.add(new Opt(name, value));
        }
        return opts;
    }

    /** Applies the options in order; monitors listen last, once everything else is in place. */
    private static void configure(Daemon daemon, List<Opt> opts) throws OptionException {
        String home = System.getProperty("blockjobs.home");
        if (home != null && Files.isDirectory(Path.of(home, "plugins"))) {
            try {
                daemon.loadPlugins(Path.of(home, "plugins")); // the distribution's own plugins
            } catch (Exception e) {
                throw new OptionException("cannot load the plugins in " + home + "/plugins: " + e.getMessage());
            }
        }
        Map<String, ObjectNode> chardevs = new HashMap<>();
        Map<String, Opt> chardevOpts = new HashMap<>();
        boolean stdioSeen = false;
        List<Opt> monitors = new ArrayList<>();
        for (Opt o : opts) {
            try {
                switch (o.name()) {
                    case "blockdev" -> daemon.graph.add(KeyValue.parse(o.value(), "driver")); // QEMU's implied key
                    case "object" -> ObjectCommands.add(daemon.graph, KeyValue.parse(o.value(), "qom-type"),
                            !o.value().strip().startsWith("{"));
                    case "chardev" -> {
                        ObjectNode c = KeyValue.parse(o.value(), "backend");
                        String id = text(c, "id", o);
                        switch (text(c, "backend", o)) {
                            case "socket" -> {
                                if (!c.has("path") && !(c.has("host") && c.has("port"))) {
                                    throw new OptionException(o, "give path=SOCKET or host=ADDRESS,port=PORT");
                                }
                                for (String flag : new String[] {"server", "wait"}) {
                                    if (c.has(flag) && !isOn(c.get(flag).asString()) && !isOff(c.get(flag).asString())) {
                                        throw new OptionException(o, "Parameter '" + flag + "' expects 'on' or 'off'");
                                    }
                                }
                                if (c.has("reconnect") && !c.get("reconnect").asString().matches("\\d{1,9}")) {
                                    throw new OptionException(o, "Parameter 'reconnect' expects a non-negative number below 2^64");
                                }
                            }
                            case "stdio" -> {
                                if (DAEMONIZED) {
                                    throw new OptionException(o, "cannot use stdio with -daemonize");
                                }
                                if (stdioSeen) {
                                    throw new OptionException(o, "cannot use stdio by multiple character devices");
                                }
                                stdioSeen = true;
                            }
                            case "ringbuf", "memory" -> {
                                if (c.has("size") && !c.get("size").asString().matches("\\d{1,18}")) {
                                    throw new OptionException(o, "Parameter 'size' expects a non-negative number below 2^64");
                                }
                            }
                            default -> throw new OptionException(o,
                                    "only 'socket', 'stdio' and 'ringbuf' character devices are supported");
                        }
                        if (chardevs.put(id, c) != null) {
                            throw new OptionException(o, "duplicate chardev id '" + id + "'");
                        }
                        chardevOpts.put(id, o);
                    }
                    case "monitor" -> {
                        ObjectNode m = KeyValue.parse(o.value(), "chardev");
                        for (String key : m.propertyNames()) {
                            if (!List.of("chardev", "id", "mode", "pretty").contains(key)) {
                                throw new OptionException(o, "Parameter '" + key + "' is unexpected");
                            }
                        }
                        String mode = m.has("mode") ? m.get("mode").asString() : "control";
                        if (!mode.equals("control")) {
                            throw new OptionException(o, mode.equals("readline") ? "Only QMP is supported"
                                    : "Parameter 'mode' does not accept value '" + mode + "'");
                        }
                        if (m.has("pretty") && !List.of("on", "off").contains(m.get("pretty").asString())) {
                            throw new OptionException(o, "Parameter 'pretty' expects 'on' or 'off'");
                        }
                        String chardev = text(m, "chardev", o);
                        if (!chardevs.containsKey(chardev)) {
                            throw new OptionException(o, "chardev \"" + chardev + "\" not found");
                        }
                        if (!List.of("socket", "stdio").contains(chardevs.get(chardev).get("backend").asString())) {
                            throw new OptionException(o, "a monitor needs a socket or stdio chardev in blockjobd");
                        }
                        monitors.add(o);
                    }
                    case "nbd-server" -> {
                        ObjectNode n = KeyValue.parse(o.value(), null);
                        if (!n.has("addr")) {
                            throw new OptionException(o, "addr.type=unix,addr.path=PATH or addr.type=inet,addr.host=...,addr.port=... is required");
                        }
                        int max = n.has("max-connections") ? Integer.parseInt(n.get("max-connections").asString()) : 0;
                        n.remove("max-connections");
                        JsonNode addr = n.remove("addr");
                        if (!n.isEmpty()) {
                            throw new OptionException(o, "unsupported member '" + n.propertyNames().iterator().next() + "'");
                        }
                        daemon.nbd.start(NbdCommands.address(addr), max);
                    }
                    case "export" -> {
                        ObjectNode e = KeyValue.parse(o.value(), "type");
                        JsonNode reply = daemon.dispatcher.executeKeyval("block-export-add", e).join();
                        if (reply.has("error")) {
                            throw new OptionException(o, reply.get("error").get("desc").asString());
                        }
                    }
                    case "workflow-schedule" -> {
                        ObjectNode w = KeyValue.parse(o.value(), null);
                        JsonNode reply = daemon.dispatcher.executeKeyval("workflow-schedule", w).join();
                        if (reply.has("error")) {
                            throw new OptionException(o, reply.get("error").get("desc").asString());
                        }
                    }
                    case "pidfile", "daemonize" -> {
                        // the pid file is locked and written by main() once the daemon is ready
                    }
                    case "backup-dir" -> daemon.backupStore.open(Path.of(o.value()));
                    case "schedule-file" -> daemon.schedules.keepIn(Path.of(o.value()));
                    case "plugins" -> {
                        if (!Files.isDirectory(Path.of(o.value()))) {
                            throw new OptionException(o, "not a directory");
                        }
                        daemon.loadPlugins(Path.of(o.value()));
                    }
                    default -> throw new OptionException(o, "unknown option");
                }
            } catch (CommandException | IllegalArgumentException e) {
                throw new OptionException(o, e.getMessage());
            } catch (IOException e) {
                throw new OptionException(o, e.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new OptionException(o, "interrupted");
            }
        }
        Set<String> monitored = new HashSet<>();
        for (Opt o : monitors) {
            monitored.add(KeyValue.parse(o.value(), "chardev").get("chardev").asString());
        }
        Map<String, Chardevs.Chardev> registered = new HashMap<>();
        for (Opt o : opts) { // in the command line's order, for query-chardev
            if (o.name().equals("chardev")) {
                ObjectNode c = KeyValue.parse(o.value(), "backend");
                String id = c.get("id").asString();
                String backend = c.get("backend").asString();
                if (backend.equals("ringbuf") || backend.equals("memory")) {
                    try {
                        daemon.chardevs.addRingbuf(id, backend,
                                c.has("size") ? Long.parseLong(c.get("size").asString()) : Chardevs.DEFAULT_RING);
                    } catch (IllegalArgumentException e) {
                        throw new OptionException(o, e.getMessage());
                    }
                    continue;
                }
                registered.put(id, daemon.chardevs.add(id, c.has("path") ? c.get("path").asString() : null,
                        c.has("host") ? c.get("host").asString() : null, c.has("port") ? c.get("port").asString() : null,
                        c.has("server") && isOn(c.get("server").asString()), monitored.contains(id)));
            }
        }
        for (Opt o : monitors) {
            ObjectNode m = KeyValue.parse(o.value(), "chardev");
            ObjectNode c = chardevs.get(m.get("chardev").asString());
            Opt chardevOpt = chardevOpts.get(m.get("chardev").asString());
            boolean pretty = m.has("pretty") && m.get("pretty").asString().equals("on");
            String where = c.has("path") ? c.get("path").asString()
                    : c.has("host") ? c.get("host").asString() + ":" + c.get("port").asString() : "stdio";
            String name = (m.has("id") ? m.get("id").asString() : c.get("id").asString()) + " (" + where + ")";
            daemon.qmp.watch(name, registered.get(m.get("chardev").asString())::connected);
            try {
                if (c.get("backend").asString().equals("stdio")) {
                    // QMP on the process's own stdin and stdout: nothing else is ever printed there
                    daemon.qmp.serveStreams(new FileInputStream(FileDescriptor.in), new FileOutputStream(FileDescriptor.out),
                            name, pretty);
                } else if (!(c.has("server") && isOn(c.get("server").asString()))) {
                    // QEMU's client mode: the monitor's client listens, the daemon connects to it
                    SocketAddress address = c.has("path") ? UnixDomainSocketAddress.of(c.get("path").asString())
                            : new InetSocketAddress(c.get("host").asString(), Integer.parseInt(c.get("port").asString()));
                    long reconnect = c.has("reconnect") ? Long.parseLong(c.get("reconnect").asString()) : 0;
                    try {
                        daemon.qmp.connect(address, where, name, pretty, reconnect);
                    } catch (IOException e) {
                        throw new OptionException(chardevOpt, e.getMessage()); // QEMU names the chardev
                    }
                } else if (c.has("path")) {
                    daemon.qmp.listenUnix(Path.of(c.get("path").asString()), name, pretty);
                } else {
                    String host = c.get("host").asString();
                    InetAddress address = InetAddress.getByName(host);
                    if (!address.isLoopbackAddress()) {
                        LOG.warn("QMP listens on {}, which is not a loopback address", host);
                    }
                    daemon.qmp.listenTcp(host, Integer.parseInt(c.get("port").asString()), name, pretty);
                }
            } catch (IOException | RuntimeException e) {
                throw new OptionException(o, "cannot listen: " + e.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new OptionException(o, "interrupted");
            }
        }
    }

    private static boolean isOff(String v) {
        return v.equals("off") || v.equals("no") || v.equals("false") || v.equals("n");
    }

    private static boolean isOn(String v) {
        return v.equals("on") || v.equals("yes") || v.equals("true") || v.equals("y");
    }

    private static String text(ObjectNode n, String key, Opt o) throws OptionException {
        JsonNode v = n.get(key);
        if (v == null || !v.isString()) {
            throw new OptionException(o, "'" + key + "' is required");
        }
        return v.asString();
    }

    private static void usage() {
        System.out.println("""
                Usage: blockjobd [options]
                The blockjobs storage daemon: live block jobs on qcow2 and raw images, driven over QMP,
                disks served over NBD. Options follow qemu-storage-daemon's; each may be repeated and
                takes QEMU's key=value syntax or a JSON object.

                  --blockdev OPTIONS     add a block node, e.g. driver=file,node-name=f0,filename=disk.qcow2
                                         (or file,node-name=f0,...: driver is the implied key)
                  --object throttle-group,id=ID,limits.bps-total=N[,limits.iops-write=N...]
                                         a throttle group for throttle nodes (QEMU's ThrottleLimits)
                  --chardev socket,id=ID,path=PATH,server=on,wait=off
                  --chardev socket,id=ID,host=127.0.0.1,port=PORT,server=on,wait=off
                                         a socket for a monitor to listen on (unix sockets mode 0600)
                  --chardev socket,id=ID,path=PATH[,reconnect=SECONDS]
                  --chardev socket,id=ID,host=HOST,port=PORT[,reconnect=SECONDS]
                                         without server=on: connect to a client that listens there
                  --chardev stdio,id=ID  QMP on standard input and output
                  --monitor [chardev=]ID[,mode=control][,pretty=on|off]
                                         a QMP monitor on that chardev (pretty=on: QEMU's layout)
                  --daemonize            run in the background; return once ready (pid file written)
                  --nbd-server addr.type=unix,addr.path=PATH | addr.type=inet,addr.host=H,addr.port=P
                               [,addr.to=PORT][,addr.ipv4=on|off][,addr.ipv6=on|off][,addr.numeric=on]
                               [,max-connections=N]
                  --export type=nbd,id=ID,node-name=NODE[,name=NAME][,writable=on]
                  --workflow-schedule name=NAME,script=SCRIPT,schedule=CRON[,args.KEY=VALUE...]
                                         run a workflow unattended, e.g. schedule=0 2 * * *
                  --pidfile PATH         write the daemon's pid there once it is ready (mode 0600, locked
                                         while it runs: a second daemon with the same file refuses
                                         to start; removed when it stops cleanly)
                  --plugins DIR          load job plugins from DIR
                  --backup-dir DIR       the backup store that backup policies write into (x-backup-store-*)
                  --schedule-file FILE   keep workflow schedules (and their last results) in FILE across restarts
                  --help, -h             print this help
                  --version, -V          print the version

                Logs go to stderr at WARN and above; BLOCKJOBS_LOG_LEVEL=INFO (or DEBUG) for more.
                """);
    }
}
