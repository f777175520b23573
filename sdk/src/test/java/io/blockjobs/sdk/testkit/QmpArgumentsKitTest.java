package io.blockjobs.sdk.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.blockjobs.sdk.error.CommandException;
import io.blockjobs.sdk.job.JobArgs;
import io.blockjobs.sdk.job.OnError;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** Arguments from JSON text, checked and bound as the platform's QMP layer does. */
class QmpArgumentsKitTest {

    record Sync(String mode, Optional<Integer> granularity) {
    }

    record Args(Optional<String> jobId, String device, Optional<Long> speed, Optional<OnError> onError,
                Optional<Boolean> autoFinalize, Optional<Boolean> autoDismiss, Optional<List<String>> bitmaps,
                Optional<Sync> sync, Optional<Boolean> xSafe) implements JobArgs {
    }

    @Test
    void bindsKebabCaseMembersOptionalsAndEnumsByTheirQmpNames() {
        Args a = QmpArguments.parse(Args.class, "{\"job-id\": \"j\", \"device\": \"top\", \"speed\": 1099511627776,"
                + " \"on-error\": \"enospc\", \"auto-finalize\": false, \"bitmaps\": [\"b0\", \"b1\"],"
                + " \"sync\": {\"mode\": \"full\", \"granularity\": 65536}, \"x-safe\": true}");
        assertThat(a).isEqualTo(new Args(Optional.of("j"), "top", Optional.of(1L << 40), Optional.of(OnError.ENOSPC),
                Optional.of(false), Optional.empty(), Optional.of(List.of("b0", "b1")),
                Optional.of(new Sync("full", Optional.of(65536))), Optional.of(true)));
        assertThat(QmpArguments.parse(Args.class, "{\"device\": \"d\", \"speed\": null}").speed())
                .as("null is absent for an optional member").isEmpty();
    }

    @Test
    void refusesWhatQmpRefusesWithQemusMessages() {
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{}")).isInstanceOf(CommandException.class)
                .hasMessage("Parameter 'device' is missing");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"jobId\": \"j\"}"))
                .hasMessage("Parameter 'jobId' is unexpected");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"sync\": {\"mode\": \"x\", \"y\": 1}}"))
                .hasMessage("Parameter 'sync.y' is unexpected");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"speed\": 1.5}"))
                .hasMessage("Invalid parameter type for 'speed', expected: integer");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"sync\": {\"mode\": \"x\","
                + " \"granularity\": 4294967296}}")).hasMessage("Invalid parameter type for 'sync.granularity', expected: integer");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"auto-finalize\": \"on\"}"))
                .hasMessage("Invalid parameter type for 'auto-finalize', expected: boolean");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"on-error\": \"STOP\"}"))
                .hasMessage("Parameter 'on-error' does not accept value 'STOP'");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": \"d\", \"bitmaps\": [1]}"))
                .hasMessage("Invalid parameter type for 'bitmaps[0]', expected: string");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "[]"))
                .hasMessage("Invalid parameter type for 'arguments', expected: object");
        assertThatThrownBy(() -> QmpArguments.parse(Args.class, "{\"device\": ")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void editsJsonTextMemberByMember() {
        String json = QmpArguments.with("{\"device\": \"d\"}", "speed", 5);
        assertThat(QmpArguments.member(json, "speed")).isEqualTo("5");
        assertThat(QmpArguments.member(QmpArguments.without(json, "device"), "device")).isNull();
    }
}
