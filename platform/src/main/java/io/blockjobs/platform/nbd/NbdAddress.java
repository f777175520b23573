package io.blockjobs.platform.nbd;

/** Where an NBD server listens: QEMU's {@code SocketAddress} of type {@code unix} or {@code inet}. */
sealed interface NbdAddress {

    /** As QEMU names it in "Failed to connect to '...'". */
    String describe();

    /** {@code {type: unix, path}}. */
    record Unix(String path) implements NbdAddress {
        @Override
        public String describe() {
            return path;
        }
    }

    /** {@code {type: inet, host, port}}; the port may be a number or a service name. */
    record Inet(String host, String port) implements NbdAddress {
        @Override
        public String describe() {
            return host + ":" + port;
        }
    }
}
