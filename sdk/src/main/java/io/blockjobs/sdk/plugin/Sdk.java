package io.blockjobs.sdk.plugin;

/**
 * The SDK's version. A plugin declares the versions it works with in {@code plugin.properties}
 * ({@code plugin.requires=^1.0.0}); the platform refuses a plugin whose range excludes this one.
 * The minor number grows with additions; the major number only with changes that break plugins.
 */
public final class Sdk {
    /** This SDK's version, {@code major.minor.patch}. */
    public static final String VERSION = "1.3.0";

    private Sdk() {
    }
}
