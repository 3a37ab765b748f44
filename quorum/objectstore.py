"""Content-addressed object storage: local disk by default, S3 or MinIO through
the ``minio`` client when ``QUORUM_OBJECT_STORE_URL`` is ``s3://bucket``.

Keys are ``sha256/<2 hex>/<2 hex>/<64 hex>``: the same bytes always land on the
same key, so storing twice costs nothing and a key proves its content.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from quorum.settings import Settings


def content_key(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


class ObjectMissing(KeyError):
    """No object under that key."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores ``data`` under ``key``; storing the same key again is a no-op."""

    def get(self, key: str) -> bytes:
        """Returns the bytes; raises :class:`ObjectMissing`."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
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


def open_object_store(settings: Settings) -> ObjectStore:
    """Builds the store named by the settings. Raises ValueError for an unknown URL scheme."""
    url = urlparse(settings.object_store())
    if url.scheme == "file":
        return LocalDiskStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        return S3Store(
            bucket=url.netloc,
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    raise ValueError(f"QUORUM_OBJECT_STORE_URL: unsupported scheme {url.scheme!r} (use file:// or s3://)")
