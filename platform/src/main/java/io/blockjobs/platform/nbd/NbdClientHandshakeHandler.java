package io.blockjobs.platform.nbd;

import static io.blockjobs.platform.nbd.Nbd.*;

import io.blockjobs.platform.nbd.NbdGreetingDecoder.NbdGreeting;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.ReferenceCountUtil;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;

/**
 * The fixed newstyle handshake, the client's side, as QEMU's {@code nbd_receive_negotiate}
 * drives it: answers the greeting ({@link NbdGreetingDecoder}) with {@code FIXED_NEWSTYLE}, asks
 * {@code NBD_OPT_STRUCTURED_REPLY}, then (if agreed) {@code NBD_OPT_SET_META_CONTEXT} for one
 * context ({@code base:allocation}, or the {@code x-dirty-bitmap} one), then {@code NBD_OPT_GO}
 * with {@code NBD_INFO_BLOCK_SIZE}. Option requests go out through {@link NbdOptionEncoder},
 * replies come in through {@link NbdOptionReplyDecoder}.
 *
 * <p>{@link #result()} completes with the export's {@link NbdExportInfo} once the server acked
 * GO (the pipeline is then the caller's to switch to transmission), or fails with an
 * {@link NbdHandshakeException} carrying QEMU's message. Runs on the event loop.
 */
final class NbdClientHandshakeHandler extends ChannelInboundHandlerAdapter {
    private final String export;
    private final String context;
    private final CompletableFuture<NbdExportInfo> result = new CompletableFuture<>();
    private int step; // 0 greeting, then the option awaiting its replies
    private boolean structured;
    private int contextId = -1;
    private long size = -1;
    private int flags;
    private int minBlock;
    private int preferred;
    private int maxBlock;

    /**
     * @param export  the export's name ("" for the default one)
     * @param context the meta context block status is to report
     */
    NbdClientHandshakeHandler(String export, String context) {
        this.export = export;
        this.context = context;
    }

    CompletableFuture<NbdExportInfo> result() {
        return result;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        try {
            switch (msg) {
                case NbdGreeting g -> greeting(ctx, g);
                case NbdOptionReply r -> reply(ctx, r);
                default -> throw new NbdHandshakeException("unexpected " + msg.getClass().getSimpleName());
            }
        } catch (NbdHandshakeException e) {
            fail(ctx, e);
        } catch (RuntimeException e) {
            fail(ctx, new NbdHandshakeException("Protocol error: " + e.getMessage()));
        } finally {
            ReferenceCountUtil.release(msg);
        }
    }

    private void greeting(ChannelHandlerContext ctx, NbdGreeting g) {
        if (!g.has(FLAG_FIXED_NEWSTYLE)) {
            throw new NbdHandshakeException("Server does not support the fixed newstyle handshake");
        }
        int clientFlags = FLAG_FIXED_NEWSTYLE | (g.has(FLAG_NO_ZEROES) ? FLAG_NO_ZEROES : 0);
        ctx.write(new NbdClientFlags(clientFlags));
        send(ctx, OPT_STRUCTURED_REPLY, Unpooled.EMPTY_BUFFER);
    }

    private void reply(ChannelHandlerContext ctx, NbdOptionReply r) {
        if (r.option() != step) {
            throw new NbdHandshakeException("Unexpected option type " + r.option() + ", expected " + step);
        }
        switch (step) {
            case OPT_STRUCTURED_REPLY -> {
                if (r.type() == REP_ACK) {
                    structured = true;
                } else if (!r.isError()) {
                    throw new NbdHandshakeException("Unexpected reply type " + r.type() + " to NBD_OPT_STRUCTURED_REPLY");
                } else if (r.type() != REP_ERR_UNSUP && r.type() != REP_ERR_POLICY) {
                    throw error(r);
                }
                if (structured) {
                    ByteBuf data = ctx.alloc().buffer();
                    byte[] name = export.getBytes(StandardCharsets.UTF_8);
                    byte[] query = context.getBytes(StandardCharsets.UTF_8);
                    data.writeInt(name.length).writeBytes(name).writeInt(1).writeInt(query.length).writeBytes(query);
                    send(ctx, OPT_SET_META_CONTEXT, data);
                } else {
                    go(ctx);
                }
            }
            case OPT_SET_META_CONTEXT -> {
                if (r.type() == REP_META_CONTEXT) {
                    ByteBuf d = r.data();
                    int id = d.readInt();
                    String name = d.readCharSequence(d.readableBytes(), StandardCharsets.UTF_8).toString();
                    if (!name.equals(context)) {
                        throw new NbdHandshakeException("Failed to negotiate meta context '" + context
                                + "', server answered with different context '" + name + "'");
                    }
                    if (contextId >= 0) {
                        throw new NbdHandshakeException("Server answered with more than one context");
                    }
                    contextId = id;
                    return; // the ACK follows
                }
                if (r.type() == REP_ACK || r.type() == REP_ERR_UNSUP || r.type() == REP_ERR_POLICY) {
                    go(ctx); // without a context, block status says "all data", as QEMU's
                } else {
                    throw error(r);
                }
            }
            case OPT_GO -> {
                if (r.type() == REP_INFO) {
                    info(r.data());
                    return;
                }
                if (r.type() != REP_ACK) {
                    throw r.isError() ? error(r) : new NbdHandshakeException("Unexpected reply type " + r.type() + " to NBD_OPT_GO");
                }
                if (size < 0) {
                    throw new NbdHandshakeException("broken server omitted NBD_INFO_EXPORT");
                }
                step = -1;
                result.complete(new NbdExportInfo(size, flags, minBlock, preferred, maxBlock, structured, contextId));
            }
            default -> throw new NbdHandshakeException("unexpected option reply");
        }
    }

