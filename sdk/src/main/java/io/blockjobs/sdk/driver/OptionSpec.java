package io.blockjobs.sdk.driver;

/**
 * One option of a driver, as {@code query-qmp-schema} describes the driver's variant of
 * {@code BlockdevOptions}: management software (libvirt) probes these to learn what a driver
 * takes.
 *
 * @param name     the option's name ({@code throttle-group})
 * @param type     its QAPI type: {@code str}, {@code int}, {@code bool}, {@code any},
 *                 {@code [BlockdevRef]} for a list of children, or
 *                 {@code BlockdevRef} / {@code BlockdevRefOrNull} for a child
 * @param optional whether it may be left out
 */
public record OptionSpec(String name, String type, boolean optional) {

    /** A required option. */
    public static OptionSpec required(String name, String type) {
        return new OptionSpec(name, type, false);
    }

    /** An optional option. */
    public static OptionSpec optional(String name, String type) {
        return new OptionSpec(name, type, true);
    }
}
