"""Encryption at rest, keyed hashes for look-ups, and password/PIN hashing.

Sensitive columns hold Fernet tokens made with keys kept outside the database
(MultiFernet: the first key encrypts, every key decrypts, so keys can be
rotated). Phone numbers are also stored as a keyed hash so staff can find a
member by phone without any plaintext phone in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class Vault:
    def __init__(self, keys: list[str]):
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self.keys = list(keys)
        self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])

    def encrypt(self, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:  # a key was removed too early, or the data was altered
            raise ValueError("cannot decrypt a stored field with the configured keys") from exc

    def rotate(self, token: str | None) -> str | None:
        """Re-encrypt under the primary key."""
        if token is None:
            return None
        return self._fernet.rotate(token.encode()).decode()


_PHONE_JUNK = re.compile(r"[\s\-().]")


def normalise_phone(raw: str, default_country: str = "91") -> str:
    """E.164 form (+91XXXXXXXXXX). Raises ValueError for something that is not a phone number."""
    value = _PHONE_JUNK.sub("", raw or "")
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+"):
        value = value.lstrip("0")
        if len(value) == 10:
            value = "+" + default_country + value
        else:
            value = "+" + value
    digits = value[1:]
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise ValueError("not a phone number")
    return value


class KeyedHasher:
    def __init__(self, key: bytes):
        self._key = key

    def __call__(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()


# argon2id with the library's RFC 9106 "low memory" profile: fast enough on a
# 2-core server under a login burst, far beyond what offline guessing can afford.
_hasher = PasswordHasher()


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    if not stored_hash:
        # Still spend the time, so the reply time does not tell whether the user exists.
        try:
            _hasher.verify(_DUMMY_HASH, secret)
        except (VerificationError, InvalidHashError):
            pass
        return False
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("not-a-real-password")


def token_digest(token: str) -> str:
    """Digest for high-entropy random tokens (session ids, API tokens): SHA-256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()
