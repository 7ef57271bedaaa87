"""WeChat's safe mode ("安全模式"): the message encryption of the Official Accounts Platform, sans-IO.

As the platform's message interface specifies it:

- the key is ``base64decode(EncodingAESKey + "=")``: 43 characters give 32 bytes (AES-256); the IV is the
  key's first 16 bytes;
- the plaintext is 16 random bytes, the message's length as 4 bytes big-endian, the message (the XML) and
  the account's AppId;
- it is padded PKCS#7-style to a multiple of 32 bytes (not AES's block of 16), encrypted with AES-CBC and
  sent base64-encoded in ``<Encrypt>``.

Bytes and strings in, bytes and strings out: no I/O, no clock, and the random bytes are the caller's, so a
test can build the platform's envelope byte for byte. Every refusal is a ``CryptoError`` naming what is
wrong; an envelope for another AppId is a ``WrongAppId``.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["BLOCK", "CryptoError", "WrongAppId", "aes_key", "decrypt", "encrypt"]

BLOCK = 32  # the padding's block: WeChat pads to 32 bytes, not to AES's 16
RANDOM = 16
ENCODING_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")


class CryptoError(ValueError):
    """An envelope that does not open: not base64, not whole blocks, bad padding or length."""


class WrongAppId(CryptoError):
    """The envelope opened, but it was sealed for another official account."""


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of an EncodingAESKey (43 letters and digits, as the platform generates it)."""
    if not isinstance(encoding_aes_key, str) or not ENCODING_AES_KEY.fullmatch(encoding_aes_key):
        raise ValueError("the EncodingAESKey must be 43 letters and digits, as the platform shows it")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("the EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise ValueError("the EncodingAESKey does not decode to 32 bytes")
    return key


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    if len(key) != 32:
        raise ValueError("the AES key must be 32 bytes (aes_key() of the EncodingAESKey)")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def encrypt(message: bytes, *, key: bytes, app_id: str, random: bytes) -> str:
    """``message`` sealed for ``app_id`` as ``<Encrypt>`` holds it; ``random`` is 16 bytes (``os.urandom(16)``)."""
    if len(random) != RANDOM:
        raise ValueError(f"random must be {RANDOM} bytes")
    plain = random + len(message).to_bytes(4, "big") + message + app_id.encode("utf-8")
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    encryptor = _cipher(key).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def decrypt(encrypted: str, *, key: bytes, app_id: str) -> bytes:
    """The message sealed in ``encrypted`` (``<Encrypt>``'s text), checked to be for ``app_id``."""
    try:
        sealed = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("Encrypt is not base64") from None
    if not sealed or len(sealed) % BLOCK:
        raise CryptoError(f"Encrypt is not whole blocks of {BLOCK} bytes")
    decryptor = _cipher(key).decryptor()
    plain = decryptor.update(sealed) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise CryptoError("Encrypt does not open with this EncodingAESKey (bad padding)")
    plain = plain[:-pad]
    if len(plain) < RANDOM + 4:
        raise CryptoError("Encrypt is too short to hold a message")
    length = int.from_bytes(plain[RANDOM:RANDOM + 4], "big")
    message, rest = plain[RANDOM + 4:RANDOM + 4 + length], plain[RANDOM + 4 + length:]
    if len(message) != length:
        raise CryptoError("Encrypt holds a message length beyond its end")
    if rest != app_id.encode("utf-8"):
        raise WrongAppId("the message is sealed for another official account (AppId)")
    return message
