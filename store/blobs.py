"""Blobs beside a SQLite database: one file per content hash under `<database>.blobs/`.

Content-addressed, so writing the same bytes twice keeps one file. A write goes to a
temporary file in the same directory, is fsynced, renamed into place and the directory
fsynced: a blob whose record was acknowledged survives kill -9 and power loss, and a
crash mid-write leaves no half blob under a real name. Reads and writes run in a worker
thread. (PostgreSQL keeps blobs in a table: store/postgres.py.)
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import anyio

from sessiond.store.errors import InvalidInputError, NotFoundError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    """The SHA-256 of `data`, hex: a blob's name."""
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> None:
    """Refuse anything but a SHA-256 hex digest (it becomes a path)."""
    if not _DIGEST.match(digest):
        raise InvalidInputError(f"{digest!r} is not a blob digest", code="invalid_blob")


class BlobDirectory:
    """Blobs as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    async def put(self, data: bytes) -> str:
        """Store `data` durably; its digest."""
        return await anyio.to_thread.run_sync(self._put, data)

    def _put(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return digest

    async def get(self, digest: str) -> bytes:
        """A blob's bytes; NotFoundError (`blob_not_found`) when there is none."""
        path = self._path(digest)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found", code="blob_not_found") from None

    async def delete(self, digest: str) -> None:
        """Remove a blob if it is there."""
        path = self._path(digest)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
