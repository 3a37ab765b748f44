"""Envelope encryption under a master key from the configuration.

The master key never encrypts data itself: it wraps random per-object *data keys*, so a
rotation re-wraps a few dozen bytes per object instead of re-encrypting media. Every output
names the master key that produced it by its key id (the first 16 hex digits of the key's
SHA-256, never the key), so a keyring holding the current key and the previous ones reads
everything written before a rotation.

Formats, all AES-256-GCM with random 96-bit nonces; the header bytes are authenticated
together with the caller's associated data:

* wrapped key: ``0x01 | key id (8 bytes) | nonce (12) | ciphertext + tag (16)``
* sealed blob: ``0x01 | length of the wrapped key (2, big-endian) | wrapped key | nonce (12) | ciphertext + tag``
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from quorum.settings import Settings

MASTER_KEY_BYTES = 32
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_BYTES = 8
TAG_BYTES = 16

_WRAP_VERSION = 1
_SEAL_VERSION = 1
_WRAP_HEADER = struct.Struct(f">B{KEY_ID_BYTES}s")
_SEAL_HEADER = struct.Struct(">BH")
# Domain separation: a wrapped key can never be mistaken for a sealed secret's inner ciphertext.
_WRAP_AAD_PREFIX = b"quorum.wrap\x00"
_SEAL_AAD_PREFIX = b"quorum.seal\x00"
_DERIVE_INFO_PREFIX = b"quorum.derive\x00"


class CryptoError(Exception):
    """Base class of the errors raised while unwrapping or opening."""


class DecryptionFailed(CryptoError):
    """The ciphertext does not authenticate: it was altered, truncated, or is being opened
    with associated data other than the data it was sealed with."""


class UnknownMasterKey(CryptoError):
    """The blob was wrapped under a master key this keyring does not hold."""

    def __init__(self, key_id: str, known: Iterable[str]) -> None:
        super().__init__(
            f"wrapped under master key {key_id}, which is neither the current key nor a previous one "
            f"(known: {', '.join(known)}); add that key to QUORUM_PREVIOUS_MASTER_KEYS"
        )
        self.key_id = key_id


def key_id_of(key: bytes) -> str:
    """The public name of a key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[: 2 * KEY_ID_BYTES]


def keys_by_id(current: bytes, previous: Iterable[bytes], what: str) -> dict[str, bytes]:
    """The keys by key id, the current one first, each once. Raises ValueError, naming the
    key by position, when one is not 32 bytes."""
    keys = [current, *previous]
    for position, key in enumerate(keys):
        if len(key) != MASTER_KEY_BYTES:
            which = f"current {what}" if position == 0 else f"previous {what} #{position}"
            raise ValueError(f"{which}: must be {MASTER_KEY_BYTES} bytes, got {len(key)}")
    by_id: dict[str, bytes] = {}
    for key in keys:
        by_id.setdefault(key_id_of(key), key)
    return by_id


