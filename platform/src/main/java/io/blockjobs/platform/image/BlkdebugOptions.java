package io.blockjobs.platform.image;

import io.blockjobs.platform.image.BlkdebugRules.InjectError;
import io.blockjobs.platform.image.BlkdebugRules.IoType;
import io.blockjobs.platform.image.BlkdebugRules.SetState;
import io.blockjobs.sdk.block.BlockNode;
import io.blockjobs.sdk.block.BlockPermission;
import io.blockjobs.sdk.driver.ChildRole;
import io.blockjobs.sdk.driver.DriverContext;
import io.blockjobs.sdk.driver.DriverNode;
import io.blockjobs.sdk.driver.DriverOptions;
import io.blockjobs.sdk.error.CommandException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Opens a {@code blkdebug} node from QEMU's {@code BlockdevOptionsBlkdebug}, checking in the
 * order and with the messages of QEMU's QMP and {@code blkdebug_open}: the options' types and
 * rules, the config file, the image, then the limits against the image's alignment.
 */
final class BlkdebugOptions {
    private static final int INT_MAX = Integer.MAX_VALUE;

    private BlkdebugOptions() {
    }

    static DriverNode open(DriverContext ctx) {
        DriverOptions o = ctx.options();
        long align = size(o, "align", false);
        long maxTransfer = size(o, "max-transfer", true);
        long optWriteZero = size(o, "opt-write-zero", true);
        long maxWriteZero = size(o, "max-write-zero", true);
        long optDiscard = size(o, "opt-discard", true);
        long maxDiscard = size(o, "max-discard", true);
        List<InjectError> optionInjects = new ArrayList<>();
        for (DriverOptions r : o.objects("inject-error")) {
            optionInjects.add(inject(r));
        }
        List<SetState> optionStates = new ArrayList<>();
        for (DriverOptions r : o.objects("set-state")) {
            optionStates.add(setState(r));
        }
        Set<BlockPermission> take = permissions(o.strings("take-child-perms"));
        Set<BlockPermission> unshare = permissions(o.strings("unshare-child-perms"));
        String config = o.optString("config");

        // The config file's rules come first, as QEMU adds them first.
        List<InjectError> injects = new ArrayList<>();
        List<SetState> states = new ArrayList<>();
        if (config != null) {
            List<BlkdebugConfig.Section> sections = BlkdebugConfig.read(Path.of(config));
            for (BlkdebugConfig.Section s : sections) {
                if (s.group().equals("inject-error")) {
                    injects.add(inject(s.values()));
                }
            }
            injects.addAll(optionInjects);
            for (BlkdebugConfig.Section s : sections) {
                if (s.group().equals("set-state")) {
                    states.add(setState(s.values()));
                }
            }
        } else {
            injects.addAll(optionInjects);
        }
        states.addAll(optionStates);

        BlockNode image = ctx.child("image", ChildRole.FILTERED);
        int imageAlign = image instanceof NodeLimits l ? l.limits().requestAlignment() : 1;
        if (align != 0 && (align >= INT_MAX || Long.bitCount(align) != 1)) {
            throw constraint("align", align);
        }
        long effective = Math.max(align, imageAlign);
        if (maxTransfer != 0 && (maxTransfer >= INT_MAX || maxTransfer % effective != 0)) {
            throw constraint("max-transfer", maxTransfer);
        }
        if (optWriteZero != 0 && (optWriteZero >= INT_MAX || optWriteZero % effective != 0)) {
            throw constraint("opt-write-zero", optWriteZero);
        }
        if (maxWriteZero != 0 && (maxWriteZero >= INT_MAX || maxWriteZero % Math.max(optWriteZero, effective) != 0)) {
            throw constraint("max-write-zero", maxWriteZero);
        }
        if (optDiscard != 0 && (optDiscard >= INT_MAX || optDiscard % effective != 0)) {
            throw constraint("opt-discard", optDiscard);
        }
        if (maxDiscard != 0 && (maxDiscard >= INT_MAX || maxDiscard % Math.max(optDiscard, effective) != 0)) {
            throw constraint("max-discard", maxDiscard);
        }
        BlkdebugNode.Settings settings = new BlkdebugNode.Settings(config, (int) align, (int) maxTransfer,
                (int) optWriteZero, (int) maxWriteZero, (int) optDiscard, (int) maxDiscard, take, unshare);
        return new BlkdebugNode(image, new BlkdebugRules(injects, states), settings, imageAlign);
    }

    private static CommandException constraint(String key, long value) {
        return new CommandException("Cannot meet constraints with " + key + " " + value);
    }

