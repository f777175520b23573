package io.blockjobs.sdk.job;

import io.blockjobs.sdk.block.WriteHook;
import java.util.List;
import java.util.Map;

/**
 * A filter node a job puts above a node ({@link JobSetup#insertFilter}).
 *
 * @param driver   the filter's driver as QEMU names it: a registered filter driver, built in
 *                 ({@code copy-on-read}) or from a plugin ({@code copy-before-write} from the
 *                 backup plugin), opened with its {@code options} and {@code file} set to the
 *                 node; or a job filter that only forwards and runs {@code hooks}
 *                 ({@code commit_top}, {@code mirror_top})
 * @param nodeName the filter's node name ({@code filter-node-name}), or null for a generated one
 * @param options  the driver's options besides {@code file}, as QMP would give them
 * @param hooks    write hooks run around every write through the filter, in order
 */
public record FilterSpec(String driver, String nodeName, Map<String, Object> options, List<WriteHook> hooks) {

    /** Copies the collections. */
    public FilterSpec {
        options = Map.copyOf(options);
        hooks = List.copyOf(hooks);
    }
}
