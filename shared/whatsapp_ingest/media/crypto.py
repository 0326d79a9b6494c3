"""WhatsApp's media encryption, as Baileys (src/Utils/messages-media.ts) and
whatsmeow (download.go) implement it, written with `cryptography`:

- the 32-byte media key is expanded with HKDF-SHA256 (no salt) and the media
  type's info string to 112 bytes: IV (16), AES key (32), MAC key (32), ref key;
- the file on WhatsApp's CDN is AES-256-CBC(plaintext, PKCS#7) followed by the
  first 10 bytes of HMAC-SHA256(MAC key, IV || ciphertext);
- fileEncSha256 is the SHA-256 of that whole file, fileSha256 of the plaintext.

Decryption streams: each chunk is hashed, MACed and decrypted as it arrives,
and the last 10 bytes (the MAC) are held back until the end.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAC_LENGTH = 10
#: HKDF info per message type (stickers are images to WhatsApp).
INFO: dict[str, bytes] = {
    "image": b"WhatsApp Image Keys",
    "sticker": b"WhatsApp Image Keys",
    "video": b"WhatsApp Video Keys",
    "audio": b"WhatsApp Audio Keys",
    "document": b"WhatsApp Document Keys",
}


class MediaIntegrityError(ValueError):
    """The file is not what the message says it is (hash or MAC mismatch, bad padding)."""


@dataclass(frozen=True)
class MediaKeys:
    iv: bytes
    cipher_key: bytes
    mac_key: bytes


def media_keys(media_key: bytes, message_type: str) -> MediaKeys:
    """The IV, AES key and MAC key a media key expands to for this message type."""
    if len(media_key) != 32:
        raise MediaIntegrityError("media_key must be 32 bytes")
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=INFO[message_type]).derive(media_key)
    return MediaKeys(iv=expanded[:16], cipher_key=expanded[16:48], mac_key=expanded[48:80])


def encrypt(plaintext: bytes, media_key: bytes, message_type: str) -> bytes:
    """What WhatsApp's CDN serves for `plaintext` (tests, bench and the local demo build their files with it)."""
    keys = media_keys(media_key, message_type)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    mac = hmac.new(keys.mac_key, keys.iv + ciphertext, hashlib.sha256).digest()[:MAC_LENGTH]
    return ciphertext + mac


class StreamDecryptor:
    """Feed the encrypted file chunk by chunk; `update` returns plaintext as it is known,
    `finalize` checks the MAC and fileEncSha256 and returns the last plaintext."""

    def __init__(self, media_key: bytes, message_type: str, file_enc_sha256: bytes | None = None) -> None:
        keys = media_keys(media_key, message_type)
        self._mac = hmac.new(keys.mac_key, keys.iv, hashlib.sha256)
        self._enc_sha256 = hashlib.sha256()
        self._expected_enc_sha256 = file_enc_sha256
        self._decryptor = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).decryptor()
        self._unpadder = padding.PKCS7(128).unpadder()
        self._tail = b""

    def update(self, chunk: bytes) -> bytes:
        self._enc_sha256.update(chunk)
        if len(chunk) < MAC_LENGTH:
            data = self._tail + chunk
            self._tail = data[-MAC_LENGTH:]
            return self._feed(data[:-MAC_LENGTH])
        # The bytes held back last time, then this chunk but its last 10 (which may be the MAC):
        # through a view, so a chunk is not copied before it is decrypted.
        view = memoryview(chunk)
        head = self._feed(self._tail)
        self._tail = bytes(view[-MAC_LENGTH:])
        body = self._feed(view[:-MAC_LENGTH])
        return head + body if head else body

    def _feed(self, data: bytes | memoryview) -> bytes:
        self._mac.update(data)
        return self._unpadder.update(self._decryptor.update(data))

    def finalize(self) -> bytes:
        if len(self._tail) != MAC_LENGTH:
            raise MediaIntegrityError("the encrypted file is shorter than its MAC")
        if self._expected_enc_sha256 is not None and not hmac.compare_digest(
            self._enc_sha256.digest(), self._expected_enc_sha256
        ):
            raise MediaIntegrityError("file_enc_sha256 does not match the downloaded file")
        if not hmac.compare_digest(self._mac.digest()[:MAC_LENGTH], self._tail):
            raise MediaIntegrityError("the file's MAC does not match its media_key")
        try:
            return self._unpadder.update(self._decryptor.finalize()) + self._unpadder.finalize()
        except ValueError:
            raise MediaIntegrityError("the decrypted file's padding is invalid") from None
