"""What every artifact store shares: the `ArtifactStore` protocol, `ArtifactRef` and digest helpers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from covey.errors import IntegrityError, StorageError, ValidationError

_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK_BYTES = 1 << 20


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of `data`: the address of an artifact in every store."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks so big files never sit in memory whole."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def parse_digest(digest_or_uri: str) -> str:
    """The 64-character lower-case hex digest inside `digest_or_uri`.

    Accepts a bare hex digest, the `sha256:<hex>` form, or any URI whose last path
    segment is the digest (`file:///.../<hex>`, `s3://bucket/prefix/<hex>`).
    Raises `ValidationError` when no digest can be found.
    """
    text = digest_or_uri.strip()
    if text.lower().startswith("sha256:"):
        text = text[len("sha256:") :]
    elif "://" in text:
        text = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if text.startswith("0x") and len(text) == 66:
        text = text[2:]
    text = text.lower()
    if not _HEX_DIGEST.match(text):
        raise ValidationError(f"not a sha256 digest or artifact URI: {digest_or_uri!r}")
    return text


def digest_to_bytes32(digest: str) -> bytes:
    """The 32 raw bytes of a digest, the form a contract stores in a `bytes32`."""
    return bytes.fromhex(parse_digest(digest))


def bytes32_to_digest(value: bytes) -> str:
    """The hex digest of a `bytes32` read back from a contract."""
    if len(value) != 32:
        raise ValidationError(f"a bytes32 digest has 32 bytes, got {len(value)}")
    return value.hex()


def check_hash(digest: str, actual: str) -> None:
    """Raise `IntegrityError` when bytes expected to hash to `digest` hashed to `actual` instead."""
    if actual != digest:
        raise IntegrityError(f"artifact sha256:{digest} failed its hash check (the bytes hash to sha256:{actual})")


def verify(data: bytes, digest: str) -> bytes:
    """Return `data` if it hashes to `digest`; raise `IntegrityError` otherwise."""
    check_hash(digest, sha256_hex(data))
    return data


def check_size(digest: str, size: int, max_bytes: int | None) -> None:
    """Raise `StorageError` when an artifact is larger than the caller accepts."""
    if max_bytes is not None and size > max_bytes:
        raise StorageError(f"artifact sha256:{digest} has {size} bytes, more than the limit of {max_bytes}")


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives: its hex sha256 `digest` and a `uri` in the store that holds it."""

    digest: str
    uri: str
    size: int

    @property
    def sha256(self) -> str:
        """The stable `sha256:<hex>` name, the same in every store."""
        return f"sha256:{self.digest}"

    @property
    def bytes32(self) -> bytes:
        """The digest as 32 raw bytes, for a contract's `bytes32` argument."""
        return bytes.fromhex(self.digest)


@runtime_checkable
class ArtifactStore(Protocol):
    """A content-addressed store: artifacts are put as bytes and fetched back by their sha256."""

    url: str

    def put(self, data: bytes) -> ArtifactRef:
        """Store `data` (a no-op if it is already there) and return where it lives."""
        ...

    def put_file(self, path: Path) -> ArtifactRef:
        """Store the contents of a file."""
        ...

    def get(self, digest_or_uri: str, max_bytes: int | None = None) -> bytes:
        """The verified bytes of an artifact; `StorageError` if missing or over `max_bytes`."""
        ...

    def get_to_file(self, digest_or_uri: str, path: Path, max_bytes: int | None = None) -> Path:
        """Write a verified artifact to `path` (atomically) and return the path."""
        ...

    def exists(self, digest_or_uri: str) -> bool:
        """Whether the store holds an artifact with this digest."""
        ...

    def uri_for(self, digest_or_uri: str) -> str:
        """The URI this store gives the artifact with this digest."""
        ...
