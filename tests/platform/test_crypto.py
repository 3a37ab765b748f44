"""The master keyring (quorum.crypto): wrapping, sealing, deriving, and loading the key from
the settings or the embedded key file."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from quorum_testing import b64

from quorum.cli import main
from quorum.crypto import (
    DecryptionFailed,
    MasterKeyError,
    MasterKeyring,
    UnknownMasterKey,
    key_id_of,
    load_master_keyring,
)
from quorum.settings import Settings

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
AAD = b"sha256/ab/cd/object"


@pytest.fixture(autouse=True)
def _no_master_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUORUM_MASTER_KEY", raising=False)
    monkeypatch.delenv("QUORUM_PREVIOUS_MASTER_KEYS", raising=False)


def flip(blob: bytes, position: int) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= 0x01
    return bytes(changed)


# ----------------------------------------------------------------------------- wrapping


def test_wrap_round_trip_names_the_key_by_id() -> None:
    keyring = MasterKeyring(KEY_A)
    data_key = os.urandom(32)
    blob = keyring.wrap(data_key, AAD)
    assert keyring.current_id == key_id_of(KEY_A) and len(keyring.current_id) == 16
    assert keyring.wrapped_key_id(blob) == keyring.current_id
    assert keyring.unwrap(blob, AAD) == data_key
    assert data_key not in blob
    # A fresh nonce each time: wrapping twice gives different blobs.
    assert keyring.wrap(data_key, AAD) != blob


def test_the_repr_shows_key_ids_only() -> None:
    keyring = MasterKeyring(KEY_B, [KEY_A])
    text = repr(keyring)
    assert key_id_of(KEY_B) in text and key_id_of(KEY_A) in text
    for key in (KEY_A, KEY_B):
        assert b64(key) not in text and key.hex() not in text


@pytest.mark.parametrize("position", [0, 9, 21, 40, -1], ids=["version", "nonce", "nonce-end", "ciphertext", "tag"])
def test_a_flipped_byte_fails_to_unwrap(position: int) -> None:
    keyring = MasterKeyring(KEY_A)
    blob = keyring.wrap(os.urandom(32), AAD)
    with pytest.raises(DecryptionFailed):
        keyring.unwrap(flip(blob, position), AAD)


def test_a_changed_key_id_is_an_unknown_key() -> None:
    keyring = MasterKeyring(KEY_A)
    blob = keyring.wrap(os.urandom(32), AAD)
    with pytest.raises(UnknownMasterKey):
        keyring.unwrap(flip(blob, 3), AAD)


def test_other_associated_data_fails_to_unwrap() -> None:
    keyring = MasterKeyring(KEY_A)
    blob = keyring.wrap(os.urandom(32), AAD)
    with pytest.raises(DecryptionFailed):
        keyring.unwrap(blob, AAD + b"x")


def test_a_truncated_blob_fails_to_unwrap() -> None:
    keyring = MasterKeyring(KEY_A)
    with pytest.raises(DecryptionFailed, match="too short"):
        keyring.unwrap(keyring.wrap(os.urandom(32), AAD)[:20], AAD)


def test_an_unknown_master_key_is_named_by_id() -> None:
    blob = MasterKeyring(KEY_A).wrap(os.urandom(32), AAD)
    with pytest.raises(UnknownMasterKey, match=key_id_of(KEY_A)) as raised:
        MasterKeyring(KEY_B).unwrap(blob, AAD)
    assert raised.value.key_id == key_id_of(KEY_A)
    assert "QUORUM_PREVIOUS_MASTER_KEYS" in str(raised.value)


def test_previous_keys_unwrap_and_rewrap_moves_to_the_current_key() -> None:
    data_key = os.urandom(32)
    old_blob = MasterKeyring(KEY_A).wrap(data_key, AAD)
    rotated = MasterKeyring(KEY_B, [KEY_A])
    assert rotated.unwrap(old_blob, AAD) == data_key
    new_blob = rotated.rewrap(old_blob, AAD)
    assert rotated.wrapped_key_id(new_blob) == key_id_of(KEY_B)
    assert MasterKeyring(KEY_B).unwrap(new_blob, AAD) == data_key
    assert rotated.rewrap(new_blob, AAD) is new_blob


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="current master key: must be 32 bytes, got 16"):
        MasterKeyring(bytes(16))
    with pytest.raises(ValueError, match="previous master key #2"):
        MasterKeyring(KEY_A, [KEY_B, bytes(31)])


# ----------------------------------------------------------------------------- sealing


def test_seal_and_open_a_small_secret() -> None:
    keyring = MasterKeyring(KEY_A)
    secret = b"JBSWY3DPEHPK3PXP"
    blob = keyring.seal(secret, b"totp:worker-7")
    assert secret not in blob
    assert keyring.open(blob, b"totp:worker-7") == secret
    assert keyring.sealed_key_id(blob) == key_id_of(KEY_A)
    with pytest.raises(DecryptionFailed):
        keyring.open(blob, b"totp:worker-8")
    with pytest.raises(DecryptionFailed):
        keyring.open(flip(blob, len(blob) - 5), b"totp:worker-7")


def test_reseal_rewraps_without_touching_the_ciphertext() -> None:
    secret = b"a secret"
    blob = MasterKeyring(KEY_A).seal(secret, AAD)
    rotated = MasterKeyring(KEY_B, [KEY_A])
    moved = rotated.reseal(blob, AAD)
    assert rotated.sealed_key_id(moved) == key_id_of(KEY_B)
    assert MasterKeyring(KEY_B).open(moved, AAD) == secret
    # The secret's own nonce, ciphertext and tag (the last 12 + 8 + 16 bytes) are unchanged.
    assert moved[-36:] == blob[-36:]
    assert rotated.reseal(moved, AAD) is moved


# ----------------------------------------------------------------------------- deriving


def test_derived_keys_are_per_purpose_and_follow_the_current_key() -> None:
    keyring = MasterKeyring(KEY_A)
    email = keyring.derive("email-hash")
    assert len(email) == 32
    assert email == MasterKeyring(KEY_A).derive("email-hash")
    assert email != keyring.derive("api-token")
    assert KEY_A not in email
    rotated = MasterKeyring(KEY_B, [KEY_A])
    assert rotated.derive("email-hash") != email
    assert rotated.derive_all("email-hash") == [rotated.derive("email-hash"), email]
    with pytest.raises(ValueError, match="purpose"):
        keyring.derive("")


# ----------------------------------------------------------------------------- configuration


def test_the_configured_keys_are_loaded(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, master_key=b64(KEY_B), previous_master_keys=f"{b64(KEY_A)}, ")
    keyring = load_master_keyring(settings)
    assert keyring.key_ids == (key_id_of(KEY_B), key_id_of(KEY_A))
    assert not (tmp_path / "secrets").exists()
    assert b64(KEY_B) not in repr(settings) and b64(KEY_A) not in repr(settings)


@pytest.mark.parametrize(
    ("value", "problem"),
    [(b64(bytes(16)), "decodes to 16 bytes"), ("not*base64!", "not valid base64")],
    ids=["wrong-length", "bad-base64"],
)
def test_a_bad_master_key_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.setenv("QUORUM_MASTER_KEY", value)
    with pytest.raises(MasterKeyError, match=f"QUORUM_MASTER_KEY: {problem}") as raised:
        load_master_keyring(Settings())
    assert value not in str(raised.value)
    # The command line reports it the same way, and exits non-zero.
    assert main(["storage", "rewrap"]) == 2
    err = capsys.readouterr().err
    assert "QUORUM_MASTER_KEY" in err and problem in err and value not in err


def test_a_bad_previous_key_is_named_by_position(tmp_path: Path) -> None:
    value = b64(bytes(31))
    settings = Settings(home=tmp_path, master_key=b64(KEY_B), previous_master_keys=f"{b64(KEY_A)},{value}")
    with pytest.raises(MasterKeyError, match=r"QUORUM_PREVIOUS_MASTER_KEYS \(entry 2\): decodes to 31 bytes") as raised:
        load_master_keyring(settings)
    assert value not in str(raised.value)


def test_a_required_key_must_be_configured(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="QUORUM_MASTER_KEY is not set, and the bucket is shared"):
        load_master_keyring(Settings(home=tmp_path), required_because="the bucket is shared")
    assert not (tmp_path / "secrets").exists()


def test_the_embedded_key_is_created_once_with_private_modes(tmp_path: Path) -> None:
    first = load_master_keyring(Settings(home=tmp_path))
    key_file = tmp_path / "secrets" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert key_id_of(base64.b64decode(key_file.read_text())) == first.current_id
    assert load_master_keyring(Settings(home=tmp_path)).current_id == first.current_id
    assert [p.name for p in key_file.parent.iterdir()] == ["master.key"]


def test_an_embedded_key_other_users_can_read_is_refused(tmp_path: Path) -> None:
    load_master_keyring(Settings(home=tmp_path))
    key_file = tmp_path / "secrets" / "master.key"
    key_file.chmod(0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_master_keyring(Settings(home=tmp_path))


def test_a_damaged_embedded_key_is_named_by_path(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "master.key"
    key_file.parent.mkdir(mode=0o700)
    key_file.write_text(b64(bytes(20)))
    key_file.chmod(0o600)
    with pytest.raises(MasterKeyError, match=f"{key_file}: decodes to 20 bytes"):
        load_master_keyring(Settings(home=tmp_path))


def _load_embedded_key(home: str, start: Barrier, results: Any) -> None:
    start.wait()
    results.put(load_master_keyring(Settings(home=Path(home))).current_id)


def test_processes_starting_together_agree_on_one_embedded_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    racers = 3  # each spawned process imports the whole package: a few seconds apiece
    start = context.Barrier(racers)
    results = context.Queue()
    processes = [
        context.Process(target=_load_embedded_key, args=(str(tmp_path), start, results)) for _ in range(racers)
    ]
    for process in processes:
        process.start()
    ids = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
        assert process.exitcode == 0
    key_file = tmp_path / "secrets" / "master.key"
    assert set(ids) == {key_id_of(base64.b64decode(key_file.read_text()))}
    assert [p.name for p in key_file.parent.iterdir()] == ["master.key"]


# ----------------------------------------------------------------------------- command line


def test_new_master_key_prints_a_fresh_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["storage", "new-master-key"]) == 0
    first = capsys.readouterr()
    assert main(["storage", "new-master-key"]) == 0
    second = capsys.readouterr()
    keys = [base64.b64decode(out.out.strip(), validate=True) for out in (first, second)]
    assert [len(key) for key in keys] == [32, 32] and keys[0] != keys[1]
    assert first.out.count("\n") == 1, "stdout holds the key alone, for $(...)"
    assert "QUORUM_MASTER_KEY" in first.err and "QUORUM_PREVIOUS_MASTER_KEYS" in first.err
    MasterKeyring(keys[0])