    private void info(ByteBuf d) {
        int type = d.readUnsignedShort();
        switch (type) {
            case INFO_EXPORT -> {
                size = d.readLong();
                flags = d.readUnsignedShort();
                if (size < 0) {
                    throw new NbdHandshakeException("export size " + Long.toUnsignedString(size) + " is too large");
                }
            }
            case INFO_BLOCK_SIZE -> {
                minBlock = d.readInt();
                preferred = d.readInt();
                maxBlock = d.readInt();
                if (minBlock <= 0 || Integer.bitCount(minBlock) != 1 || minBlock > 64 * 1024) {
                    throw new NbdHandshakeException("server minimum block size " + Integer.toUnsignedString(minBlock)
                            + " is not a power of two");
                }
                if (preferred < minBlock || Integer.bitCount(preferred) != 1) {
                    throw new NbdHandshakeException("server preferred block size " + Integer.toUnsignedString(preferred)
                            + " is not valid");
                }
                if (maxBlock != -1 && (maxBlock < minBlock || maxBlock % minBlock != 0)) {
                    throw new NbdHandshakeException("server maximum block size " + Integer.toUnsignedString(maxBlock)
                            + " is not valid");
                }
                if (maxBlock == -1) {
                    maxBlock = 0; // UINT32_MAX: no limit of its own
                }
            }
            default -> {
                // NBD_INFO_NAME, NBD_INFO_DESCRIPTION and later types: not asked, ignored as QEMU does
            }
        }
    }

    private void go(ChannelHandlerContext ctx) {
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        ByteBuf data = ctx.alloc().buffer(4 + name.length + 4);
        data.writeInt(name.length).writeBytes(name).writeShort(1).writeShort(INFO_BLOCK_SIZE);
        send(ctx, OPT_GO, data);
    }

    private void send(ChannelHandlerContext ctx, int option, ByteBuf data) {
        step = option;
        ctx.writeAndFlush(new NbdOption(option, data));
    }

    /** QEMU's {@code nbd_handle_reply_err} messages. */
    private static NbdHandshakeException error(NbdOptionReply r) {
        String opt = optionName(r.option());
        String what = r.option() + " (" + opt + ")";
        String m = switch (r.type()) {
            case REP_ERR_POLICY -> "Denied by server for option " + what;
            case REP_ERR_INVALID -> "Invalid parameters for option " + what;
            case REP_ERR_UNSUP -> "Server lacks support for option " + what;
            case REP_ERR_UNKNOWN -> "Requested export not available";
            case 0x80000005 -> "TLS negotiation required before option " + what;
            case 0x80000007 -> "Server shutting down before option " + what;
            case 0x80000008 -> "Server requires INFO_BLOCK_SIZE for option " + what;
            default -> "Unknown error code when asking for option " + what;
        };
        return new NbdHandshakeException(m);
    }

    private static String optionName(int option) {
        return switch (option) {
            case OPT_STRUCTURED_REPLY -> "structured reply";
            case OPT_SET_META_CONTEXT -> "set meta context";
            case OPT_GO -> "go";
            default -> "option " + option;
        };
    }

    private void fail(ChannelHandlerContext ctx, Throwable e) {
        if (result.completeExceptionally(e)) {
            ctx.close();
        }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        Throwable c = cause.getCause() != null && cause instanceof io.netty.handler.codec.DecoderException
                ? cause.getCause() : cause;
        fail(ctx, new NbdHandshakeException(c.getMessage() == null ? c.toString() : c.getMessage()));
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        result.completeExceptionally(new NbdHandshakeException("Connection closed"));
        ctx.fireChannelInactive();
    }

    /** A handshake that failed, with QEMU's message. */
    static final class NbdHandshakeException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        NbdHandshakeException(String message) {
            super(message);
        }
    }
}
