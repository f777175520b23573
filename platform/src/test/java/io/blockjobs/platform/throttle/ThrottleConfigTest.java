package io.blockjobs.platform.throttle;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.platform.throttle.ThrottleConfig.Bucket;
import io.blockjobs.sdk.error.CommandException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.api.Test;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

/**
 * {@code throttle_is_valid} and the {@code throttle-group} properties, with QEMU 7.2's messages
 * as {@code object-add} replied them on qemu-storage-daemon (/tmp/research-drv/REPORT.md, 2.2).
 */
class ThrottleConfigTest {
    private static final JsonMapper JSON = JsonMapper.builder().build();

    private static Map<String, JsonNode> props(String json) {
        Map<String, JsonNode> out = new LinkedHashMap<>();
        JsonNode n = JSON.readTree(json);
        n.propertyNames().forEach(k -> out.put(k, n.get(k)));
        return out;
    }

    /** The properties as object-add gives them, through every step QEMU takes, ending with complete(). */
    private static ThrottleConfig create(String json, boolean keyval) {
        ThrottleConfig c = ThrottleGroupProperties.parse(props(json), keyval).apply();
        c.validate();
        return c;
    }

    static Stream<Arguments> refused() {
        return Stream.of(
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-read\":10}}",
                        "bps/iops/max total values and read/write values cannot be used at the same time"),
                Arguments.of("{\"limits\":{\"iops-read\":10,\"iops-read-max\":20,\"iops-total\":5,\"iops-total-max\":7}}",
                        "bps/iops/max total values and read/write values cannot be used at the same time"),
                Arguments.of("{\"x-bps-total\":1000,\"limits\":{\"bps-read\":10}}",
                        "bps/iops/max total values and read/write values cannot be used at the same time"),
                Arguments.of("{\"limits\":{\"bps-total\":-1}}", "bps/iops/max values must be within [0, 1000000000000000]"),
                Arguments.of("{\"limits\":{\"iops-total\":1000000000000001}}",
                        "bps/iops/max values must be within [0, 1000000000000000]"),
                Arguments.of("{\"limits\":{\"bps-total-max\":1000}}", "bps_max/iops_max require corresponding bps/iops values"),
                Arguments.of("{\"limits\":{\"iops-total\":10,\"iops-read-max\":20}}",
                        "bps_max/iops_max require corresponding bps/iops values"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-total-max-length\":5}}", "burst length set without burst rate"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-total-max\":2000,\"bps-total-max-length\":0}}",
                        "the burst length cannot be 0"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-total-max\":500}}", "bps_max/iops_max cannot be lower than bps/iops"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"iops-size\":4096}}", "iops size requires an iops value to be set"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-total-max\":2000,\"bps-total-max-length\":4294967296}}",
                        "bps-total-max-length value must be in the range [0, 4294967295]"),
                Arguments.of("{\"limits\":{\"bps-total\":1000,\"bps-total-max\":1000000000000,\"bps-total-max-length\":1001}}",
                        "burst length too high for this burst rate"),
                // Measured on QSD: -1 passes the range check (signed) and becomes 2^64-1.
                Arguments.of("{\"limits\":{\"bps-write-max-length\":-1}}", "burst length set without burst rate"),
                Arguments.of("{\"limits\":{\"bps-write-max-length\":-1,\"bps-write\":5,\"bps-write-max\":10}}",
                        "burst length too high for this burst rate"),
                Arguments.of("{\"x-bps-total\":-1}", "Property values cannot be negative"),
                Arguments.of("{\"x-bps-write\":1048576,\"x-iops-size\":-3}", "Property values cannot be negative"),
                Arguments.of("{\"x-bps-total-max-length\":4294967296}",
                        "x-bps-total-max-length value must be in therange [0, 4294967295]"),
                Arguments.of("{\"x-bps-total-max\":5}", "bps_max/iops_max require corresponding bps/iops values"),
                Arguments.of("{\"limits\":{\"bogus\":1}}", "Parameter 'limits.bogus' is unexpected"),
                Arguments.of("{\"x-bogus\":1}", "Parameter 'x-bogus' is unexpected"),
                Arguments.of("{\"limits\":{\"iops-total\":5},\"bogus\":1}", "Parameter 'bogus' is unexpected"),
                Arguments.of("{\"limits\":{\"bps-total\":\"abc\"}}",
                        "Invalid parameter type for 'limits.bps-total', expected: integer"),
                Arguments.of("{\"limits\":{\"bps-total\":1.5}}",
                        "Invalid parameter type for 'limits.bps-total', expected: integer"),
                Arguments.of("{\"limits\":5}", "Invalid parameter type for 'limits', expected: object"),
                // QAPI checks types before it refuses unexpected members, and both before any setter runs.
                Arguments.of("{\"bogus\":1,\"limits\":{\"bps-total\":\"x\"}}",
                        "Invalid parameter type for 'limits.bps-total', expected: integer"),
                Arguments.of("{\"x-bps-total\":-1,\"bogus\":1}", "Parameter 'bogus' is unexpected"));
    }

    @ParameterizedTest
    @MethodSource
    void refused(String json, String message) {
        assertThatThrownBy(() -> create(json, false)).isInstanceOf(CommandException.class).hasMessage(message);
    }

    static Stream<Arguments> refusedOnTheCommandLine() {
        return Stream.of(
                Arguments.of("{\"limits\":{\"bps-total\":\"abc\"}}", "Parameter 'limits.bps-total' expects integer"),
                Arguments.of("{\"limits\":{\"bps-total\":\"1k\"}}", "Parameter 'limits.bps-total' expects integer"),
                Arguments.of("{\"x-bps-total\":\"abc\"}", "Parameter 'x-bps-total' expects integer"),
                Arguments.of("{\"limits\":\"5\"}", "Invalid parameter type for 'limits', expected: object"),
                Arguments.of("{\"limits\":{\"bps-total\":\"10\",\"bps-read\":\"5\"}}",
                        "bps/iops/max total values and read/write values cannot be used at the same time"),
                Arguments.of("{\"limits\":{\"bogus\":\"1\"}}", "Parameter 'limits.bogus' is unexpected"));
    }

    @ParameterizedTest
    @MethodSource
    void refusedOnTheCommandLine(String json, String message) {
        assertThatThrownBy(() -> create(json, true)).isInstanceOf(CommandException.class).hasMessage(message);
    }

    @Test
    void accepted() {
        ThrottleConfig c = create("{\"limits\":{\"bps-write\":1048576}}", false);
        assertThat(c.avg(Bucket.BPS_WRITE)).isEqualTo(1048576);
        assertThat(c.enabled()).isTrue();
        // qom-get limits of this group on QSD: every member, burst lengths 1
        assertThat(c.toLimits()).hasSize(19).containsEntry("bps-write", 1048576L).containsEntry("bps-write-max-length", 1L)
                .containsEntry("iops-size", 0L).containsEntry("bps-total", 0L);
        assertThat(create("{}", false).enabled()).isFalse(); // limits {} is valid: no throttling
        assertThat(create("{\"limits\":{}}", false).enabled()).isFalse();
        // limits and x- aliases merge; on the command line values are strings, decimal or hex
        ThrottleConfig merged = create("{\"x-iops-write\":\"10\",\"limits\":{\"bps-write\":\"0x10\",\"iops-write-max\":\"20\","
                + "\"iops-write-max-length\":\"3\"}}", true);
        assertThat(merged.avg(Bucket.OPS_WRITE)).isEqualTo(10);
        assertThat(merged.avg(Bucket.BPS_WRITE)).isEqualTo(16);
        assertThat(merged.max(Bucket.OPS_WRITE)).isEqualTo(20);
        assertThat(merged.burstLength(Bucket.OPS_WRITE)).isEqualTo(3);
        // QSD accepted a negative iops-size through limits (it becomes 2^64-1: no request is larger)
        ThrottleConfig huge = create("{\"limits\":{\"iops-size\":-1,\"iops-write\":5}}", false);
        assertThat(huge.toLimits()).containsEntry("iops-size", -1L);
        ThrottleState s = new ThrottleState(huge, 0);
        s.account(true, 1 << 20);
        assertThat(s.level(Bucket.OPS_WRITE)).isEqualTo(1.0);
    }

    @Test
    void xPropertiesAreSetOneByOneAndValidatedOnlyAtTheEnd() {
        // bps-total-max before bps-total would be refused by limits, but the x- setters do not validate
        ThrottleConfig c = create("{\"x-bps-total-max\":2000,\"x-bps-total\":1000}", false);
        assertThat(c.max(Bucket.BPS_TOTAL)).isEqualTo(2000);
        // limits validates what is set so far, x- values included
        assertThatThrownBy(() -> create("{\"x-bps-total-max\":2000,\"limits\":{\"iops-write\":1}}", false))
                .hasMessage("bps_max/iops_max require corresponding bps/iops values");
    }
}
