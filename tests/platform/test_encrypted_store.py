"""Objects encrypted at rest (quorum.objectstore.EncryptedStore) on local disk and on moto's
S3 server, and master key rotation with rewrap_all and `quorum storage rewrap`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from quorum_testing import b64

from quorum.cli import main
from quorum.crypto import MasterKeyError, MasterKeyring, UnknownMasterKey, key_id_of
from quorum.objectstore import (
    SIDECAR_SUFFIX,
    BackingStore,
    EncryptedStore,
    ObjectMissing,
    ObjectTampered,
    content_key,
    open_backing_store,
    open_object_store,
    rewrap_all,
)
from quorum.settings import Settings

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture(autouse=True)
def _no_master_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUORUM_MASTER_KEY", raising=False)
    monkeypatch.delenv("QUORUM_PREVIOUS_MASTER_KEYS", raising=False)


@pytest.fixture(params=["disk", "s3"])
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Settings of one store (local disk or a fresh S3 bucket), keyword arguments on top."""
    base: dict[str, Any] = {"home": tmp_path}
    if request.param == "s3":
        base.update(request.getfixturevalue("s3_settings"))

    def make(**overrides: Any) -> Settings:
        return Settings(**{**base, **overrides})

    return make


@pytest.fixture
def backing(settings_for: Callable[..., Settings]) -> BackingStore:
    return open_backing_store(settings_for())


def store_under(backing: BackingStore, current: bytes, *previous: bytes) -> EncryptedStore:
    return EncryptedStore(backing, MasterKeyring(current, previous))


def flip(blob: bytes, position: int) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= 0x01
    return bytes(changed)


def test_round_trip_with_ciphertext_at_rest(settings_for: Callable[..., Settings]) -> None:
    store = open_object_store(settings_for(master_key=b64(KEY_A)))
    key = content_key(PNG)
    assert not store.exists(key)
    store.put(key, PNG, "image/png")
    store.put(key, PNG, "image/png")  # storing again is a no-op
    assert store.exists(key)
    assert store.get(key) == PNG
    at_rest = store.inner.get(key)
    assert PNG[8:40] not in at_rest and len(at_rest) == 1 + 12 + len(PNG) + 16
    assert store.keyring.wrapped_key_id(store.inner.get(key + SIDECAR_SUFFIX)) == key_id_of(KEY_A)
    assert list(store.keys()) == [key]
    assert sorted(store.inner.keys()) == [key, key + SIDECAR_SUFFIX]
    store.delete(key)
    assert not store.exists(key) and list(store.inner.keys()) == []
    with pytest.raises(ObjectMissing):
        store.get(key)


def test_the_embedded_default_encrypts_with_its_key_file(tmp_path: Path) -> None:
    store = open_object_store(Settings(home=tmp_path))
    store.put(content_key(PNG), PNG, "image/png")
    assert (tmp_path / "secrets" / "master.key").exists()
    assert open_object_store(Settings(home=tmp_path)).get(content_key(PNG)) == PNG
    assert PNG[8:40] not in (tmp_path / "objects" / content_key(PNG)).read_bytes()


def test_s3_needs_a_configured_master_key(tmp_path: Path, s3_settings: dict[str, Any]) -> None:
    with pytest.raises(MasterKeyError, match="QUORUM_MASTER_KEY is not set, and the object store is an S3 bucket"):
        open_object_store(Settings(home=tmp_path, **{**s3_settings, "master_key": None}))


@pytest.mark.parametrize("position", [0, 5, 40, -1], ids=["version", "nonce", "ciphertext", "tag"])
def test_a_flipped_byte_in_the_object_is_tampering(backing: BackingStore, position: int) -> None:
    store = store_under(backing, KEY_A)
    key = content_key(PNG)
    store.put(key, PNG, "image/png")
    backing.replace(key, flip(backing.get(key), position), "application/octet-stream")
    with pytest.raises(ObjectTampered, match=key):
        store.get(key)


