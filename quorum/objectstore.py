"""Content-addressed object storage: local disk by default, S3 or MinIO through
the ``minio`` client when ``QUORUM_OBJECT_STORE_URL`` is ``s3://bucket``.

Keys are ``sha256/<2 hex>/<2 hex>/<64 hex>``: the same bytes always land on the
same key, so storing twice costs nothing and a key proves its content.

Objects are encrypted at rest (:class:`EncryptedStore`, envelope encryption): each object
has its own random data key, stored wrapped by the master key (quorum.crypto) in a small
sidecar object ``<key>.dek``. Rotating the master key rewrites only the sidecars
(:func:`rewrap_all`); the media bytes are never re-encrypted.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quorum.crypto import (
    DATA_KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    CryptoError,
    DecryptionFailed,
    MasterKeyring,
    load_master_keyring,
)
from quorum.settings import Settings


def content_key(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


class ObjectMissing(KeyError):
    """No object under that key."""


class ObjectTampered(CryptoError):
    """An object or its data key does not authenticate: altered, truncated, or moved under
    another key; or an object without a data key whose bytes do not match its content key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"object {key!r}: {problem}")
        self.key = key


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores ``data`` under ``key``; storing the same key again is a no-op."""

    def get(self, key: str) -> bytes:
        """Returns the bytes; raises :class:`ObjectMissing`."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


class BackingStore(ObjectStore, Protocol):
    """What :class:`EncryptedStore` and :func:`rewrap_all` need of the store underneath."""

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        """Stores ``data`` unless ``key`` exists, atomically; False when it existed."""

    def replace(self, key: str, data: bytes, content_type: str) -> None:
        """Stores ``data`` under ``key``, atomically replacing what was there."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in sorted order."""


_TEMPORARY_PREFIX = ".tmp-"


class LocalDiskStore:
    """Objects as files under ``root``, written atomically (temporary file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        if path.exists():
            return
        self._write(path, data, exclusive=False)

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        return self._write(self._path(key), data, exclusive=True)

    def replace(self, key: str, data: bytes, content_type: str) -> None:
        self._write(self._path(key), data, exclusive=False)

    def _write(self, path: Path, data: bytes, exclusive: bool) -> bool:
        """Writes a temporary file, then renames it into place (or links it, which fails when
        the name exists, if ``exclusive``): readers never see a partial object."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if not exclusive:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                Path(tmp).unlink(missing_ok=True)
            return True
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        found: list[str] = []
        for folder, _, files in os.walk(self.root):
            relative = Path(folder).relative_to(self.root)
            for name in files:
                key = (relative / name).as_posix()
                if not name.startswith(_TEMPORARY_PREFIX) and key.startswith(prefix):
                    found.append(key)
        yield from sorted(found)


