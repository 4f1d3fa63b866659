"""Payload encryption with the cluster key: Fernet (spec v0x80), keyed as Wazuh keys it.

Wazuh builds ``Fernet(base64.b64encode(key.encode()))`` from the 32-character cluster key,
so the signing key is key bytes 0-15 and the AES-128-CBC key is bytes 16-31. We implement
the token format on the ``cryptography`` primitives so that the IV and the timestamp can be
injected (byte-exact golden vectors) and no TTL is ever applied, as in the reference.
Pure functions: no I/O, no Twisted.
"""

from __future__ import annotations

import binascii
import hmac
import os
import struct
import time
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

try:  # SIMD base64 (byte-identical output): ~5x binascii on large tokens, no translate pass
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover - pybase64 is a dependency; binascii is the fallback
    _pybase64 = None  # type: ignore[assignment]

_VERSION = b"\x80"
_HMAC_SIZE = 32
_MIN_TOKEN = 1 + 8 + 16 + 16 + _HMAC_SIZE  # version, time, iv, one block, hmac


class PayloadCodec(Protocol):
    """What the cluster protocol needs from a payload codec (FernetCodec, or a per-link one)."""

    def encrypt(self, data: bytes) -> bytes:
        """Payload as it goes on the wire."""

    def decrypt(self, token: bytes) -> bytes:
        """Plaintext of a received payload; :class:`DecryptionError` if invalid."""


class DecryptionError(Exception):
    """A payload is not a valid token for the cluster key (wrong key or corrupted)."""


def token_length(plaintext_length: int) -> int:
    """Length of the base64 token for a plaintext of ``plaintext_length`` bytes."""
    raw = 57 + 16 * (plaintext_length // 16 + 1)
    return 4 * ((raw + 2) // 3)


class FernetCodec:
    """Encrypts and decrypts payloads with a 32-byte cluster key.

    :param key: the 32 ASCII bytes of the configured ``<key>``.
    :param iv_source: returns 16 random bytes (injected for golden vectors).
    :param time_source: returns the current UNIX time (injected for golden vectors).
    """

    def __init__(self, key: bytes, *, iv_source: Callable[[int], bytes] = os.urandom,
                 time_source: Callable[[], float] = time.time) -> None:
        if len(key) != 32:
            raise ValueError("the cluster key must be exactly 32 bytes")
        self._signing_key = key[:16]
        self._aes = algorithms.AES(key[16:])
        self._sha256 = hashes.SHA256()
        self._iv_source = iv_source
        self._time_source = time_source

    def encrypt(self, data: bytes) -> bytes:
        """Return the base64url Fernet token of ``data``.

        The token's bytes (version, time, IV, ciphertext, HMAC) are written into one
        buffer: AES writes the ciphertext in place and the PKCS7 padding is built for the
        last block only, so a large payload is not copied on the way (it is read by AES,
        by the HMAC and by base64, once each).
        """
        iv = self._iv_source(16)
        now = int(self._time_source())
        size = len(data)
        whole = size - size % 16
        pad = 16 - size % 16
        if size < _IN_PLACE:  # small: fewer calls beat fewer copies
            encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
            basic = b"".join((_VERSION, struct.pack(">Q", now), iv,
                              encryptor.update(data + _PADDING[pad]), encryptor.finalize()))
            h = HMAC(self._signing_key, self._sha256)
            h.update(basic)
            return _b64_encode(basic + h.finalize())
        body = 25 + whole + 16  # version, time, IV, ciphertext
        buf = bytearray(body + _HMAC_SIZE + 15)  # update_into needs a block of slack
        buf[0] = 0x80
        struct.pack_into(">Q", buf, 1, now)
        buf[9:25] = iv
        out = memoryview(buf)
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        if whole:
            encryptor.update_into(memoryview(data)[:whole], out[25:25 + whole + 15])
        encryptor.update_into(bytes(data[whole:]) + _PADDING[pad],
                              out[25 + whole:body + 15])
        encryptor.finalize()
        h = HMAC(self._signing_key, self._sha256)
        h.update(out[:body])
        buf[body:body + _HMAC_SIZE] = h.finalize()
        del out
        del buf[body + _HMAC_SIZE:]
        return _b64_encode(buf)

    def decrypt(self, token: bytes) -> bytes:
        """Return the plaintext of ``token``; raise :class:`DecryptionError` if invalid."""
        try:
            raw = _b64_decode(token)
        except (binascii.Error, ValueError, TypeError) as e:
            raise DecryptionError("payload is not base64") from e
        if len(raw) < _MIN_TOKEN or raw[:1] != _VERSION or (len(raw) - 57) % 16:
            raise DecryptionError("payload is not a Fernet token")
        view = memoryview(raw)
        h = HMAC(self._signing_key, self._sha256)
        h.update(view[:-_HMAC_SIZE])
        if not hmac.compare_digest(h.finalize(), raw[-_HMAC_SIZE:]):
            raise DecryptionError("payload signature does not match the cluster key")
        decryptor = Cipher(self._aes, modes.CBC(raw[9:25])).decryptor()
        if len(raw) < _IN_PLACE:
            padded = decryptor.update(view[25:-_HMAC_SIZE]) + decryptor.finalize()
            pad = padded[-1]
            if not 1 <= pad <= 16 or padded[-pad:] != _PADDING[pad]:
                raise DecryptionError("payload padding is invalid")
            return padded[:-pad]
        # All blocks but the last, then the last one whose PKCS7 padding is checked and
        # cut: the plaintext is copied once at most (not at all when the padding is a
        # whole block, i.e. for plaintexts of a multiple of 16 bytes).
        head = decryptor.update(view[25:-_HMAC_SIZE - 16])
        last = decryptor.update(view[-_HMAC_SIZE - 16:-_HMAC_SIZE]) + decryptor.finalize()
        pad = last[-1]
        if not 1 <= pad <= 16 or last[16 - pad:] != _PADDING[pad]:
            raise DecryptionError("payload padding is invalid")
        if pad == 16:
            return head
        return head + last[:16 - pad]


#: From this size on, a payload is encrypted in place and decrypted in two parts.
_IN_PLACE = 64 * 1024
#: PKCS7 padding of each length.
_PADDING = [bytes((n,)) * n for n in range(17)]
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_URLSAFE = b"-_"


def _binascii_encode(data: bytes | bytearray) -> bytes:
    """base64url of ``data`` with padding, no newline (the standard library's way)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE)


def _binascii_decode(token: bytes) -> bytes:
    """The bytes of a padded base64url ``token``; only base64 characters are allowed
    (``binascii.Error`` otherwise)."""
    return binascii.a2b_base64(token.translate(_FROM_URLSAFE), strict_mode=True)


def _pybase64_encode(data: bytes | bytearray) -> bytes:
    """:func:`_binascii_encode` with pybase64 (the same bytes)."""
    encoded: bytes = _pybase64.b64encode(data, altchars=_URLSAFE)
    return encoded


def _pybase64_decode(token: bytes) -> bytes:
    """:func:`_binascii_decode` with pybase64 (``validate``: only base64 characters and
    correct padding are allowed; it also refuses data after the padding)."""
    decoded: bytes = _pybase64.b64decode(token, altchars=_URLSAFE, validate=True)
    return decoded


#: The base64url functions the codec uses: pybase64's when it is installed.
_b64_encode: Callable[[bytes | bytearray], bytes] = (
    _binascii_encode if _pybase64 is None else _pybase64_encode)
_b64_decode: Callable[[bytes], bytes] = (
    _binascii_decode if _pybase64 is None else _pybase64_decode)