class MasterKeyring:
    """The current master key, which wraps and seals, and older keys that only unwrap.

    Raises ValueError when a key is not 32 bytes. The repr shows key ids only.
    """

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self._keys = keys_by_id(current, previous, "master key")
        self._current_id = key_id_of(current)
        self._ciphers = {kid: AESGCM(key) for kid, key in self._keys.items()}

    def __repr__(self) -> str:
        previous = [kid for kid in self._ciphers if kid != self._current_id]
        return f"MasterKeyring(current={self._current_id}, previous={previous})"

    @property
    def current_id(self) -> str:
        """The key id of the master key that wraps and seals."""
        return self._current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this keyring can unwrap, the current one first."""
        return tuple(self._ciphers)

    # ------------------------------------------------------------------ wrapping data keys

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        """Encrypts ``data_key`` under the current master key, bound to ``aad``. About 37 bytes
        longer than the key."""
        header = _WRAP_HEADER.pack(_WRAP_VERSION, bytes.fromhex(self._current_id))
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current_id].encrypt(nonce, data_key, _WRAP_AAD_PREFIX + header + aad)
        return header + nonce + sealed

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """The data key inside ``blob``. Raises UnknownMasterKey when the key that wrapped it is
        not held, DecryptionFailed when the blob was altered or ``aad`` differs."""
        header, key_id = self._parse_wrapped(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownMasterKey(key_id, self._ciphers)
        body = blob[_WRAP_HEADER.size :]
        try:
            return cipher.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], _WRAP_AAD_PREFIX + header + aad)
        except InvalidTag:
            raise DecryptionFailed(f"wrapped key under master key {key_id} does not authenticate") from None

    def wrapped_key_id(self, blob: bytes) -> str:
        """The key id of the master key that wrapped ``blob``; raises DecryptionFailed when
        ``blob`` is not a wrapped key."""
        return self._parse_wrapped(blob)[1]

    def rewrap(self, blob: bytes, aad: bytes) -> bytes:
        """``blob``'s data key wrapped under the current master key (``blob`` itself when it
        already is). Raises as :meth:`unwrap`."""
        if self.wrapped_key_id(blob) == self._current_id:
            return blob
        return self.wrap(self.unwrap(blob, aad), aad)

    @staticmethod
    def _parse_wrapped(blob: bytes) -> tuple[bytes, str]:
        if len(blob) < _WRAP_HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed(f"wrapped key too short ({len(blob)} bytes)")
        version, raw_id = _WRAP_HEADER.unpack_from(blob)
        if version != _WRAP_VERSION:
            raise DecryptionFailed(f"wrapped key has unknown format version {version}")
        return blob[: _WRAP_HEADER.size], raw_id.hex()

    # ------------------------------------------------------------------ small secrets

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Envelope-encrypts a small secret (a TOTP seed, a token): a fresh data key encrypts
        it, the current master key wraps that key. About 90 bytes of overhead."""
        data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
        wrapped = self.wrap(data_key, aad)
        header = _SEAL_HEADER.pack(_SEAL_VERSION, len(wrapped))
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, _SEAL_AAD_PREFIX + header + aad)
        return header + wrapped + nonce + sealed

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of a :meth:`seal` output. Raises UnknownMasterKey or DecryptionFailed."""
        header, wrapped, body = self._split_sealed(blob)
        data_key = self.unwrap(wrapped, aad)
        try:
            return AESGCM(data_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], _SEAL_AAD_PREFIX + header + aad)
        except InvalidTag:
            raise DecryptionFailed("sealed secret does not authenticate") from None

    def sealed_key_id(self, blob: bytes) -> str:
        """The key id of the master key that sealed ``blob``."""
        return self.wrapped_key_id(self._split_sealed(blob)[1])

    def reseal(self, blob: bytes, aad: bytes) -> bytes:
        """``blob`` with its data key re-wrapped under the current master key; the secret's
        ciphertext is kept as is. Raises as :meth:`open`."""
        header, wrapped, body = self._split_sealed(blob)
        rewrapped = self.rewrap(wrapped, aad)
        if rewrapped is wrapped:
            return blob
        # The wrapped key's length is fixed by the format, so the header stays valid.
        return header + rewrapped + body

    @staticmethod
    def _split_sealed(blob: bytes) -> tuple[bytes, bytes, bytes]:
        if len(blob) < _SEAL_HEADER.size:
            raise DecryptionFailed(f"sealed secret too short ({len(blob)} bytes)")
        version, wrapped_length = _SEAL_HEADER.unpack_from(blob)
        if version != _SEAL_VERSION:
            raise DecryptionFailed(f"sealed secret has unknown format version {version}")
        start = _SEAL_HEADER.size
        body = blob[start + wrapped_length :]
        if len(body) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed(f"sealed secret too short ({len(blob)} bytes)")
        return blob[:start], blob[start : start + wrapped_length], body

    # ------------------------------------------------------------------ derived keys

    def derive(self, purpose: str) -> bytes:
        """32 bytes for ``purpose`` (e.g. a keyed hash of e-mail addresses), HKDF-SHA256 of the
        current master key. Different purposes get independent keys. A rotation changes the
        result: values keyed with it must be recomputed, or checked against
        :meth:`derive_all` until they are."""
        return _hkdf(self._keys[self._current_id], purpose)

    def derive_all(self, purpose: str) -> list[bytes]:
        """:meth:`derive` under every held master key, the current one first, so a lookup by
        keyed hash still finds values written before a rotation."""
        return [_hkdf(key, purpose) for key in self._keys.values()]


def _hkdf(master_key: bytes, purpose: str) -> bytes:
    if not purpose:
        raise ValueError("purpose must not be empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVE_INFO_PREFIX + purpose.encode())
    return hkdf.derive(master_key)


# ---------------------------------------------------------------------- configuration


class KeyConfigError(RuntimeError):
    """A configured 32-byte key is unusable. The message names the variable or file, never
    the key. A RuntimeError, so ``quorum serve`` reports it as a start-up failure."""


class MasterKeyError(KeyConfigError):
    """The master key configuration is unusable."""


@dataclass(frozen=True)
class ConfiguredKey:
    """How one kind of 32-byte secret is configured: a variable for the current key, one for
    older keys kept while rotating, and the embedded default's file under ``<home>/secrets``."""

    what: str
    variable: str
    previous_variable: str
    file_name: str
    # The command that prints a fresh key, named in the error messages.
    command: str
    error: type[KeyConfigError] = KeyConfigError