@pytest.mark.parametrize("position", [0, 12, 40, -1], ids=["version", "nonce", "ciphertext", "tag"])
def test_a_flipped_byte_in_the_data_key_is_tampering(backing: BackingStore, position: int) -> None:
    store = store_under(backing, KEY_A)
    key = content_key(PNG)
    store.put(key, PNG, "image/png")
    sidecar = key + SIDECAR_SUFFIX
    backing.replace(sidecar, flip(backing.get(sidecar), position), "application/octet-stream")
    with pytest.raises(ObjectTampered, match="data key does not authenticate"):
        store.get(key)


def test_an_object_moved_under_another_key_fails(backing: BackingStore) -> None:
    store = store_under(backing, KEY_A)
    first, second = PNG, PNG + b"second"
    store.put(content_key(first), first, "image/png")
    store.put(content_key(second), second, "image/png")
    # The object alone, and the object together with its data key, moved over the other one.
    backing.replace(content_key(second), backing.get(content_key(first)), "application/octet-stream")
    with pytest.raises(ObjectTampered, match="does not authenticate under its data key"):
        store.get(content_key(second))
    for suffix in ("", SIDECAR_SUFFIX):
        moved = backing.get(content_key(first) + suffix)
        backing.replace(content_key(second) + suffix, moved, "application/octet-stream")
    with pytest.raises(ObjectTampered, match="data key does not authenticate"):
        store.get(content_key(second))
    assert store.get(content_key(first)) == first


def test_objects_stored_before_encryption_are_read_as_plaintext(backing: BackingStore) -> None:
    store = store_under(backing, KEY_A)
    legacy = b"stored before encryption"
    backing.put(content_key(legacy), legacy, "text/plain")
    assert store.get(content_key(legacy)) == legacy
    store.put(content_key(legacy), legacy, "text/plain")  # already there: left as it is
    assert backing.get(content_key(legacy)) == legacy


def test_an_object_without_a_data_key_must_match_its_content_key(backing: BackingStore) -> None:
    store = store_under(backing, KEY_A)
    backing.put(content_key(b"expected"), b"planted", "text/plain")
    with pytest.raises(ObjectTampered, match="no data key"):
        store.get(content_key(b"expected"))
    backing.put("reports/latest", b"not content-addressed", "text/plain")
    with pytest.raises(ObjectTampered, match="no data key"):
        store.get("reports/latest")
    # An encrypted object whose data key was deleted is not served as plaintext.
    store.put(content_key(PNG), PNG, "image/png")
    backing.delete(content_key(PNG) + SIDECAR_SUFFIX)
    with pytest.raises(ObjectTampered, match="no data key"):
        store.get(content_key(PNG))


def test_a_put_that_died_before_the_object_is_completed_by_the_next(backing: BackingStore) -> None:
    store = store_under(backing, KEY_A)
    key = content_key(PNG)
    store.put(key, PNG, "image/png")
    sidecar = backing.get(key + SIDECAR_SUFFIX)
    backing.delete(key)  # as if the process died between writing the data key and the object
    assert not store.exists(key)
    store.put(key, PNG, "image/png")
    assert store.get(key) == PNG
    assert backing.get(key + SIDECAR_SUFFIX) == sidecar, "the spare data key was reused"


def test_concurrent_puts_of_one_object_agree_on_its_data_key(backing: BackingStore) -> None:
    store = store_under(backing, KEY_A)
    key = content_key(PNG)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def put() -> None:
        start.wait()
        try:
            store.put(key, PNG, "image/png")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get(key) == PNG


def test_a_key_ending_in_the_sidecar_suffix_is_refused(backing: BackingStore) -> None:
    with pytest.raises(ValueError, match="reserved for data keys"):
        store_under(backing, KEY_A).put("sha256/x.dek", b"x", "text/plain")