class S3Store:
    """Objects in an S3 bucket (AWS, MinIO or any S3 endpoint). Creates the bucket if missing."""

    def __init__(self, bucket: str, endpoint: str, access_key: str, secret_key: str, secure: bool, region: str) -> None:
        from minio import Minio

        self.bucket = bucket
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        if not self._client.bucket_exists(bucket):
            self._client.make_bucket(bucket)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.exists(key):
            return
        self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        from minio.error import S3Error

        # A conditional write (If-None-Match: *), which AWS S3, MinIO and moto honour. The
        # public put_object takes no request headers, hence the lower-level call.
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": content_type, "If-None-Match": "*"}
        try:
            self._client._put_object(self.bucket, key, data, headers=headers)
        except S3Error as exc:
            # 409 ConditionalRequestConflict: a concurrent conditional write to the same key.
            if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def replace(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if item.object_name is not None:
                yield item.object_name

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self._client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectMissing(key) from exc
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self._client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._client.remove_object(self.bucket, key)


SIDECAR_SUFFIX = ".dek"
_OBJECT_VERSION = 1
_OBJECT_HEADER = struct.Struct(">B")
_CIPHERTEXT_TYPE = "application/octet-stream"


def _object_aad(key: str, header: bytes) -> bytes:
    return b"quorum.object\x00" + header + key.encode()


def _data_key_aad(key: str) -> bytes:
    return b"quorum.object-key\x00" + key.encode()


class EncryptedStore:
    """An :class:`ObjectStore` that encrypts every object with AES-256-GCM under a data key of
    its own, kept wrapped by the master key in the sidecar ``<key>.dek``.

    The object's key is authenticated with both the object and its data key, so bytes moved
    under another key fail to decrypt (:class:`ObjectTampered`). Object at rest:
    ``0x01 | nonce (12) | ciphertext + tag (16)``. A get costs two reads of the store.

    Objects stored before encryption existed have no sidecar: they are read as plaintext,
    but only under a content key their bytes hash to, so deleting a sidecar cannot make the
    store hand out ciphertext, or bytes an intruder planted, as an object.
    """

    def __init__(self, inner: BackingStore, keyring: MasterKeyring) -> None:
        self.inner = inner
        self.keyring = keyring

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Encrypts and stores ``data``; a no-op when ``key`` exists. Raises ValueError for a
        key ending in ``.dek``, which names sidecars. Costs three store calls (an existence
        check, the data key, the object), four when a concurrent put chose the data key."""
        if key.endswith(SIDECAR_SUFFIX):
            raise ValueError(f"object key {key!r}: keys ending in {SIDECAR_SUFFIX!r} are reserved for data keys")
        if self.inner.exists(key):
            return
        data_key = self._data_key_for(key)
        header = _OBJECT_HEADER.pack(_OBJECT_VERSION)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(data_key).encrypt(nonce, data, _object_aad(key, header))
        self.inner.put(key, header + nonce + sealed, _CIPHERTEXT_TYPE)

    def _data_key_for(self, key: str) -> bytes:
        """The data key of ``key``: a new one, or the one an earlier put already stored.

        The sidecar is written first and only if absent, so concurrent puts of one key all
        encrypt under the same data key, and a put that died before writing the object
        leaves a sidecar the next put reuses.
        """
        sidecar, aad = key + SIDECAR_SUFFIX, _data_key_aad(key)
        for _ in range(3):
            data_key = os.urandom(DATA_KEY_BYTES)
            if self.inner.create(sidecar, self.keyring.wrap(data_key, aad), _CIPHERTEXT_TYPE):
                return data_key
            try:
                return self._unwrap(key, self.inner.get(sidecar))
            except ObjectMissing:
                continue  # deleted between the two calls: try again
        raise RuntimeError(f"object {key!r}: its data key keeps being deleted while it is stored")

    def get(self, key: str) -> bytes:
        """The decrypted bytes. Raises ObjectMissing, ObjectTampered, or
        quorum.crypto.UnknownMasterKey when the data key was wrapped under a master key not
        in the keyring."""
        try:
            wrapped = self.inner.get(key + SIDECAR_SUFFIX)
        except ObjectMissing:
            return self._get_plaintext(key)
        blob = self.inner.get(key)
        data_key = self._unwrap(key, wrapped)
        header = blob[: _OBJECT_HEADER.size]
        if len(blob) < _OBJECT_HEADER.size + NONCE_BYTES + TAG_BYTES or header[0] != _OBJECT_VERSION:
            raise ObjectTampered(key, "not an encrypted object (too short or unknown format version)")
        body = blob[_OBJECT_HEADER.size :]
        try:
            return AESGCM(data_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], _object_aad(key, header))
        except InvalidTag:
            raise ObjectTampered(key, "the object does not authenticate under its data key") from None

    def _unwrap(self, key: str, wrapped: bytes) -> bytes:
        try:
            return self.keyring.unwrap(wrapped, _data_key_aad(key))
        except DecryptionFailed as exc:
            raise ObjectTampered(key, f"its data key does not authenticate ({exc})") from None

    def _get_plaintext(self, key: str) -> bytes:
        data = self.inner.get(key)
        if key.startswith("sha256/") and content_key(data) == key:
            return data
        raise ObjectTampered(key, "it has no data key, and its bytes are not the content its key names")

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        """Deletes the object, then its data key: a delete that dies half way leaves a spare
        data key (reused by the next put), never an object without its key."""
        self.inner.delete(key)
        self.inner.delete(key + SIDECAR_SUFFIX)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The object keys starting with ``prefix``, sidecars left out."""
        return (key for key in self.inner.keys(prefix) if not key.endswith(SIDECAR_SUFFIX))


@dataclass
class RewrapReport:
    """What :func:`rewrap_all` did. ``failed`` holds (object key, reason) pairs;
    ``plaintext`` counts objects stored before encryption, which have no data key."""

    rewrapped: int = 0
    already_current: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    plaintext: int = 0


def rewrap_all(store: BackingStore, keyring: MasterKeyring) -> RewrapReport:
    """Re-wraps every data key in ``store`` (the store under an :class:`EncryptedStore`)
    under the keyring's current master key. Objects are never read or written.

    Data keys already under the current key are skipped, so a second run, or a run resumed
    after a crash, only does what is left. A data key that cannot be unwrapped is reported
    in ``failed`` and left as it is. Costs one listing of the store, plus a read and a write
    for each data key to re-wrap.
    """
    report = RewrapReport()
    # Objects whose sidecar was not listed yet, and sidecars whose object was not: a listing
    # is sorted, so a key and its sidecar come close together and these stay small.
    unpaired_objects: set[str] = set()
    unpaired_sidecars: set[str] = set()
    for listed in store.keys(prefix=""):
        if not listed.endswith(SIDECAR_SUFFIX):
            if listed in unpaired_sidecars:
                unpaired_sidecars.discard(listed)
            else:
                unpaired_objects.add(listed)
            continue
        key = listed.removesuffix(SIDECAR_SUFFIX)
        if key in unpaired_objects:
            unpaired_objects.discard(key)
        else:
            unpaired_sidecars.add(key)
        try:
            wrapped = store.get(listed)
            if keyring.wrapped_key_id(wrapped) == keyring.current_id:
                report.already_current += 1
                continue
            store.replace(listed, keyring.rewrap(wrapped, _data_key_aad(key)), _CIPHERTEXT_TYPE)
            report.rewrapped += 1
        except (CryptoError, ObjectMissing) as exc:
            report.failed.append((key, str(exc)))
    report.plaintext = len(unpaired_objects)
    return report


def open_backing_store(settings: Settings) -> LocalDiskStore | S3Store:
    """The store named by the settings, without encryption: for :func:`rewrap_all` and for
    looking at the bytes at rest. Raises ValueError for an unknown URL scheme."""
    url = urlparse(settings.object_store())
    if url.scheme == "file":
        return LocalDiskStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        return S3Store(
            bucket=url.netloc,
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    raise ValueError(f"QUORUM_OBJECT_STORE_URL: unsupported scheme {url.scheme!r} (use file:// or s3://)")


def open_object_store(settings: Settings) -> EncryptedStore:
    """The store named by the settings, encrypting under the configured master key.

    Raises ValueError for an unknown URL scheme, quorum.crypto.MasterKeyError for a bad
    master key, or for none with an S3 store: a bucket is shared by processes on several
    hosts, and a key file per host would leave each unable to read the others' objects.
    """
    backing = open_backing_store(settings)
    shared = "the object store is an S3 bucket shared by processes on several hosts"
    keyring = load_master_keyring(settings, required_because=shared if isinstance(backing, S3Store) else None)
    return EncryptedStore(backing, keyring)
