package io.blockjobs.sdk.driver;

import java.util.List;

/**
 * The options of one node as {@code blockdev-add} gives them (JSON) or the command line does
 * ({@code key=value}, where every value is a string): getters accept both, with QEMU's messages
 * for missing and mistyped members. Every member a driver reads is marked used; after
 * {@link BlockDriver#open} the graph refuses members nobody read ("Parameter 'x' is unexpected").
 */
public interface DriverOptions {

    /** Whether the member is given (and not null). */
    boolean has(String key);

    /** A required string member. */
    String string(String key);

    /** An optional string member, or null. */
    String optString(String key);

    /** A boolean member ({@code on}/{@code off} in key=value syntax), or {@code dflt}. */
    boolean bool(String key, boolean dflt);

    /** A required integer member (key=value sizes may have suffixes: {@code 64k}, {@code 1G}). */
    long integer(String key);

    /** An optional integer member, or null. */
    Long optInteger(String key);

    /** A nested object member. */
    DriverOptions object(String key);

    /** A list of objects ({@code inject-error}), empty when absent. */
    List<DriverOptions> objects(String key);

    /** A list of strings, empty when absent. */
    List<String> strings(String key);

    /** Marks members QEMU accepts that have no effect on this driver. */
    void ignore(String... keys);

    /**
     * Refuses members nobody read, with QEMU's message; the graph does this for a node's own
     * options, a driver for the nested objects it reads.
     */
    void checkAllUsed();

    /** QEMU's error for a member with a value it does not take. */
    RuntimeException invalid(String key, String message);
}
