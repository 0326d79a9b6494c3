"""WhatsApp's media scheme against vectors built independently of the module: HKDF by
RFC 5869 with the standard library's hmac, AES-256-CBC and PKCS#7 by hand around
`cryptography`'s raw cipher, the MAC as Baileys and whatsmeow compute it (first 10
bytes of HMAC-SHA256 over IV || ciphertext). No published ciphertext vector was
found (the reference webhooks' base64 was cut short when published)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from whatsapp_ingest.media.crypto import INFO, MediaIntegrityError, StreamDecryptor, encrypt, media_keys

KEY = bytes(range(32))
PLAINTEXT = b"WhatsApp media test vector: una nota de voz"
#: sha256 of the encrypted file, per type, as the independent construction below gives it.
VECTORS = {
    "image": "754faddce44daeba751b514daa4fbf29b7eec9801e59a5ff82a64b6e36c797f7",
    "sticker": "754faddce44daeba751b514daa4fbf29b7eec9801e59a5ff82a64b6e36c797f7",
    "video": "c232e4630ab4b7ef27e758b2949be247f085d52194f650d1eb38358023c36740",
    "audio": "4fb79e71330381b2bcce65e957b87786db2f28f25119680afea24c21693fd8ee",
    "document": "2d675860b39d59c75465eba8d601a1b5a2a588103fcb25362b07a67aa0569698",
}


def rfc5869(ikm: bytes, info: bytes, length: int, salt: bytes = b"") -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def independent_encrypt(plaintext: bytes, key: bytes, info: bytes) -> bytes:
    expanded = rfc5869(key, info, 112)
    iv, cipher_key, mac_key = expanded[:16], expanded[16:48], expanded[48:80]
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    return ciphertext + hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:10]


def test_hkdf_without_salt_is_rfc5869_test_case_3() -> None:
    okm = HKDF(algorithm=hashes.SHA256(), length=42, salt=None, info=b"").derive(bytes([0x0B]) * 22)
    expected = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    assert okm.hex() == expected == rfc5869(bytes([0x0B]) * 22, b"", 42).hex()


@pytest.mark.parametrize("kind", list(VECTORS))
def test_encryption_matches_the_independently_built_vector(kind: str) -> None:
    built = independent_encrypt(PLAINTEXT, KEY, INFO[kind])
    assert hashlib.sha256(built).hexdigest() == VECTORS[kind]
    assert encrypt(PLAINTEXT, KEY, kind) == built
    assert media_keys(KEY, kind).iv == rfc5869(KEY, INFO[kind], 112)[:16]


@pytest.mark.parametrize("chunk", [1, 7, 10, 16, 33, 4096])
def test_streamed_decryption_gives_the_plaintext_whatever_the_chunking(chunk: int) -> None:
    data = bytes(range(256)) * 40 + b"tail"
    encrypted = encrypt(data, KEY, "document")
    decryptor = StreamDecryptor(KEY, "document", hashlib.sha256(encrypted).digest())
    out = b"".join(decryptor.update(encrypted[i : i + chunk]) for i in range(0, len(encrypted), chunk))
    assert out + decryptor.finalize() == data


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda e: e[:-1] + bytes([e[-1] ^ 1]), "MAC"),
        (lambda e: bytes([e[0] ^ 1]) + e[1:], "MAC"),
        (lambda e: e[:5], "shorter than its MAC"),
    ],
    ids=["mac-bit", "ciphertext-bit", "truncated"],
)
def test_a_damaged_file_fails_its_check(damage: object, reason: str) -> None:
    damaged = damage(encrypt(PLAINTEXT, KEY, "image"))  # type: ignore[operator]
    decryptor = StreamDecryptor(KEY, "image")
    decryptor.update(damaged)
    with pytest.raises(MediaIntegrityError, match=reason):
        decryptor.finalize()


def test_a_file_enc_sha256_mismatch_fails_before_decrypting() -> None:
    encrypted = encrypt(PLAINTEXT, KEY, "image")
    decryptor = StreamDecryptor(KEY, "image", hashlib.sha256(b"other").digest())
    decryptor.update(encrypted)
    with pytest.raises(MediaIntegrityError, match="file_enc_sha256"):
        decryptor.finalize()


def test_the_wrong_type_of_key_does_not_decrypt() -> None:
    decryptor = StreamDecryptor(KEY, "video")
    decryptor.update(encrypt(PLAINTEXT, KEY, "image"))
    with pytest.raises(MediaIntegrityError):
        decryptor.finalize()