    /** A QEMU_OPT_SIZE member; the int32 ones are checked as QAPI does first. */
    private static long size(DriverOptions o, String key, boolean int32) {
        Long v = o.optInteger(key);
        if (v == null) {
            return 0;
        }
        if (int32 && (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE)) {
            throw new CommandException("Parameter '" + key + "' expects int32_t");
        }
        if (v < 0) {
            throw new CommandException("Parameter '" + key + "' expects a non-negative number below 2^64");
        }
        return v;
    }

    /** An {@code inject-error} element of the options, checked as QAPI checks it. */
    private static InjectError inject(DriverOptions r) {
        BlkdebugEvent event = event(r.string("event"));
        Long state = r.optInteger("state");
        String iotype = r.optString("iotype");
        Set<IoType> iotypes = IoType.DEFAULT;
        if (iotype != null) {
            IoType t = IoType.byName(iotype);
            if (t == null) {
                throw new CommandException("Parameter 'iotype' does not accept value '" + iotype + "'");
            }
            iotypes = Set.of(t);
        }
        Long errno = r.optInteger("errno");
        Long sector = r.optInteger("sector");
        boolean once = r.bool("once", false);
        boolean immediately = r.bool("immediately", false);
        r.checkAllUsed();
        return new InjectError(event, state == null ? 0 : state.intValue(), iotypes,
                errno == null ? 5 : errno.intValue(), sector == null ? -1 : sector, once, immediately);
    }

    /** A {@code set-state} element of the options ({@code new_state} is required in QAPI). */
    private static SetState setState(DriverOptions r) {
        BlkdebugEvent event = event(r.string("event"));
        Long state = r.optInteger("state");
        long newState = r.integer("new_state");
        r.checkAllUsed();
        return new SetState(event, state == null ? 0 : state.intValue(), (int) newState);
    }

    private static BlkdebugEvent event(String name) {
        BlkdebugEvent e = BlkdebugEvent.byName(name);
        if (e == null) {
            throw new CommandException("Parameter 'event' does not accept value '" + name + "'");
        }
        return e;
    }

    /** An {@code [inject-error]} section of the config file, as QEMU's {@code add_rule}. */
    private static InjectError inject(Map<String, String> v) {
        BlkdebugEvent event = fileEvent(v);
        Set<IoType> iotypes = IoType.DEFAULT;
        String iotype = v.get("iotype");
        if (iotype != null) {
            IoType t = IoType.byName(iotype);
            if (t == null) {
                throw new CommandException("invalid parameter value: " + iotype);
            }
            iotypes = Set.of(t);
        }
        return new InjectError(event, (int) number(v, "state", 0), iotypes, (int) number(v, "errno", 5),
                number(v, "sector", -1), bool(v, "once"), bool(v, "immediately"));
    }

    /** A {@code [set-state]} section of the config file; {@code new_state} defaults to 0 there. */
    private static SetState setState(Map<String, String> v) {
        BlkdebugEvent event = fileEvent(v);
        return new SetState(event, (int) number(v, "state", 0), (int) number(v, "new_state", 0));
    }

    private static BlkdebugEvent fileEvent(Map<String, String> v) {
        String name = v.get("event");
        if (name == null) {
            throw new CommandException("Missing event name for rule");
        }
        BlkdebugEvent e = BlkdebugEvent.byName(name);
        if (e == null) {
            throw new CommandException("invalid parameter value: " + name);
        }
        return e;
    }

    private static long number(Map<String, String> v, String key, long dflt) {
        String s = v.get(key);
        return s == null ? dflt : BlkdebugConfig.number(key, s);
    }

    private static boolean bool(Map<String, String> v, String key) {
        String s = v.get(key);
        return s != null && BlkdebugConfig.bool(key, s);
    }

    /** {@code take-child-perms} / {@code unshare-child-perms}: QEMU's {@code BlockPermission} names. */
    private static Set<BlockPermission> permissions(List<String> names) {
        Set<BlockPermission> out = EnumSet.noneOf(BlockPermission.class);
        for (String n : names) {
            BlockPermission p = switch (n) {
                case "consistent-read" -> BlockPermission.CONSISTENT_READ;
                case "write" -> BlockPermission.WRITE;
                case "write-unchanged" -> BlockPermission.WRITE_UNCHANGED;
                case "resize" -> BlockPermission.RESIZE;
                default -> null;
            };
            if (p == null) {
                // sic: QEMU's visitor has no name for a list element
                throw new CommandException("Parameter 'null' does not accept value '" + n + "'");
            }
            out.add(p);
        }
        return out;
    }
}
