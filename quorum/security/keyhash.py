"""How API key secrets are stored: HMAC-SHA256 under a server-side hashing key.

A secret carries 256 random bits, so its stored hash needs no work factor to make a leaked
table useless: guessing is hopeless at any speed. A keyed hash is as safe, and more: without
the hashing key a leaked table cannot even be used to test a guess. Checking one costs
microseconds, where scrypt cost about 11 ms per key and process.

The hashing key (QUORUM_API_KEY_HASH_KEY) is a secret of its own rather than one derived
from the master key: every service checks keys, but only ingest, tasking and access hold
the master key, which opens every stored object and TOTP secret. Holding the hashing key
does not let anyone make or recover a key; a master key rotation leaves the hashes alone.

Stored formats (the ``secret_hash`` column):

* ``hmac-sha256$<hashing key id>$<digest>``: HMAC-SHA256 of ``quorum.api-key \\0 <key id> \\0
  <secret>`` under the hashing key, base64url; the hashing key id is 16 hex digits of that
  key's SHA-256 (:func:`quorum.crypto.key_id_of`), so rotation knows which key to use.
* ``scrypt$<N>$<r>$<p>$<salt>$<digest>``: how keys were stored before; still verified.

A hash under a previous hashing key, or under scrypt, is *outdated*: it verifies, and the
caller re-hashes it under the current key (:class:`quorum.security.keys.Authenticator` does,
on the key's next successful check). A hash under a hashing key no longer configured
never verifies again: that key must be re-issued.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
from collections.abc import Iterable

from quorum.crypto import ConfiguredKey, key_id_of, keys_by_id, load_configured_keys
from quorum.settings import Settings

HMAC_SCHEME = "hmac-sha256"
SCRYPT_SCHEME = "scrypt"
# Binds each hash to its key id: a stored hash copied onto another key's row does not verify.
_MAC_PREFIX = b"quorum.api-key\x00"
# The scrypt parameters keys were stored with before the keyed hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**12, 8, 1

API_KEY_HASH_KEY = ConfiguredKey(
    what="API key hashing key",
    variable="QUORUM_API_KEY_HASH_KEY",
    previous_variable="QUORUM_PREVIOUS_API_KEY_HASH_KEYS",
    file_name="api-key-hash.key",
    command="quorum keys new-hash-key",
)


class HashCheck(enum.Enum):
    """What checking a secret against a stored hash found."""

    CURRENT = "current"
    # Verified, under a previous hashing key or scrypt: re-hash it under the current key.
    OUTDATED = "outdated"
    MISMATCH = "mismatch"
    # Hashed under a hashing key this process does not hold: it cannot tell.
    UNKNOWN_HASHING_KEY = "unknown hashing key"

    @property
    def verified(self) -> bool:
        return self in (HashCheck.CURRENT, HashCheck.OUTDATED)


class KeyHasher:
    """Hashes secrets under the current hashing key; checks them under it, the previous
    ones and the scrypt format. Raises ValueError when a key is not 32 bytes. The repr
    shows hashing key ids only."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self._keys = keys_by_id(current, previous, "hashing key")
        self._current_id = key_id_of(current)

    def __repr__(self) -> str:
        previous = [kid for kid in self._keys if kid != self._current_id]
        return f"KeyHasher(current={self._current_id}, previous={previous})"

    @property
    def current_id(self) -> str:
        return self._current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every hashing key id this hasher checks under, the current one first."""
        return tuple(self._keys)

    def hash(self, key_id: str, secret: str) -> str:
        """The stored form of ``secret``, under the current hashing key."""
        digest = _mac(self._keys[self._current_id], key_id, secret)
        return f"{HMAC_SCHEME}${self._current_id}${base64.urlsafe_b64encode(digest).decode()}"

    def check(self, key_id: str, secret: str, stored: str) -> HashCheck:
        """Whether ``secret`` is the one ``stored`` was made from, in constant time."""
        scheme, _, rest = stored.partition("$")
        if scheme == SCRYPT_SCHEME:
            return HashCheck.OUTDATED if _scrypt_matches(secret, stored) else HashCheck.MISMATCH
        if scheme != HMAC_SCHEME:
            return HashCheck.MISMATCH
        hashing_key_id, _, digest = rest.partition("$")
        key = self._keys.get(hashing_key_id)
        if key is None:
            return HashCheck.UNKNOWN_HASHING_KEY
        try:
            expected = base64.urlsafe_b64decode(digest)
        except ValueError:
            return HashCheck.MISMATCH
        if not hmac.compare_digest(_mac(key, key_id, secret), expected):
            return HashCheck.MISMATCH
        return HashCheck.CURRENT if hashing_key_id == self._current_id else HashCheck.OUTDATED


def hashed_under(stored: str) -> str:
    """What produced a stored hash: the hashing key id, ``scrypt``, or ``unknown format``."""
    scheme, _, rest = stored.partition("$")
    if scheme == HMAC_SCHEME:
        return rest.partition("$")[0]
    return SCRYPT_SCHEME if scheme == SCRYPT_SCHEME else "unknown format"


def load_key_hasher(settings: Settings) -> KeyHasher:
    """The hasher QUORUM_API_KEY_HASH_KEY and QUORUM_PREVIOUS_API_KEY_HASH_KEYS describe.

    Unset, the embedded default's ``<home>/secrets/api-key-hash.key`` is used, created on
    first use, unless the access database is shared: then every service must be given the
    same key, and its absence is an error. Raises quorum.crypto.KeyConfigError naming the
    variable or file, never the key; costs a file read at most.
    """
    current, previous = load_configured_keys(
        API_KEY_HASH_KEY,
        settings.api_key_hash_key,
        settings.previous_api_key_hash_keys,
        settings.home,
        required_because="the access database is shared (not SQLite)" if settings.access_database_is_shared() else None,
    )
    return KeyHasher(current, previous)


def _mac(key: bytes, key_id: str, secret: str) -> bytes:
    message = _MAC_PREFIX + key_id.encode() + b"\x00" + secret.encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def legacy_scrypt_hash(secret: str) -> str:
    """``secret`` in the scrypt format keys were stored in before the keyed hash; nothing
    writes it any more but tests and benchmarks of rows from then."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"{SCRYPT_SCHEME}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _scrypt_matches(secret: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
        expected = base64.urlsafe_b64decode(digest)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
