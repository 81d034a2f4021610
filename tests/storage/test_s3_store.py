"""The S3 artifact store against a real S3-protocol server (moto in server mode on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import boto3
import pytest

from covey.config import get_settings
from covey.errors import IntegrityError, StorageError
from covey.storage import ArtifactStore, S3Store, open_store

UPDATE = bytes(range(256)) * 64


def test_put_then_get_through_the_endpoint_in_the_url(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/arena/weights?endpoint_url={s3_endpoint}")

    ref = store.put(UPDATE)

    assert ref.digest == hashlib.sha256(UPDATE).hexdigest()
    assert ref.uri == f"s3://{s3_bucket}/arena/weights/{ref.digest}"
    assert store.url == f"s3://{s3_bucket}/arena/weights"
    assert store.exists(ref.digest)
    for name in (ref.digest, ref.sha256, ref.uri):
        assert store.get(name) == UPDATE
    assert isinstance(store, ArtifactStore)
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(Bucket=s3_bucket, Key=f"arena/weights/{ref.digest}")
    assert raw["Body"].read() == UPDATE


def test_store_url_and_endpoint_from_the_environment(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_STORE_URL", f"s3://{s3_bucket}/covey")
    monkeypatch.setenv("COVEY_S3_ENDPOINT_URL", s3_endpoint)
    settings = get_settings()

    store = open_store(settings.store_url, settings.home)

    assert isinstance(store, S3Store)
    ref = store.put(b"task spec")
    assert ref.uri == f"s3://{s3_bucket}/covey/{ref.digest}"
    assert store.get(ref.uri) == b"task spec"


def test_a_tampered_object_raises_integrity_error_until_put_again(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3Store(f"s3://{s3_bucket}/p", endpoint_url=s3_endpoint)
    ref = store.put(UPDATE)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key=f"p/{ref.digest}", Body=UPDATE[::-1])

    with pytest.raises(IntegrityError, match=ref.digest):
        store.get(ref.digest)
    with pytest.raises(IntegrityError):
        store.get_to_file(ref.digest, tmp_path / "downloads" / "weights.bin")
    assert list((tmp_path / "downloads").iterdir()) == []

    store.put(UPDATE)
    assert store.get(ref.digest) == UPDATE


def test_missing_and_oversized_objects_are_storage_errors(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}", endpoint_url=s3_endpoint)
    ref = store.put(UPDATE)

    with pytest.raises(StorageError, match="not in the store"):
        store.get(hashlib.sha256(b"absent").hexdigest())
    with pytest.raises(StorageError, match="more than the limit"):
        store.get(ref.digest, max_bytes=len(UPDATE) - 1)
    assert store.get(ref.digest, max_bytes=len(UPDATE)) == UPDATE
    assert not store.exists(hashlib.sha256(b"absent").hexdigest())


def test_put_file_and_get_to_file_round_trip(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{s3_bucket}/files", endpoint_url=s3_endpoint)
    source = tmp_path / "weights.safetensors"
    source.write_bytes(UPDATE * 20)

    ref = store.put_file(source)
    target = store.get_to_file(ref.uri, tmp_path / "copy.safetensors")

    assert ref.size == len(UPDATE) * 20
    assert target.read_bytes() == source.read_bytes()


def test_a_uri_in_another_bucket_is_refused(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/p", endpoint_url=s3_endpoint)
    digest = store.put(UPDATE).digest
    with pytest.raises(StorageError, match="not in this store"):
        store.get(f"s3://another-bucket/p/{digest}")


def test_ensure_bucket_creates_a_missing_bucket(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}-new/p", endpoint_url=s3_endpoint)
    store.ensure_bucket()
    store.ensure_bucket()  # already there: a no-op
    assert store.get(store.put(b"x").digest) == b"x"


def test_an_unreachable_server_is_a_storage_error(s3_bucket: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    store = S3Store(f"s3://{s3_bucket}", endpoint_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(StorageError, match="failed"):
        store.put(b"nobody listens")
