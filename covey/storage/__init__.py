"""Content-addressed artifact storage: weights, updates and specs by sha256, in a local dir or S3.

`open_store(settings.store_url, settings.home)` gives the configured store; `store.put(data)` returns
an `ArtifactRef` (`digest`, `uri`, `sha256`, `bytes32`); `store.get(digest, max_bytes=...)` checks the hash.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from covey.errors import ConfigError
from covey.storage._base import (
    ArtifactRef,
    ArtifactStore,
    bytes32_to_digest,
    digest_to_bytes32,
    parse_digest,
    sha256_hex,
)
from covey.storage._local import LocalStore, atomic_writer
from covey.storage._s3 import S3Store

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "LocalStore",
    "S3Store",
    "atomic_writer",
    "bytes32_to_digest",
    "digest_to_bytes32",
    "open_store",
    "parse_digest",
    "sha256_hex",
]


def open_store(url: str | None, home: Path) -> ArtifactStore:
    """The store a URL names: unset means `home/artifacts`; `file://` or a path a local dir; `s3://` S3."""
    if not url:
        return LocalStore(Path(home) / "artifacts")
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        return S3Store(url)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"a file store URL names a local path (file:///path), got {url!r}")
        return LocalStore(Path(unquote(parts.path)))
    if scheme == "":
        return LocalStore(Path(url))
    raise ConfigError(f"unknown artifact store URL {url!r}: use a path, file:///path or s3://bucket/prefix")
