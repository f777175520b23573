package io.blockjobs.platform.nbd;

import io.blockjobs.sdk.error.CommandException;
import java.io.IOException;
import java.net.Inet4Address;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Where the NBD server listens: QEMU's {@code SocketAddress} of type {@code unix} or
 * {@code inet}, as {@code nbd-server-start} and {@code --nbd-server} take it.
 */
public sealed interface NbdListen {

    /** {@code {type: unix, path}}. */
    record Unix(Path path) implements NbdListen {
    }

    /**
     * QEMU's {@code InetSocketAddress}, resolved as QEMU's {@code qio_dns_resolver_lookup_sync}
     * and {@code inet_ai_family_from_address} resolve it ({@link #resolve}).
     *
     * @param host    a name or a numeric address; empty for every address
     * @param port    a number or a service name ({@code /etc/services}); empty for any free port
     * @param to      with it, the first free port from {@code port} to {@code to} is taken
     * @param ipv4    {@code false}: not IPv4; {@code true}: IPv4 (alone unless {@code ipv6} too)
     * @param ipv6    the same for IPv6
     * @param numeric {@code host} must be a numeric address: no name is looked up
     */
    record Inet(String host, String port, Integer to, Boolean ipv4, Boolean ipv6, boolean numeric) implements NbdListen {
        private static final Pattern IPV4 = Pattern.compile("\\d{1,3}(\\.\\d{1,3}){3}");

        private enum Family { ANY, V4, V6 }

        /** QEMU's {@code inet_ai_family_from_address}. */
        private Family family() {
            if (Boolean.FALSE.equals(ipv4) && Boolean.FALSE.equals(ipv6)) {
                throw new CommandException("Cannot disable IPv4 and IPv6 at same time");
            }
            if (Boolean.TRUE.equals(ipv4) && Boolean.TRUE.equals(ipv6)) {
                return host.isEmpty() ? Family.V6 : Family.ANY;
            }
            if (Boolean.TRUE.equals(ipv6) || Boolean.FALSE.equals(ipv4)) {
                return Family.V6;
            }
            if (Boolean.TRUE.equals(ipv4) || Boolean.FALSE.equals(ipv6)) {
                return Family.V4;
            }
            return Family.ANY;
        }

        private CommandException resolutionFailed(String why) {
            return new CommandException("address resolution failed for " + host + ":" + port + ": " + why);
        }

        /** The port, a number or a service name ({@code getaddrinfo}'s service lookup). */
        int portNumber() {
            if (port.isEmpty()) {
                return 0;
            }
            if (port.chars().allMatch(Character::isDigit)) {
                if (port.length() <= 5 && Integer.parseInt(port) <= 65535) {
                    return Integer.parseInt(port);
                }
            } else {
                Integer p = service(port);
                if (p != null) {
                    return p;
                }
            }
            throw resolutionFailed("Servname not supported for ai_socktype");
        }

        /** A TCP service's port from {@code /etc/services}, or null. */
        private static Integer service(String name) {
            try {
                for (String line : Files.readAllLines(Path.of("/etc/services"))) {
                    String[] f = line.replaceFirst("#.*", "").trim().split("\\s+");
                    if (f.length >= 2 && f[1].endsWith("/tcp")) {
                        for (int i = 0; i < f.length; i++) {
                            if (i != 1 && f[i].equals(name)) {
                                return Integer.parseInt(f[1].substring(0, f[1].length() - 4));
                            }
                        }
                    }
                }
            } catch (IOException | NumberFormatException e) {
                return null;
            }
            return null;
        }

        /**
         * The addresses to listen on: the host's addresses of the family asked for, each once. An
         * empty host is the wildcard: IPv6's (which takes IPv4 clients too) unless only IPv4 is
         * asked for.
         */
        List<InetAddress> resolve() {
            Family family = family();
            portNumber(); // QEMU resolves host and service together: a bad service fails here too
            try {
                if (host.isEmpty()) {
                    return List.of(InetAddress.getByName(family == Family.V4 ? "0.0.0.0" : "::"));
                }
                boolean literal = IPV4.matcher(host).matches() || host.contains(":");
                if (numeric && !literal) {
                    throw resolutionFailed("Name or service not known");
                }
                Set<InetAddress> found = new LinkedHashSet<>();
                for (InetAddress a : InetAddress.getAllByName(host)) {
                    if (family == Family.ANY || (family == Family.V4) == (a instanceof Inet4Address)) {
                        found.add(a);
                    }
                }
                if (found.isEmpty()) {
                    throw resolutionFailed(literal ? "Address family for hostname not supported" : "Name or service not known");
                }
                return new ArrayList<>(found);
            } catch (UnknownHostException e) {
                throw resolutionFailed("Name or service not known");
            }
        }

        /** Whether IPv4 clients are to be refused on a wildcard IPv6 address (QEMU's {@code IPV6_V6ONLY}). */
        boolean v6only(InetAddress a) {
            boolean dual = (ipv4 == null && ipv6 == null) || (Boolean.TRUE.equals(ipv4) && Boolean.TRUE.equals(ipv6));
            return !dual && a instanceof Inet6Address && a.isAnyLocalAddress();
        }
    }
}
