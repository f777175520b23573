package io.blockjobs.platform.qmp;

import io.blockjobs.sdk.error.CommandException;
import java.io.ByteArrayOutputStream;
import java.security.GeneralSecurityException;
import java.util.Arrays;
import javax.crypto.Cipher;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The decoding a {@code secret} object does, as QEMU's {@code util/base64.c} (glib's lenient
 * decoder behind QEMU's character check) and {@code crypto/secret_common.c} (AES-256-CBC with a
 * key from another secret, a base64 IV, and QEMU's own padding check), with QEMU's messages.
 */
final class SecretCrypto {
    private static final String BASE64_CHARS =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";

    private SecretCrypto() {
    }

    /**
     * QEMU's {@code qbase64_decode}: NULs and characters outside the alphabet (plus {@code =} and
     * newline) are refused; then glib's {@code g_base64_decode}, which skips newlines, takes
     * {@code =} as a zero digit that emits no byte, and drops an incomplete last group.
     */
    static byte[] base64(byte[] input) {
        for (byte b : input) {
            if (b == 0) {
                throw new CommandException("Base64 data contains embedded NUL characters");
            }
        }
        for (byte b : input) {
            if (BASE64_CHARS.indexOf(b & 0xff) < 0) {
                throw new CommandException("Base64 data contains invalid characters");
            }
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(input.length * 3 / 4 + 3);
        int value = 0;
        int digits = 0;
        int last0 = 0;
        int last1 = 0;
        for (byte b : input) {
            int c = b & 0xff;
            if (c == '\n') {
                continue;
            }
            int rank = c == '=' ? 0 : BASE64_CHARS.indexOf(c);
            last1 = last0;
            last0 = c;
            value = value << 6 | rank;
            if (++digits == 4) {
                out.write(value >> 16);
                if (last1 != '=') {
                    out.write(value >> 8);
                }
                if (last0 != '=') {
                    out.write(value);
                }
                digits = 0;
            }
        }
        return out.toByteArray();
    }

    /**
     * QEMU's {@code qcrypto_secret_decrypt} once the key is found: the key must be 32 bytes, the
     * IV (base64) 16; the data (base64 first if {@code base64}) a multiple of the block size. The
     * last byte says how many padding bytes to drop (at most 16); QEMU checks nothing else.
     */
    static byte[] decrypt(byte[] key, String iv, byte[] input, boolean base64) {
        if (key.length != 32) {
            throw new CommandException("Key should be 32 bytes in length");
        }
        if (iv == null) {
            throw new CommandException("IV is required to decrypt secret");
        }
        byte[] ivBytes = base64(iv.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        if (ivBytes.length != 16) {
            throw new CommandException("IV should be 16 bytes in length not " + ivBytes.length);
        }
        byte[] ciphertext = base64 ? base64(input) : input;
        if (ciphertext.length % 16 != 0) {
            throw new CommandException("Length " + ciphertext.length + " must be a multiple of block size 16");
        }
        if (ciphertext.length == 0) {
            return ciphertext; // QEMU reads before its buffer here; nothing to unpad
        }
        byte[] plain;
        try {
            Cipher aes = Cipher.getInstance("AES/CBC/NoPadding");
            aes.init(Cipher.DECRYPT_MODE, new SecretKeySpec(key, "AES"), new IvParameterSpec(ivBytes));
            plain = aes.doFinal(ciphertext);
        } catch (GeneralSecurityException e) {
            throw new CommandException("Cannot decrypt secret: " + e.getMessage());
        }
        int pad = plain[plain.length - 1] & 0xff;
        if (pad > 16 || pad > plain.length) {
            throw new CommandException("Incorrect number of padding bytes (" + pad + ") found on decrypted data");
        }
        byte[] result = Arrays.copyOf(plain, plain.length - pad);
        Arrays.fill(plain, (byte) 0);
        return result;
    }
}
