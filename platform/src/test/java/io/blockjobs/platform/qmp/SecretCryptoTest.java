package io.blockjobs.platform.qmp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.SplittableRandom;
import javax.crypto.Cipher;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** {@link SecretCrypto}: glib's lenient base64 behind QEMU's checks, and QEMU's AES-CBC unpadding. */
class SecretCryptoTest {
    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.US_ASCII);
    }

    @Test
    void base64DecodesAsGlibDoes() {
        assertThat(SecretCrypto.base64(b("aGVsbG8="))).isEqualTo(b("hello"));
        assertThat(SecretCrypto.base64(b("aGVs\nbG8=\n"))).isEqualTo(b("hello")); // newlines skipped
        assertThat(SecretCrypto.base64(b("aGVsbG8"))).isEqualTo(b("hel"));       // incomplete group dropped
        assertThat(SecretCrypto.base64(b("aGV"))).isEmpty();
        assertThat(SecretCrypto.base64(b(""))).isEmpty();
        assertThatThrownBy(() -> SecretCrypto.base64(b("aGV!"))).hasMessage("Base64 data contains invalid characters");
        assertThatThrownBy(() -> SecretCrypto.base64(new byte[] {'a', 0, 'b'}))
                .hasMessage("Base64 data contains embedded NUL characters");
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3})
    void base64AgreesWithTheJdkOnCanonicalInput(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        byte[] data = new byte[r.nextInt(200)];
        r.nextBytes(data);
        assertThat(SecretCrypto.base64(b(Base64.getEncoder().encodeToString(data)))).as("seed %d", seed).isEqualTo(data);
    }

    @Test
    void decryptChecksAsQemuDoes() throws Exception {
        byte[] key = new byte[32];
        byte[] iv = new byte[16];
        new SplittableRandom(7).nextBytes(key);
        String ivText = Base64.getEncoder().encodeToString(iv);
        Cipher c = Cipher.getInstance("AES/CBC/PKCS5Padding");
        c.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(key, "AES"), new IvParameterSpec(iv));
        byte[] cipher = c.doFinal(b("hello"));
        assertThat(SecretCrypto.decrypt(key, ivText, cipher, false)).isEqualTo(b("hello"));
        assertThat(SecretCrypto.decrypt(key, ivText, b(Base64.getEncoder().encodeToString(cipher)), true))
                .isEqualTo(b("hello"));
        assertThatThrownBy(() -> SecretCrypto.decrypt(new byte[16], ivText, cipher, false))
                .hasMessage("Key should be 32 bytes in length");
        assertThatThrownBy(() -> SecretCrypto.decrypt(key, null, cipher, false))
                .hasMessage("IV is required to decrypt secret");
        assertThatThrownBy(() -> SecretCrypto.decrypt(key, "aGVsbG8=", cipher, false))
                .hasMessage("IV should be 16 bytes in length not 5");
        assertThatThrownBy(() -> SecretCrypto.decrypt(key, ivText, b("x"), false))
                .hasMessage("Length 1 must be a multiple of block size 16");
    }
}