MASTER_KEY = ConfiguredKey(
    what="master key",
    variable="QUORUM_MASTER_KEY",
    previous_variable="QUORUM_PREVIOUS_MASTER_KEYS",
    file_name="master.key",
    command="quorum storage new-master-key",
    error=MasterKeyError,
)


def new_key_text() -> str:
    """A fresh random 32-byte key, base64, as QUORUM_MASTER_KEY and QUORUM_API_KEY_HASH_KEY expect it."""
    return base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode("ascii")


def decode_key(text: str, source: str, kind: ConfiguredKey = MASTER_KEY) -> bytes:
    """The 32 bytes of a base64 key. Raises ``kind.error`` naming ``source`` (a variable or a
    file), never echoing ``text``."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise kind.error(
            f"{source}: not valid base64 (expected base64 of {MASTER_KEY_BYTES} random bytes; "
            f"`{kind.command}` prints one)"
        ) from None
    if len(key) != MASTER_KEY_BYTES:
        raise kind.error(
            f"{source}: decodes to {len(key)} bytes; the {kind.what} must be {MASTER_KEY_BYTES} "
            f"(`{kind.command}` prints one)"
        )
    return key


def load_configured_keys(
    kind: ConfiguredKey,
    current: SecretStr | None,
    previous: SecretStr | None,
    home: Path,
    *,
    required_because: str | None = None,
) -> tuple[bytes, list[bytes]]:
    """The current key and the previous ones, from the values of ``kind``'s two variables.

    A blank current value means unset: then the embedded default's file
    ``<home>/secrets/<kind.file_name>`` is used, created on first use, unless
    ``required_because`` says why every process must be given the same key (a file per host
    would leave each host unable to read what the others wrote).
    Raises ``kind.error`` naming the variable or file; costs a file read at most.
    """
    older: list[bytes] = []
    if previous is not None:
        entries = [e for e in previous.get_secret_value().split(",") if e.strip()]
        for position, entry in enumerate(entries, start=1):
            older.append(decode_key(entry, f"{kind.previous_variable} (entry {position})", kind))
    configured = current.get_secret_value() if current is not None else ""
    if configured.strip():
        return decode_key(configured, kind.variable, kind), older
    if required_because:
        raise kind.error(
            f"{kind.variable} is not set, and {required_because}: give every process the same key "
            f"(`{kind.command}` prints one)"
        )
    return embedded_key(home, kind), older


def load_master_keyring(settings: Settings, *, required_because: str | None = None) -> MasterKeyring:
    """The keyring the settings describe: QUORUM_MASTER_KEY and QUORUM_PREVIOUS_MASTER_KEYS.

    Without QUORUM_MASTER_KEY the embedded default's key file ``<home>/secrets/master.key`` is
    used, created on first use. A caller whose data other hosts read (an S3 bucket, a shared
    database) passes ``required_because``: then a missing QUORUM_MASTER_KEY is an error.
    Raises MasterKeyError naming the variable or file; costs a file read at most.
    """
    current, previous = load_configured_keys(
        MASTER_KEY,
        settings.master_key,
        settings.previous_master_keys,
        settings.home,
        required_because=required_because,
    )
    return MasterKeyring(current, previous)


def secrets_folder(home: Path) -> Path:
    """Where the embedded default keeps its keys (mode 0700)."""
    return home / "secrets"


def embedded_key(home: Path, kind: ConfiguredKey = MASTER_KEY) -> bytes:
    """The key in ``<home>/secrets/<kind.file_name>``, created on first use (folder 0700, file 0600).

    Processes starting together agree on one key: each writes a complete candidate to a
    temporary file created with O_EXCL, then publishes it with link(2), which fails when the
    name exists; the losers read the winner's file. (Opening the final name with O_EXCL and
    writing afterwards would let a loser read it while still empty.)
    Raises ``kind.error`` when the file is unreadable, malformed or open to other users.
    """
    path = secrets_folder(home) / kind.file_name
    if path.exists():
        return _read_key_file(path, kind)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, candidate = tempfile.mkstemp(dir=path.parent, prefix=f".{kind.file_name}-")  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(new_key_text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # When another process won, its file is complete: it was linked only after writing.
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)
    finally:
        os.unlink(candidate)
    _fsync_directory(path.parent)
    return _read_key_file(path, kind)


def _read_key_file(path: Path, kind: ConfiguredKey) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise kind.error(f"{path}: cannot read the {kind.what} ({type(exc).__name__})") from None
    if os.name == "posix" and mode & 0o077:
        raise kind.error(f"{path}: other users may access the {kind.what}; run chmod 600 {path}")
    return decode_key(text, str(path), kind)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