# ----------------------------------------------------------------------------- rotation


def test_rotation_rewraps_data_keys_and_leaves_media_untouched(backing: BackingStore) -> None:
    before = store_under(backing, KEY_A)
    media = [PNG + bytes([i]) for i in range(3)]
    for data in media:
        before.put(content_key(data), data, "image/png")
    legacy = b"plaintext from before encryption"
    backing.put(content_key(legacy), legacy, "text/plain")
    objects_at_rest = {content_key(d): backing.get(content_key(d)) for d in media}
    sidecars_before = {k: backing.get(k + SIDECAR_SUFFIX) for k in objects_at_rest}

    rotated = MasterKeyring(KEY_B, [KEY_A])
    report = rewrap_all(backing, rotated)
    assert (report.rewrapped, report.already_current, report.failed, report.plaintext) == (3, 0, [], 1)

    # The media bytes are exactly as they were: nothing was re-encrypted.
    assert {k: backing.get(k) for k in objects_at_rest} == objects_at_rest
    for key, old in sidecars_before.items():
        new = backing.get(key + SIDECAR_SUFFIX)
        assert new != old and rotated.wrapped_key_id(new) == key_id_of(KEY_B)
    only_b = store_under(backing, KEY_B)
    assert [only_b.get(content_key(d)) for d in media] == media
    assert only_b.get(content_key(legacy)) == legacy
    with pytest.raises(UnknownMasterKey):
        store_under(backing, KEY_A).get(content_key(media[0]))

    again = rewrap_all(backing, rotated)
    assert (again.rewrapped, again.already_current, again.failed) == (0, 3, [])


def test_rewrap_reports_data_keys_it_cannot_unwrap_and_leaves_them(backing: BackingStore) -> None:
    store_under(backing, KEY_A).put(content_key(PNG), PNG, "image/png")
    store_under(backing, KEY_B).put(content_key(b"other"), b"other", "text/plain")
    sidecar = backing.get(content_key(PNG) + SIDECAR_SUFFIX)
    report = rewrap_all(backing, MasterKeyring(KEY_B))  # KEY_A is not among the previous keys
    assert (report.rewrapped, report.already_current) == (0, 1)
    assert [key for key, _ in report.failed] == [content_key(PNG)]
    assert key_id_of(KEY_A) in report.failed[0][1]
    assert backing.get(content_key(PNG) + SIDECAR_SUFFIX) == sidecar


def test_storage_rewrap_command(
    settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(master_key=b64(KEY_A))
    store = open_object_store(settings)
    media = [PNG + bytes([i]) for i in range(2)]
    for data in media:
        store.put(content_key(data), data, "image/png")
    at_rest = [store.inner.get(content_key(d)) for d in media]
    for name, value in settings.model_dump(exclude_none=True, exclude_defaults=True).items():
        monkeypatch.setenv(
            f"QUORUM_{name.upper()}", value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        )
    monkeypatch.setenv("QUORUM_MASTER_KEY", b64(KEY_B))

    # Without the old key nothing can move, and nothing is changed.
    assert main(["storage", "rewrap"]) == 1
    out, err = capsys.readouterr()
    assert f"master key {key_id_of(KEY_B)}: rewrapped 0, already current 0, failed 2" in out
    assert err.count(key_id_of(KEY_A)) == 2

    monkeypatch.setenv("QUORUM_PREVIOUS_MASTER_KEYS", b64(KEY_A))
    assert main(["storage", "rewrap"]) == 0
    assert "rewrapped 2, already current 0, failed 0" in capsys.readouterr().out
    assert main(["storage", "rewrap"]) == 0
    assert "rewrapped 0, already current 2, failed 0" in capsys.readouterr().out

    only_b = open_object_store(settings_for(master_key=b64(KEY_B)))
    assert [only_b.get(content_key(d)) for d in media] == media
    assert [only_b.inner.get(content_key(d)) for d in media] == at_rest
