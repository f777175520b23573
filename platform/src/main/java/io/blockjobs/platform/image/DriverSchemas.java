package io.blockjobs.platform.image;

import static io.blockjobs.sdk.driver.OptionSpec.optional;
import static io.blockjobs.sdk.driver.OptionSpec.required;

import io.blockjobs.sdk.driver.OptionSpec;
import java.util.List;
import java.util.Map;

/** The options of the built-in image drivers as QEMU 7.2's schema names them ({@code BlockdevOptions*}). */
final class DriverSchemas {
    private DriverSchemas() {
    }

    private static final Map<String, List<OptionSpec>> SCHEMAS = Map.of(
            "rbd", List.of(required("pool", "str"), optional("namespace", "str"), required("image", "str"),
                    optional("conf", "str"), optional("snapshot", "str"), optional("encrypt", "any"),
                    optional("user", "str"), optional("auth-client-required", "any"), optional("key-secret", "str"),
                    optional("server", "any")),
            "file", List.of(required("filename", "str"), optional("pr-manager", "str"), optional("locking", "str"),
                    optional("aio", "str"), optional("aio-max-batch", "int"), optional("drop-cache", "bool"),
                    optional("x-check-cache-dropped", "bool")),
            "raw", List.of(required("file", "BlockdevRef"), optional("offset", "int"), optional("size", "int")),
            "qcow2", List.of(required("file", "BlockdevRef"), optional("backing", "BlockdevRefOrNull"),
                    optional("lazy-refcounts", "bool"), optional("pass-discard-request", "bool"),
                    optional("pass-discard-snapshot", "bool"), optional("pass-discard-other", "bool"),
                    optional("discard-no-unref", "bool"), optional("overlap-check", "any"),
                    optional("cache-size", "int"), optional("l2-cache-size", "int"),
                    optional("l2-cache-entry-size", "int"), optional("refcount-cache-size", "int"),
                    optional("cache-clean-interval", "int"), optional("encrypt", "any"),
                    optional("data-file", "BlockdevRef")),
            "blkdebug", List.of(required("image", "BlockdevRef"), optional("config", "str"), optional("align", "int"),
                    optional("max-transfer", "int"), optional("opt-write-zero", "int"),
                    optional("max-write-zero", "int"), optional("opt-discard", "int"), optional("max-discard", "int"),
                    optional("inject-error", "any"), optional("set-state", "any"),
                    optional("take-child-perms", "any"), optional("unshare-child-perms", "any")),
            "null-co", List.of(optional("size", "int"), optional("latency-ns", "int"), optional("read-zeroes", "bool")));

    /** The options of the driver of this name, or none. */
    static List<OptionSpec> of(String driver) {
        return SCHEMAS.getOrDefault(driver, List.of());
    }
}
