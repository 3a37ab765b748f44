from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from quorum.objectstore import LocalDiskStore, ObjectMissing, ObjectStore, content_key, open_object_store
from quorum.settings import Settings


def test_content_key_is_the_sha256() -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    assert content_key(b"abc") == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


@pytest.fixture(params=["disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "disk":
        return open_object_store(Settings(home=tmp_path))
    s3_settings: dict[str, Any] = request.getfixturevalue("s3_settings")
    return open_object_store(Settings(home=tmp_path, **s3_settings))


def test_put_get_exists_delete(store: ObjectStore) -> None:
    data = b"\x89PNG" + bytes(range(256)) * 40
    key = content_key(data)
    assert not store.exists(key)
    store.put(key, data, "image/png")
    store.put(key, data, "image/png")  # storing again is a no-op
    assert store.exists(key)
    assert store.get(key) == data
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ObjectMissing):
        store.get(key)


def test_disk_store_refuses_keys_that_escape(tmp_path: Path) -> None:
    store = LocalDiskStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="escapes"):
        store.put("../outside", b"x", "text/plain")


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="QUORUM_OBJECT_STORE_URL"):
        open_object_store(Settings(home=tmp_path, object_store_url="ftp://x"))
