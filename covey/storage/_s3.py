"""`S3Store`: artifacts as objects `s3://bucket/prefix/<digest>` on any S3-compatible server (boto3)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from covey.config import get_settings
from covey.errors import ConfigError, StorageError
from covey.storage._base import ArtifactRef, check_hash, check_size, parse_digest, sha256_file, sha256_hex, verify
from covey.storage._local import atomic_writer

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_CHUNK_BYTES = 1 << 20


@contextmanager
def _s3_errors(action: str, missing: str | None = None) -> Iterator[None]:
    """Turn boto's many exception types into one `StorageError` that says what we were doing.

    With `missing` set, a not-found answer raises `StorageError(missing)` instead.
    """
    try:
        yield
    except ClientError as exc:
        if missing is not None and _code(exc) in _MISSING_CODES:
            raise StorageError(missing) from exc
        raise StorageError(f"{action} failed: S3 answered {_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{action} failed: {exc}") from exc


class S3Store:
    """A content-addressed store in an S3 bucket under a prefix.

    `url` is `s3://bucket/prefix`. The endpoint (for MinIO, moto, R2, ...) comes from
    the URL's `endpoint_url` query parameter or from `COVEY_S3_ENDPOINT_URL`; unset
    means AWS itself. Credentials come from boto3's usual chain (env, profile, role).
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"an S3 store URL looks like s3://bucket/prefix, got {url!r}")
        query = parse_qs(parts.query)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint_url = endpoint_url or _first(query, "endpoint_url") or get_settings().s3_endpoint_url or None
        region = _first(query, "region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                # Self-hosted servers on 127.0.0.1 have no per-bucket DNS names.
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            ),
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint_url={self.endpoint_url!r})"

    def key_for(self, digest_or_uri: str) -> str:
        """The object key of an artifact."""
        digest = parse_digest(digest_or_uri)
        return f"{self.prefix}/{digest}" if self.prefix else digest

    def uri_for(self, digest_or_uri: str) -> str:
        """The `s3://` URI of an artifact in this store."""
        return f"s3://{self.bucket}/{self.key_for(digest_or_uri)}"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (handy for local S3 servers)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _MISSING_CODES | {"NoSuchBucket"}:
                raise StorageError(f"checking bucket {self.bucket} failed: S3 answered {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"checking bucket {self.bucket} failed: {exc}") from exc
        with _s3_errors(f"creating bucket {self.bucket}"):
            self._client.create_bucket(Bucket=self.bucket)

    def put(self, data: bytes) -> ArtifactRef:
        """Upload `data` unless an object with the same digest and size is already there."""
        digest = sha256_hex(data)
        key = self.key_for(digest)
        if not self._holds(key, digest, len(data)):
            # An S3 PUT is atomic: readers see the old object or the whole new one.
            with _s3_errors(f"uploading sha256:{digest} to {self.url}"):
                self._client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": digest})
        return ArtifactRef(digest=digest, uri=f"s3://{self.bucket}/{key}", size=len(data))

    def put_file(self, path: Path) -> ArtifactRef:
        """Upload a file (multipart when large) under its digest."""
        source = Path(path)
        if not source.is_file():
            raise StorageError(f"cannot store {source}: not a file")
        digest = sha256_file(source)
        size = source.stat().st_size
        key = self.key_for(digest)
        if not self._holds(key, digest, size):
            with _s3_errors(f"uploading sha256:{digest} to {self.url}"):
                self._client.upload_file(str(source), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
        return ArtifactRef(digest=digest, uri=f"s3://{self.bucket}/{key}", size=size)

    def get(self, digest_or_uri: str, max_bytes: int | None = None) -> bytes:
        """Download an artifact, refusing it when it is over `max_bytes` or fails its hash check."""
        digest = self._digest(digest_or_uri)
        body = self._open(digest, max_bytes)
        with _s3_errors(f"downloading sha256:{digest} from {self.url}"), body:
            # The server's size could lie; never read more than the limit allows.
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
        check_size(digest, len(data), max_bytes)
        return verify(data, digest)

    def get_to_file(self, digest_or_uri: str, path: Path, max_bytes: int | None = None) -> Path:
        """Stream an artifact to `path`; nothing appears at `path` unless the hash matches."""
        digest = self._digest(digest_or_uri)
        body = self._open(digest, max_bytes)
        hasher = hashlib.sha256()
        size = 0
        target = Path(path)
        with _s3_errors(f"downloading sha256:{digest} from {self.url}"), body, atomic_writer(target) as handle:
            while chunk := body.read(_CHUNK_BYTES):
                size += len(chunk)
                check_size(digest, size, max_bytes)
                hasher.update(chunk)
                handle.write(chunk)
            check_hash(digest, hasher.hexdigest())
        return target

    def exists(self, digest_or_uri: str) -> bool:
        """Whether an object for this digest is present (its hash is checked on `get`)."""
        return self._head(self.key_for(self._digest(digest_or_uri))) is not None

    def _open(self, digest: str, max_bytes: int | None) -> Any:
        key = self.key_for(digest)
        head = self._head(key)
        if head is None:
            raise StorageError(_missing(digest, self.url))
        check_size(digest, int(head.get("ContentLength", 0)), max_bytes)
        # The object can vanish between the two calls; that is still "missing", not a server fault.
        with _s3_errors(f"downloading sha256:{digest} from {self.url}", missing=_missing(digest, self.url)):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise StorageError(f"looking up {key} in {self.url} failed: S3 answered {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"looking up {key} in {self.url} failed: {exc}") from exc

    def _holds(self, key: str, digest: str, size: int) -> bool:
        head = self._head(key)
        return (
            head is not None
            and int(head.get("ContentLength", -1)) == size
            and head.get("Metadata", {}).get("sha256") == digest
        )

    def _digest(self, digest_or_uri: str) -> str:
        digest = parse_digest(digest_or_uri)
        # A URI names one bucket and prefix; quietly reading another would hide a misconfiguration.
        if "://" in digest_or_uri and digest_or_uri.split("?", 1)[0] != self.uri_for(digest):
            raise StorageError(
                f"artifact {digest_or_uri} is not in this store ({self.url}); open a store for its location"
            )
        return digest


def _missing(digest: str, url: str) -> str:
    return f"artifact sha256:{digest} is not in the store at {url}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
