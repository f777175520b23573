package io.blockjobs.platform.qmp;

/**
 * QEMU's JSON lexer (qobject/json-lexer.c in QEMU 7.2), fed one byte at a time: the same state
 * table, so the same bytes make the same tokens and the same errors. Its extensions over RFC 8259
 * are QEMU's: single-quoted strings and the {@code \'} escape. Strings may hold any byte from
 * 0x20 to 0xFD; checking their UTF-8 is left to the parser, as in QEMU.
 *
 * <p>After a lexical error it skips input up to a structural character, an ASCII control
 * character other than tab, or one of the impossible UTF-8 bytes 0xFE and 0xFF, as QEMU does:
 * a stray quote costs one error, and the command on the next line is read.
 */
final class QmpJsonLexer {

    /** Receives tokens as byte ranges of the input, {@code [start, end)}. */
    interface Sink {
        void token(int type, int start, int end);

        /** A lexical error; {@code [start, end)} is the text that could not be a token. */
        void error(int start, int end);
    }

    // Lexer states. ERROR must be 0: the table's default.
    private static final int ERROR = 0;
    private static final int RECOVERY = 1;
    private static final int DQ_STRING_ESCAPE = 2;
    private static final int DQ_STRING = 3;
    private static final int SQ_STRING_ESCAPE = 4;
    private static final int SQ_STRING = 5;
    private static final int ZERO = 6;
    private static final int EXP_DIGITS = 7;
    private static final int EXP_SIGN = 8;
    private static final int EXP_E = 9;
    private static final int MANTISSA = 10;
    private static final int MANTISSA_DIGITS = 11;
    private static final int DIGITS = 12;
    private static final int SIGN = 13;
    private static final int KEYWORD = 14;
    private static final int START = 15;

    // Token types.
    static final int LCURLY = 16;
    static final int RCURLY = 17;
    static final int LSQUARE = 18;
    static final int RSQUARE = 19;
    static final int COLON = 20;
    static final int COMMA = 21;
    static final int INTEGER = 22;
    static final int FLOAT = 23;
    static final int KEYWORD_TOKEN = 24;
    static final int STRING = 25;

    /** Set on a transition that ends a token before the byte, which is then looked at again. */
    private static final int LOOKAHEAD = 0x80;

    private static final byte[][] TABLE = new byte[START + 1][256];

    static {
        set(RECOVERY, 0x00, 0x1F, START | LOOKAHEAD);
        set(RECOVERY, 0x20, 0xFD, RECOVERY);
        set(RECOVERY, 0xFE, 0xFF, START | LOOKAHEAD);
        set(RECOVERY, '\t', RECOVERY);
        for (char c : "[]{}:,".toCharArray()) {
            set(RECOVERY, c, START | LOOKAHEAD);
        }

        set(DQ_STRING_ESCAPE, 0x20, 0xFD, DQ_STRING);
        set(DQ_STRING, 0x20, 0xFD, DQ_STRING);
        set(DQ_STRING, '\\', DQ_STRING_ESCAPE);
        set(DQ_STRING, '"', STRING);
        set(SQ_STRING_ESCAPE, 0x20, 0xFD, SQ_STRING);
        set(SQ_STRING, 0x20, 0xFD, SQ_STRING);
        set(SQ_STRING, '\\', SQ_STRING_ESCAPE);
        set(SQ_STRING, '\'', STRING);

        set(ZERO, 0x00, 0xFF, INTEGER | LOOKAHEAD);
        set(ZERO, '0', '9', ERROR);
        set(ZERO, '.', MANTISSA);
        set(EXP_DIGITS, 0x00, 0xFF, FLOAT | LOOKAHEAD);
        set(EXP_DIGITS, '0', '9', EXP_DIGITS);
        set(EXP_SIGN, '0', '9', EXP_DIGITS);
        set(EXP_E, '-', EXP_SIGN);
        set(EXP_E, '+', EXP_SIGN);
        set(EXP_E, '0', '9', EXP_DIGITS);
        set(MANTISSA_DIGITS, 0x00, 0xFF, FLOAT | LOOKAHEAD);
        set(MANTISSA_DIGITS, '0', '9', MANTISSA_DIGITS);
        set(MANTISSA_DIGITS, 'e', EXP_E);
        set(MANTISSA_DIGITS, 'E', EXP_E);
        set(MANTISSA, '0', '9', MANTISSA_DIGITS);
        set(DIGITS, 0x00, 0xFF, INTEGER | LOOKAHEAD);
        set(DIGITS, '0', '9', DIGITS);
        set(DIGITS, 'e', EXP_E);
        set(DIGITS, 'E', EXP_E);
        set(DIGITS, '.', MANTISSA);
        set(SIGN, '0', ZERO);
        set(SIGN, '1', '9', DIGITS);

        set(KEYWORD, 0x00, 0xFF, KEYWORD_TOKEN | LOOKAHEAD);
        set(KEYWORD, 'a', 'z', KEYWORD);

        set(START, '"', DQ_STRING);
        set(START, '\'', SQ_STRING);
        set(START, '0', ZERO);
        set(START, '1', '9', DIGITS);
        set(START, '-', SIGN);
        set(START, '{', LCURLY);
        set(START, '}', RCURLY);
        set(START, '[', LSQUARE);
        set(START, ']', RSQUARE);
        set(START, ',', COMMA);
        set(START, ':', COLON);
        set(START, 'a', 'z', KEYWORD);
        for (char c : " \t\r\n".toCharArray()) {
            set(START, c, START);
        }
    }

    private static void set(int state, int from, int to, int next) {
        for (int c = from; c <= to; c++) {
            TABLE[state][c] = (byte) next;
        }
    }

    private static void set(int state, int c, int next) {
        TABLE[state][c] = (byte) next;
    }

    private final Sink sink;
    private int state = START;
    private int tokenStart = -1; // where the token being read began; -1 while there is none

    QmpJsonLexer(Sink sink) {
        this.sink = sink;
    }

    /** Feeds the byte at {@code pos}. */
    void feed(byte b, int pos) {
        int ch = b & 0xFF;
        boolean consumed = false;
        while (!consumed) {
            int next = TABLE[state][ch] & 0xFF;
            consumed = (next & LOOKAHEAD) == 0;
            next &= ~LOOKAHEAD;
            if (consumed && tokenStart < 0) {
                tokenStart = pos;
            }
            switch (next) {
                case LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA, INTEGER, FLOAT, KEYWORD_TOKEN, STRING -> {
                    sink.token(next, tokenStart, consumed ? pos + 1 : pos);
                    tokenStart = -1;
                    next = START;
                }
                case START, RECOVERY -> tokenStart = -1;
                case ERROR -> {
                    sink.error(tokenStart, pos + 1);
                    tokenStart = -1;
                    next = RECOVERY;
                }
                default -> {
                }
            }
            state = next;
        }
    }

    /** Where the token being read began, or -1 when none is. */
    int tokenStart() {
        return tokenStart;
    }

    /** Moves the positions it holds back by {@code n}, after the caller dropped {@code n} bytes. */
    void shift(int n) {
        if (tokenStart >= 0) {
            tokenStart -= n;
        }
    }

    /** Ends the input: a pending number or keyword becomes a token, as at QEMU's flush. */
    void end(int pos) {
        feed((byte) ' ', pos);
    }
}
