package io.blockjobs.platform.testkit;

import java.util.LinkedHashMap;
import java.util.Map;

/** QMP arguments for tests, in the order given (nulls allowed, as in {@code "backing": null}). */
public final class QmpArgs {
    private QmpArgs() {
    }

    public static Map<String, Object> map(Object... keysAndValues) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            m.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        return m;
    }
}
