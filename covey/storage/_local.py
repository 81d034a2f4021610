"""`LocalStore`: artifacts as files `<root>/<first two hex>/<digest>`, written to a temp file then renamed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from covey.errors import StorageError
from covey.storage._base import (
    ArtifactRef,
    check_hash,
    check_size,
    parse_digest,
    sha256_file,
    sha256_hex,
    verify,
)

_CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose contents appear at `path` only if the block finishes.

    The bytes go to a temp file in the same directory (so the rename cannot cross
    file systems), are fsynced, and then renamed over `path`: a crash leaves either
    the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


class LocalStore:
    """A content-addressed store in a local directory (default `COVEY_HOME/artifacts`)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path_for(self, digest_or_uri: str) -> Path:
        """The file that holds (or would hold) an artifact."""
        digest = self._digest(digest_or_uri)
        return self.root / digest[:2] / digest

    def uri_for(self, digest_or_uri: str) -> str:
        """The `file://` URI of an artifact in this store."""
        return self.path_for(digest_or_uri).as_uri()

    def put(self, data: bytes) -> ArtifactRef:
        """Store `data` and return its ref; an intact copy already present is kept as is."""
        digest = sha256_hex(data)
        path = self.root / digest[:2] / digest
        if not self._holds_intact(path, digest):
            with atomic_writer(path) as handle:
                handle.write(data)
        return ArtifactRef(digest=digest, uri=path.as_uri(), size=len(data))

    def put_file(self, path: Path) -> ArtifactRef:
        """Store a file's contents, hashing while copying so the file is read once."""
        source = Path(path)
        if not source.is_file():
            raise StorageError(f"cannot store {source}: not a file")
        hasher = hashlib.sha256()
        size = 0
        # The digest is only known after the copy, so the copy lands in a staging dir on the same file system.
        staging_dir = self.root / "staging"
        staging_dir.mkdir(exist_ok=True)
        fd, staging_name = tempfile.mkstemp(dir=staging_dir, suffix=".tmp")
        staging = Path(staging_name)
        try:
            with os.fdopen(fd, "wb") as handle, source.open("rb") as reader:
                while chunk := reader.read(_CHUNK_BYTES):
                    hasher.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            digest = hasher.hexdigest()
            final = self.root / digest[:2] / digest
            if self._holds_intact(final, digest):
                staging.unlink()
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(staging, final)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return ArtifactRef(digest=digest, uri=final.as_uri(), size=size)

    def get(self, digest_or_uri: str, max_bytes: int | None = None) -> bytes:
        """The bytes of an artifact after checking its size and hash."""
        digest = self._digest(digest_or_uri)
        path = self._existing(digest)
        check_size(digest, path.stat().st_size, max_bytes)
        return verify(path.read_bytes(), digest)

    def get_to_file(self, digest_or_uri: str, path: Path, max_bytes: int | None = None) -> Path:
        """Copy a verified artifact to `path`; nothing appears at `path` if the hash check fails."""
        digest = self._digest(digest_or_uri)
        source = self._existing(digest)
        check_size(digest, source.stat().st_size, max_bytes)
        hasher = hashlib.sha256()
        target = Path(path)
        with atomic_writer(target) as handle, source.open("rb") as reader:
            while chunk := reader.read(_CHUNK_BYTES):
                hasher.update(chunk)
                handle.write(chunk)
            check_hash(digest, hasher.hexdigest())
        return target

    def exists(self, digest_or_uri: str) -> bool:
        """Whether a file for this digest is present (its hash is checked on `get`)."""
        return self.path_for(digest_or_uri).is_file()

    def _digest(self, digest_or_uri: str) -> str:
        digest = parse_digest(digest_or_uri)
        # A URI names one place; reading a different directory than the one asked for would surprise.
        if "://" in digest_or_uri and digest_or_uri != (self.root / digest[:2] / digest).as_uri():
            raise StorageError(
                f"artifact {digest_or_uri} is not in this store ({self.url}); open a store for its location"
            )
        return digest

    def _existing(self, digest: str) -> Path:
        path = self.root / digest[:2] / digest
        if not path.is_file():
            raise StorageError(f"artifact sha256:{digest} is not in the store at {self.url}")
        return path

    @staticmethod
    def _holds_intact(path: Path, digest: str) -> bool:
        # A damaged copy is rewritten rather than trusted, so `put` also repairs the store.
        return path.is_file() and sha256_file(path) == digest
