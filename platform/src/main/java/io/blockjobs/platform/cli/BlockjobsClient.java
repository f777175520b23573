package io.blockjobs.platform.cli;

import java.util.Arrays;

/** {@code blockjobs}: the client. For now: the demo, version and usage. */
public final class BlockjobsClient {
    private BlockjobsClient() {
    }

    public static void main(String[] args) throws Exception {
        String command = args.length == 0 ? "--help" : args[0];
        switch (command) {
            case "--version", "-V" -> System.out.println("blockjobs " + Version.get());
            case "--help", "-h" -> usage();
            case "demo" -> System.exit(Demo.run(Arrays.copyOfRange(args, 1, args.length)));
            default -> {
                System.err.println("blockjobs: unknown command '" + command + "' (try --help)");
                System.exit(2);
            }
        }
    }

    private static void usage() {
        System.out.println("""
                Usage: blockjobs COMMAND [args]
                The blockjobs client.

                  demo [DIR]       build a qcow2 backing chain in DIR (a new temporary folder by
                                   default), write to it, and show where each range's data lives
                  --help, -h       print this help
                  --version, -V    print the version
                """);
    }
}
