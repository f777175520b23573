package io.blockjobs.platform.cli;

/** {@code blockjobd}: the storage daemon. The QMP/NBD server arrives with its own issue. */
public final class BlockjobDaemon {
    private BlockjobDaemon() {
    }

    public static void main(String[] args) {
        for (String a : args) {
            switch (a) {
                case "--version", "-V" -> {
                    System.out.println("blockjobd " + Version.get());
                    return;
                }
                case "--help", "-h" -> {
                    usage();
                    return;
                }
                default -> {
                    System.err.println("blockjobd: unknown option '" + a + "' (try --help)");
                    System.exit(2);
                }
            }
        }
        usage();
        System.exit(2);
    }

    private static void usage() {
        System.out.println("""
                Usage: blockjobd [options]
                The blockjobs storage daemon: live block jobs on qcow2 and raw images, driven over QMP.

                  --help, -h       print this help
                  --version, -V    print the version
                """);
    }
}
