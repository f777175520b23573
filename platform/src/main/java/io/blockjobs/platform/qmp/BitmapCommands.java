package io.blockjobs.platform.qmp;

import io.blockjobs.platform.bitmap.Bitmap;
import io.blockjobs.platform.bitmap.Bitmaps;
import io.blockjobs.platform.bitmap.GranuleSet;
import java.util.List;
import java.util.Optional;
import tools.jackson.databind.JsonNode;

/**
 * QEMU's dirty bitmap commands ({@code block-dirty-bitmap-add}, {@code -remove}, {@code -clear},
 * {@code -enable}, {@code -disable}, {@code -merge}, {@code x-debug-block-dirty-bitmap-sha256})
 * and the same as {@code transaction} actions, which undo themselves on abort as QEMU's do.
 */
public final class BitmapCommands {
    private BitmapCommands() {
    }

    /** {@code block-dirty-bitmap-add}'s arguments. */
    public record AddArgs(String node, String name, Optional<Long> granularity, Optional<Boolean> persistent,
                          Optional<Boolean> disabled) {
    }

    /** QMP's {@code BlockDirtyBitmap}: the arguments of remove, clear, enable, disable, sha256. */
    public record NameArgs(String node, String name) {
    }

    /** {@code block-dirty-bitmap-merge}'s arguments; each source is a name or {@code {node, name}}. */
    public record MergeArgs(String node, String target, List<BlockDirtyBitmapOrStr> bitmaps) {
    }

    /** QMP's {@code BlockDirtyBitmapSha256}. */
    public record Sha256(String sha256) {
    }

    public static void register(QmpDispatcher d, Bitmaps bitmaps) {
        d.register(QmpCommand.of("block-dirty-bitmap-add", AddArgs.class, null, a -> {
            add(bitmaps, a);
            return null;
        }));
        d.register(QmpCommand.of("block-dirty-bitmap-remove", NameArgs.class, null, a -> {
            bitmaps.remove(a.node(), a.name(), true);
            return null;
        }));
        d.register(QmpCommand.of("block-dirty-bitmap-clear", NameArgs.class, null, a -> {
            bitmaps.clear(a.node(), a.name());
            return null;
        }));
        d.register(QmpCommand.of("block-dirty-bitmap-enable", NameArgs.class, null, a -> {
            bitmaps.setEnabled(a.node(), a.name(), true);
            return null;
        }));
        d.register(QmpCommand.of("block-dirty-bitmap-disable", NameArgs.class, null, a -> {
            bitmaps.setEnabled(a.node(), a.name(), false);
            return null;
        }));
        d.register(QmpCommand.of("block-dirty-bitmap-merge", MergeArgs.class, null, a -> {
            bitmaps.merge(a.node(), a.target(), sources(a));
            return null;
        }));
        d.register(QmpCommand.of("x-debug-block-dirty-bitmap-sha256", NameArgs.class, Sha256.class,
                a -> new Sha256(bitmaps.sha256(a.node(), a.name()))));
    }

    private static Bitmap add(Bitmaps bitmaps, AddArgs a) {
        return bitmaps.add(a.node(), a.name(), a.granularity(), a.persistent().orElse(false), a.disabled().orElse(false));
    }

    private static List<Bitmaps.Source> sources(MergeArgs a) {
        return a.bitmaps().stream().map(b -> new Bitmaps.Source(b.node(), b.name())).toList();
    }

    /** The bitmap actions of {@code transaction}, or null if {@code type} is none of them. */
    static TransactionCommand.TxnAction action(String type, JsonNode data, String path, Bitmaps bitmaps) {
        return switch (type) {
            case "block-dirty-bitmap-add" -> {
                AddArgs a = TransactionCommand.args(data, AddArgs.class, path);
                yield new TransactionCommand.TxnAction() {
                    private boolean added;

                    @Override
                    public void prepare() {
                        add(bitmaps, a);
                        added = true;
                    }

                    @Override
                    public void abort() {
                        if (added) {
                            bitmaps.remove(a.node(), a.name(), true);
                        }
                    }
                };
            }
            case "block-dirty-bitmap-remove" -> {
                NameArgs a = TransactionCommand.args(data, NameArgs.class, path);
                yield new TransactionCommand.TxnAction() {
                    private Bitmap kept;

                    @Override
                    public void prepare() {
                        kept = bitmaps.remove(a.node(), a.name(), false);
                        kept.setBusy(true); // nothing else may use it until the transaction ends
                    }

                    @Override
                    public void commit() {
                        kept.setBusy(false);
                        bitmaps.release(kept);
                    }

                    @Override
                    public void abort() {
                        if (kept != null) {
                            kept.setBusy(false); // stored again when its node closes
                        }
                    }
                };
            }
            case "block-dirty-bitmap-clear" -> {
                NameArgs a = TransactionCommand.args(data, NameArgs.class, path);
                yield undoBits(() -> bitmaps.clear(a.node(), a.name()), () -> bitmaps.lookup(a.node(), a.name()));
            }
            case "block-dirty-bitmap-merge" -> {
                MergeArgs a = TransactionCommand.args(data, MergeArgs.class, path);
                yield undoBits(() -> bitmaps.merge(a.node(), a.target(), sources(a)),
                        () -> bitmaps.lookup(a.node(), a.target()));
            }
            case "block-dirty-bitmap-enable", "block-dirty-bitmap-disable" -> {
                NameArgs a = TransactionCommand.args(data, NameArgs.class, path);
                boolean enable = type.endsWith("enable");
                yield new TransactionCommand.TxnAction() {
                    private Boolean was;

                    @Override
                    public void prepare() {
                        was = bitmaps.setEnabled(a.node(), a.name(), enable);
                    }

                    @Override
                    public void abort() {
                        if (was != null) {
                            Bitmap b = bitmaps.lookup(a.node(), a.name());
                            if (was) {
                                b.enable();
                            } else {
                                b.disable();
                            }
                        }
                    }
                };
            }
            default -> null;
        };
    }

    /** An action that changes a bitmap's bits and puts them back on abort. */
    private static TransactionCommand.TxnAction undoBits(java.util.function.Supplier<GranuleSet> change,
                                                         java.util.function.Supplier<Bitmap> target) {
        return new TransactionCommand.TxnAction() {
            private GranuleSet before;

            @Override
            public void prepare() {
                before = change.get();
            }

            @Override
            public void abort() {
                if (before != null) {
                    target.get().restore(before);
                }
            }
        };
    }
}
