"""A content-addressed artifact store on any fsspec filesystem (a local folder, s3://, gs://, memory://).

A blob lives at ``blobs/sha256/ab/abcdef...`` and is written once under a temporary name, then moved
into place, so a reader never sees half a file. Reading streams the bytes through sha256 and refuses
a blob whose content no longer matches its address.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec

from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_path


class BlobStore:
    def __init__(self, url: str):
        self.url = url
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(url)

    def path(self, sha256: str) -> str:
        return f"{self.root}/blobs/sha256/{sha256[:2]}/{sha256}"

    def where(self, sha256: str) -> str:
        """The blob's address as a user would name it: ``s3://bucket/...`` (fsspec drops the
        protocol from its paths), or a local path."""
        path = self.path(sha256)
        return (
            path
            if "://" not in self.url or self.url.startswith("file://")
            else self.fs.unstrip_protocol(path)
        )

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self.path(sha256)))

    def put(self, src: str | os.PathLike[str], sha256: str) -> None:
        """Store a local file under its (already checked) sha256. A blob already there is kept only
        if its bytes still hash to its address; a damaged one is replaced by these good bytes."""
        dst = self.path(sha256)
        if self.fs.exists(dst) and self.digest(sha256) == sha256:
            return
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{dst}.{uuid.uuid4().hex}.tmp"
        self.fs.put_file(str(src), tmp)
        self.fs.mv(tmp, dst)

    def digest(self, sha256: str) -> str | None:
        """The sha256 of the blob stored at ``sha256``'s address now (None if it is gone)."""
        h = hashlib.sha256()
        try:
            with self.fs.open(self.path(sha256), "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except FileNotFoundError:
            return None
        return h.hexdigest()

    def stale_temporaries(self, older_than_s: float) -> list[str]:
        """Half-written ``*.tmp`` blobs (a killed upload) last modified over ``older_than_s`` ago."""
        found = []
        now = time.time()
        for path in self.fs.glob(f"{self.root}/blobs/sha256/*/*.tmp"):
            try:
                mtime = self.fs.modified(path).timestamp()
            except (NotImplementedError, FileNotFoundError, AttributeError):
                continue
            if now - mtime > older_than_s:
                found.append(str(path))
        return found

    def get(self, sha256: str, dst: Path, *, what: str) -> None:
        """Copy a blob to a local file, checking its sha256 on the way; ``what`` names it in errors."""
        h = hashlib.sha256()
        try:
            with (
                self.fs.open(self.path(sha256), "rb") as src,
                atomic_path(dst) as tmp,
                open(tmp, "wb") as out,
            ):
                while block := src.read(1 << 20):
                    h.update(block)
                    out.write(block)
                if h.hexdigest() != sha256:
                    raise BigModelError(
                        f"registry artifact {what} is corrupt: {self.where(sha256)} has sha256 "
                        f"{h.hexdigest()[:12]}..., recorded {sha256[:12]}...; refusing to load it"
                    )
        except FileNotFoundError:
            raise BigModelError(f"registry artifact {what} is missing: {self.where(sha256)}") from None

    def delete(self, sha256: str) -> None:
        if self.fs.exists(self.path(sha256)):
            self.fs.rm(self.path(sha256))
