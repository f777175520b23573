package io.blockjobs.platform.cli;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import java.io.PrintStream;
import java.util.List;
import java.util.Locale;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What the client needs of a terminal: whether stdout is one, a block of lines redrawn in place
 * (ANSI cursor movement) with ordinary lines printed above it, and the formats of sizes, rates
 * and durations.
 */
final class Terminal {
    private static final Logger LOG = LoggerFactory.getLogger(Terminal.class);
    private static final String CSI = "\033[";

    private Terminal() {
    }

    /** True if stdout is a terminal that understands cursor movement. */
    static boolean stdoutIsTerminal() {
        return !"dumb".equals(System.getenv("TERM")) && LibC.terminal(1);
    }

    /** {@code isatty(3)} through JNA; without it, whether the JVM has a console. */
    private static final class LibC {
        private static final boolean AVAILABLE = register();

        private static boolean register() {
            try {
                Native.register(LibC.class, Platform.C_LIBRARY_NAME);
                return true;
            } catch (Throwable t) {
                LOG.debug("isatty unavailable: {}", t.toString());
                return false;
            }
        }

        private static native int isatty(int fd);

        private static native int ioctl(int fd, long request, short[] winsize);

        private static final long TIOCGWINSZ = 0x5413; // Linux

        static boolean terminal(int fd) {
            return AVAILABLE ? isatty(fd) == 1 : System.console() != null;
        }

        /** {rows, columns} of the terminal on {@code fd}, or zeros if unknown. */
        static int[] size(int fd) {
            if (AVAILABLE && Platform.isLinux()) {
                short[] ws = new short[4];
                try {
                    if (ioctl(fd, TIOCGWINSZ, ws) == 0) {
                        return new int[] {Short.toUnsignedInt(ws[0]), Short.toUnsignedInt(ws[1])};
                    }
                } catch (Throwable t) { // UnsatisfiedLinkError and the like: fall back
                    LOG.debug("TIOCGWINSZ unavailable: {}", t.toString());
                }
            }
            return new int[] {0, 0};
        }
    }

    /** Columns of stdout's terminal: its size, else $COLUMNS, else 80. */
    static int columns() {
        int c = LibC.size(1)[1];
        return c > 0 ? c : envInt("COLUMNS", 80);
    }

    /** Rows of stdout's terminal: its size, else $LINES, else 24. */
    static int rows() {
        int r = LibC.size(1)[0];
        return r > 0 ? r : envInt("LINES", 24);
    }

    private static int envInt(String name, int otherwise) {
        try {
            int v = Integer.parseInt(System.getenv().getOrDefault(name, ""));
            return v > 0 ? v : otherwise;
        } catch (NumberFormatException e) {
            return otherwise;
        }
    }

    /**
     * The last lines of the output, redrawn in place: {@link #show} replaces them,
     * {@link #printAbove} prints a line above them (they are drawn again by the next show).
     */
    static final class LiveBlock {
        private final PrintStream out;
        private List<String> shown = List.of();

        LiveBlock(PrintStream out) {
            this.out = out;
        }

        /**
         * Replaces the block with {@code lines}, each cut to the terminal's width and the block to
         * its height: a line that wrapped, or a block taller than the screen, would break the
         * cursor arithmetic of the next redraw.
         */
        synchronized void show(List<String> lines) {
            int width = Math.max(10, columns() - 1);
            int height = Math.max(2, rows() - 1);
            List<String> fitted = new java.util.ArrayList<>();
            for (String line : lines) {
                fitted.add(fit(line, width));
            }
            if (fitted.size() > height) {
                int hidden = fitted.size() - (height - 1);
                fitted = new java.util.ArrayList<>(fitted.subList(0, height - 1));
                fitted.add(fit("... and " + hidden + " more lines (a taller terminal shows them)", width));
            }
            StringBuilder b = new StringBuilder();
            up(b);
            for (String line : fitted) {
                b.append(line).append(CSI).append('K').append('\n');
            }
            b.append(CSI).append('J'); // anything left below from a taller block
            out.print(b);
            out.flush();
            shown = List.copyOf(fitted);
        }

        synchronized void printAbove(String line) {
            StringBuilder b = new StringBuilder();
            up(b);
            b.append(CSI).append('J').append(line).append('\n');
            out.print(b);
            out.flush();
            shown = List.of();
        }

        /** Back to the first column of the block's first line. */
        private void up(StringBuilder b) {
            b.append('\r');
            if (!shown.isEmpty()) {
                b.append(CSI).append(shown.size()).append('A');
            }
        }
    }

    /** {@code [#######-------------]}: {@code fraction} of {@code width} cells filled. */
    static String bar(double fraction, int width) {
        int filled = (int) Math.round(Math.max(0, Math.min(1, fraction)) * width);
        return "[" + "#".repeat(filled) + "-".repeat(width - filled) + "]";
    }

    /** Bytes in binary units: {@code 512 B}, {@code 1.5 MiB}. */
    static String bytes(double n) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        int u = 0;
        while (n >= 1024 && u < units.length - 1) {
            n /= 1024;
            u++;
        }
        return u == 0 ? String.format(Locale.ROOT, "%.0f %s", n, units[u]) : String.format(Locale.ROOT, "%.1f %s", n, units[u]);
    }

    /** Rows as left-aligned columns two spaces apart, the first row the header; no trailing blanks. */
    static String columns(java.util.List<String[]> rows) {
        int[] width = new int[rows.get(0).length];
        for (String[] r : rows) {
            for (int i = 0; i < r.length; i++) {
                width[i] = Math.max(width[i], r[i].length());
            }
        }
        StringBuilder sb = new StringBuilder();
        for (String[] r : rows) {
            for (int i = 0; i < r.length; i++) {
                sb.append(i == r.length - 1 ? r[i] : String.format("%-" + width[i] + "s  ", r[i]));
            }
            sb.append('\n');
        }
        return sb.toString().stripTrailing();
    }

    /** {@code 0:42}, {@code 12:05}, {@code 3:02:11}. */
    static String duration(long seconds) {
        long h = seconds / 3600;
        long m = seconds / 60 % 60;
        long s = seconds % 60;
        return h > 0 ? String.format(Locale.ROOT, "%d:%02d:%02d", h, m, s) : String.format(Locale.ROOT, "%d:%02d", m, s);
    }

    /** {@code text} cut to {@code width} characters (the last one {@code ~} if it was cut). */
    static String fit(String text, int width) {
        return text.length() <= width ? text : text.substring(0, Math.max(0, width - 1)) + "~";
    }
}
