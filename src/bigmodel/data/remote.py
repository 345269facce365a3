"""Prepared datasets on object storage (``s3://bucket/prefix`` or any fsspec URL).

Object stores have no rename, so a dataset cannot appear there all at once. The commit marker is
``manifest.json``: ``upload`` writes every shard first and the manifest last, and a reader refuses a
prefix without one (a killed upload leaves shards that nothing trusts; delete the prefix and run
again). The training reader does not stream shards over the network: ``fetch`` copies a remote
dataset once into a local cache keyed by its content hash, checks every file's sha256 against the
manifest on the way, and training then reads the local copy as any prepared folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from bigmodel.data.manifest import FORMAT, MANIFEST, Manifest
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir, sha256_file


def is_url(path: object) -> bool:
    """Whether ``path`` is a remote fsspec URL (``s3://...``); local paths and ``file://`` are not."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as err:
        raise BigModelError(f"cannot open {url}: {err}") from None
    return fs, path.rstrip("/")


def check_absent(url: str) -> None:
    """A one-line error if anything exists under ``url`` already: a dataset is never written over."""
    fs, path = _fs(url)
    try:
        taken = fs.exists(path) and (not fs.isdir(path) or bool(fs.ls(path)))
    except OSError as err:
        raise BigModelError(f"cannot reach {url}: {str(err).splitlines()[0]}") from None
    if taken:
        raise BigModelError(
            f"destination already exists: {url} (choose a new prefix; nothing was overwritten)"
        )


def upload(local: Path, manifest: Manifest, url: str) -> None:
    """Copy a prepared dataset folder to ``url``: the shards first, ``manifest.json`` last (the commit
    marker); on failure what was written is removed as far as the store allows."""
    fs, root = _fs(url)
    files = [f for split in manifest.splits.values() for f in split.files]
    try:
        for f in files:
            fs.put_file(str(local / f), f"{root}/{f}")
        fs.put_file(str(local / MANIFEST), f"{root}/{MANIFEST}")
    except BaseException as err:
        # Nothing there, or unreachable: without a manifest no reader trusts it anyway.
        with contextlib.suppress(OSError):
            fs.rm(root, recursive=True)
        if isinstance(err, OSError):
            raise BigModelError(f"cannot write {url}: {str(err).splitlines()[0]}") from None
        raise


def read_manifest(url: str) -> Manifest:
    """The manifest of a remote dataset; a one-line error when there is none (never committed, or
    half-written) or it is malformed."""
    fs, root = _fs(url)
    try:
        with fs.open(f"{root}/{MANIFEST}", "rb") as f:
            data: Any = json.loads(f.read())
    except FileNotFoundError:
        raise BigModelError(
            f"{url} is not a prepared dataset (no {MANIFEST}: never prepared, or its upload did not "
            "finish); run 'bigmodel data prepare'"
        ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise BigModelError(f"cannot read {url}/{MANIFEST}: {str(err).splitlines()[0]}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        raise BigModelError(
            f"{url}/{MANIFEST}: bad key '{'.'.join(map(str, e['loc']))}': {e['msg']}"
        ) from None
    if manifest.format != FORMAT:
        raise BigModelError(f"{url}/{MANIFEST}: unsupported format {manifest.format!r} (expected {FORMAT})")
    return manifest


def fetch(url: str, cache: Path) -> Path:
    """A local copy of the remote dataset at ``url`` under ``cache`` (by content hash, so a dataset
    is copied once), each file checked against the manifest's sha256; the copy appears only whole."""
    manifest = read_manifest(url)
    # Keyed by the whole manifest, not just the content hash: equal shards may carry other labels.
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    dst = cache / hashlib.sha256(text.encode()).hexdigest()[:32]
    files = [f for split in manifest.splits.values() for f in split.files]
    if (dst / MANIFEST).is_file():
        # Checked whole when copied and trusted after, as a local dataset is; a shard gone from the
        # cache (cleaned by hand, a full disk's victim) means copying it again, not a failure later.
        if all((dst / f).is_file() for f in files):
            return dst
        shutil.rmtree(dst, ignore_errors=True)
    fs, root = _fs(url)
    try:
        with atomic_dir(dst, exist_ok=True) as tmp:
            for f in files:
                (tmp / f).parent.mkdir(parents=True, exist_ok=True)
                try:
                    fs.get_file(f"{root}/{f}", str(tmp / f))
                except FileNotFoundError:
                    raise BigModelError(f"dataset {url} is incomplete: shard {f} is missing") from None
                if sha256_file(tmp / f) != manifest.file_hashes.get(f):
                    raise BigModelError(
                        f"dataset {url}: shard {f} does not match its manifest hash (prepare it again)"
                    )
            (tmp / MANIFEST).write_text(text)
    except OSError as err:
        raise BigModelError(f"cannot copy {url} to {dst}: {str(err).splitlines()[0]}") from None
    return dst
