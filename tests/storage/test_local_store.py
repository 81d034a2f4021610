"""The local artifact store: content addressing, hash checks, atomic writes, and digest helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from covey.config import get_settings
from covey.errors import ConfigError, IntegrityError, StorageError, ValidationError
from covey.storage import (
    ArtifactStore,
    LocalStore,
    S3Store,
    bytes32_to_digest,
    digest_to_bytes32,
    open_store,
    parse_digest,
)

WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 40


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


def test_put_then_get_by_digest_sha256_name_and_uri(store: LocalStore) -> None:
    ref = store.put(WEIGHTS)

    assert ref.digest == hashlib.sha256(WEIGHTS).hexdigest()
    assert ref.sha256 == f"sha256:{ref.digest}"
    assert ref.size == len(WEIGHTS)
    assert ref.uri.startswith("file:///") and ref.uri.endswith(ref.digest)
    assert Path(ref.uri.removeprefix("file://")).read_bytes() == WEIGHTS
    for name in (ref.digest, ref.sha256, ref.uri, ref.digest.upper()):
        assert store.get(name) == WEIGHTS
    assert store.exists(ref.sha256)
    assert isinstance(store, ArtifactStore)


def test_putting_the_same_bytes_twice_gives_the_same_ref(store: LocalStore) -> None:
    assert store.put(b"spec") == store.put(b"spec")
    assert store.put(b"spec") != store.put(b"other spec")


def test_a_tampered_artifact_raises_integrity_error_and_put_repairs_it(store: LocalStore) -> None:
    ref = store.put(WEIGHTS)
    Path(ref.uri.removeprefix("file://")).write_bytes(WEIGHTS[:-1] + b"\x00")

    with pytest.raises(IntegrityError, match=ref.digest):
        store.get(ref.digest)

    store.put(WEIGHTS)
    assert store.get(ref.digest) == WEIGHTS


def test_a_missing_artifact_is_a_storage_error_not_an_integrity_error(store: LocalStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(StorageError, match="not in the store") as caught:
        store.get(digest)
    assert not isinstance(caught.value, IntegrityError)


def test_an_artifact_over_max_bytes_is_refused_before_reading(store: LocalStore) -> None:
    ref = store.put(WEIGHTS)
    with pytest.raises(StorageError, match="more than the limit"):
        store.get(ref.digest, max_bytes=len(WEIGHTS) - 1)
    assert store.get(ref.digest, max_bytes=len(WEIGHTS)) == WEIGHTS


def test_put_file_and_get_to_file_round_trip(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "update.bin"
    source.write_bytes(WEIGHTS * 30)  # over a megabyte, so copies go chunk by chunk

    ref = store.put_file(source)
    target = store.get_to_file(ref.uri, tmp_path / "out" / "update.bin")

    assert ref == store.put(WEIGHTS * 30)
    assert target.read_bytes() == WEIGHTS * 30
    assert not list((store.root / "staging").iterdir())


def test_get_to_file_leaves_nothing_behind_when_the_hash_fails(store: LocalStore, tmp_path: Path) -> None:
    ref = store.put(WEIGHTS)
    Path(ref.uri.removeprefix("file://")).write_bytes(b"swapped")
    target = tmp_path / "downloads" / "out.bin"

    with pytest.raises(IntegrityError):
        store.get_to_file(ref.digest, target)
    assert list(target.parent.iterdir()) == []


def test_a_crash_during_put_leaves_no_partial_artifact(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(WEIGHTS)
    monkeypatch.undo()

    assert not store.exists(hashlib.sha256(WEIGHTS).hexdigest())
    assert [path for path in store.root.rglob("*") if path.is_file()] == []


def test_a_uri_from_another_store_is_refused(store: LocalStore, tmp_path: Path) -> None:
    other = LocalStore(tmp_path / "elsewhere")
    ref = other.put(WEIGHTS)
    store.put(WEIGHTS)
    with pytest.raises(StorageError, match="not in this store"):
        store.get(ref.uri)


def test_malformed_names_are_validation_errors(store: LocalStore) -> None:
    for name in ("", "sha256:xyz", "abc", "file:///tmp/not-a-digest"):
        with pytest.raises(ValidationError):
            store.get(name)


def test_digests_round_trip_through_bytes32() -> None:
    digest = hashlib.sha256(b"model").hexdigest()
    raw = digest_to_bytes32(f"sha256:{digest}")

    assert len(raw) == 32
    assert bytes32_to_digest(raw) == digest
    assert parse_digest("0x" + digest) == digest
    with pytest.raises(ValidationError):
        bytes32_to_digest(b"\x00" * 31)


def test_open_store_follows_settings_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVEY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COVEY_STORE_URL", raising=False)
    settings = get_settings()

    default = open_store(settings.store_url, settings.home)
    assert isinstance(default, LocalStore)
    assert default.root == (tmp_path / "home" / "artifacts").resolve()

    by_uri = open_store((tmp_path / "shared").as_uri(), settings.home)
    by_path = open_store(str(tmp_path / "shared"), settings.home)
    assert isinstance(by_uri, LocalStore) and isinstance(by_path, LocalStore)
    assert by_uri.get(by_path.put(b"x").digest) == b"x"

    assert isinstance(open_store("s3://bucket/prefix", settings.home), S3Store)
    with pytest.raises(ConfigError, match="unknown artifact store URL"):
        open_store("ftp://example.org/artifacts", settings.home)
