"""The model registry: named, integer-versioned, aliased model directories.

Metadata lives in a database through SQLAlchemy (SQLite by default, any URL SQLAlchemy takes);
artifacts live in a content-addressed store through fsspec. ``register`` copies the files that
model.json vouches for (weights, ONNX, ...) plus model.json itself; ``resolve`` materialises a
version as a local model directory, checking every byte against the hashes recorded at
registration. Only safetensors, ONNX and JSON are ever stored: nothing is unpickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, cast

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select, update

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.fsutil import atomic_dir, make_dir
from bigmodel.registry import db
from bigmodel.registry.blobs import BlobStore
from bigmodel.registry.refs import DEFAULT_ALIAS, Ref, check_alias, check_name, parse_ref

ENV_ROOT = "BIGMODEL_REGISTRY"
ENV_DB = "BIGMODEL_REGISTRY_DB"


def default_location() -> str:
    """``$BIGMODEL_REGISTRY``, else ``$BIGMODEL_HOME/registry`` (``~/.bigmodel/registry``)."""
    from bigmodel.data.builtin import home

    return os.environ.get(ENV_ROOT) or str(home() / "registry")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


REGISTRY_JSON = "registry.json"


def _recorded_db(root: Path) -> str | None:
    """The database a registry folder keeps its metadata in: the one ``registry.json`` names
    (password-free) when it was created with a database URL, else its SQLite file; None: no registry."""
    record = root / REGISTRY_JSON
    if record.is_file():
        try:
            url = json.loads(record.read_text())["database"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BigModelError(f"{record} is damaged ({err}); it names the registry's database") from None
        if not isinstance(url, str):
            raise BigModelError(f"{record} is damaged: its database is not a URL")
        return url
    return f"sqlite:///{root / 'registry.db'}" if (root / "registry.db").is_file() else None


def _record_db(root: Path, db_url: str) -> None:
    tmp = root / f".{REGISTRY_JSON}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"database": db.without_password(db_url)}, indent=2) + "\n")
    os.replace(tmp, root / REGISTRY_JSON)  # two processes creating it at once write the same thing


class Registry:
    """A registry at ``location``: a folder (``registry.db`` + ``blobs/``) or an fsspec URL for the
    artifacts with ``db_url`` (or ``$BIGMODEL_REGISTRY_DB``) naming the database."""

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        *,
        db_url: str | None = None,
        create: bool = True,
    ):
        """``create=False`` (reading, serving): a local folder that holds no registry is an error
        instead of a new, empty registry, so a mistyped ``--registry`` is not taken for one."""
        self.location = str(location or default_location())
        db_url = db_url or os.environ.get(ENV_DB)
        if _is_local(self.location):
            root = Path(self.location.removeprefix("file://")).expanduser()
            in_the_way = any(p.is_file() for p in (root, *root.parents))  # make_dir names it
            recorded = None if in_the_way else _recorded_db(root)
            if not create and not db_url and not in_the_way and recorded is None:
                raise BigModelError(
                    f"no registry at {root} (`bigmodel registry register MODEL_DIR --name NAME` creates one)"
                )
            make_dir(root, "registry")
            self.location = str(root)
            if db_url and recorded and db.without_password(db_url) != recorded:
                raise BigModelError(
                    f"registry {root} keeps its metadata in {recorded}, not {db.without_password(db_url)}; "
                    f"leave out ${ENV_DB} to use it"
                )
            if db_url and recorded is None:  # every later process finds the database from the folder
                _record_db(root, db_url)
            db_url = db_url or recorded or f"sqlite:///{root / 'registry.db'}"
            self.cache = root / "checkouts"
        else:
            if not db_url:
                raise BigModelError(
                    f"registry {self.location} is not a local folder: name its database with "
                    f"${ENV_DB} (e.g. postgresql://user@host/registry)"
                )
            from bigmodel.data.builtin import home

            self.cache = home() / "registry-checkouts"
        self.db_url = db_url
        self.engine = db.connect(db_url)
        self.blobs = BlobStore(self.location)
        if not _is_local(self.location):
            self._check_remote(create)

    def _check_remote(self, create: bool) -> None:
        """An object-store registry keeps ``registry.json`` (its database, password-free) beside its
        blobs, as a folder does: a mistyped bucket or prefix is refused instead of being taken for an
        empty registry, and one database never gets two artifact stores."""
        marker = f"{self.blobs.root}/{REGISTRY_JSON}"
        mine = db.without_password(self.db_url)
        try:
            recorded = json.loads(self.blobs.fs.cat_file(marker))["database"]
        except FileNotFoundError:
            recorded = None
        except (ValueError, KeyError, TypeError):
            raise BigModelError(
                f"{self.location}/{REGISTRY_JSON} is damaged; it names the registry's database"
            ) from None
        except Exception as err:  # no credentials, endpoint down, no such bucket: say which, in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BigModelError(f"cannot reach registry {self.location}: {first}") from None
        if recorded is not None:
            if recorded != mine:
                raise BigModelError(
                    f"registry {self.location} keeps its metadata in {recorded}, not {mine}; "
                    f"set ${ENV_DB} to that database"
                )
            return
        if not create:
            raise BigModelError(
                f"no registry at {self.location} (`bigmodel registry register MODEL_DIR --name NAME "
                f"--registry {self.location}` creates one)"
            )
        if self.models():
            raise BigModelError(
                f"database {mine} already holds a registry whose artifacts are elsewhere; "
                f"{self.location} is not it (check the bucket and prefix)"
            )
        try:
            self.blobs.fs.pipe_file(marker, json.dumps({"database": mine}, indent=2).encode() + b"\n")
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BigModelError(f"cannot write to registry {self.location}: {first}") from None

    # ---- writing -------------------------------------------------------------------------------

    def register(self, model_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
        """Store a model directory as the next version of ``name``; return its record."""
        check_name(name)
        src = Path(model_dir)
        meta = artifacts.read_meta(src)
        artifacts.verify(src, meta)  # never register a directory whose files changed after writing
        meta_bytes = (src / artifacts.META).read_bytes()
        digest = hashlib.sha256(meta_bytes).hexdigest()
        entries = {n: (f.sha256, f.bytes) for n, f in meta.files.items()}
        entries[artifacts.META] = (digest, len(meta_bytes))
        for fname, (sha, _) in entries.items():  # uploads happen outside the lock: they can be slow
            self.blobs.put(src / fname, sha)
        with db.locked(self.engine) as conn:
            # A concurrent delete may have collected a blob we found already present; re-check
            # under the lock, where no collection can run.
            for fname, (sha, _) in entries.items():
                if not self.blobs.exists(sha):
                    self.blobs.put(src / fname, sha)
            row = conn.execute(select(db.models.c.next_version).where(db.models.c.name == name)).first()
            version = row[0] if row else 1
            if row is None:
                conn.execute(insert(db.models).values(name=name, next_version=2, created_at=_now()))
            else:
                conn.execute(
                    update(db.models).where(db.models.c.name == name).values(next_version=version + 1)
                )
            conn.execute(
                insert(db.versions).values(
                    name=name,
                    version=version,
                    digest=digest,
                    meta=meta_bytes.decode(),
                    source=str(src.resolve()),
                    bytes=sum(b for _, b in entries.values()),
                    created_at=_now(),
                )
            )
            conn.execute(
                insert(db.files),
                [
                    {"name": name, "version": version, "file": f, "sha256": s, "bytes": b}
                    for f, (s, b) in entries.items()
                ],
            )
        if _is_local(self.location):  # cheap on a folder; on object stores `registry gc` does it
            self.gc()
        return self.show(Ref(name, version=version))

    def alias(self, name: str, version: int, alias: str) -> dict[str, Any]:
        """Point ``alias`` of ``name`` at ``version`` (moving it if it pointed elsewhere)."""
        check_name(name)
        check_alias(alias)
        with db.locked(self.engine) as conn:
            self._require_version(conn, name, version)
            conn.execute(sql_delete(db.aliases).where(db.aliases.c.name == name, db.aliases.c.alias == alias))
            conn.execute(
                insert(db.aliases).values(name=name, alias=alias, version=version, updated_at=_now())
            )
        return self.show(Ref(name, alias=alias))

    def move_alias(self, name: str, alias: str, version: int, *, expect: int | None) -> bool:
        """Compare-and-set: point ``alias`` at ``version`` only if it points at ``expect`` now (None:
        only if it is unset). False, and nothing changed, if someone moved it in the meantime."""
        check_alias(alias)
        with db.locked(self.engine) as conn:
            self._require_version(conn, name, version)
            q = select(db.aliases.c.version).where(db.aliases.c.name == name, db.aliases.c.alias == alias)
            now = conn.execute(q).scalar()
            if (None if now is None else int(now)) != expect:
                return False
            conn.execute(sql_delete(db.aliases).where(db.aliases.c.name == name, db.aliases.c.alias == alias))
            conn.execute(
                insert(db.aliases).values(name=name, alias=alias, version=version, updated_at=_now())
            )
        return True

    def unalias(self, name: str, alias: str) -> None:
        with db.locked(self.engine) as conn:
            gone = conn.execute(
                sql_delete(db.aliases).where(db.aliases.c.name == name, db.aliases.c.alias == alias)
            ).rowcount
        if not gone:
            raise BigModelError(f"model {name} has no alias {alias!r}")

    def delete(self, ref: str | Ref, *, force: bool = False) -> dict[str, Any]:
        """Delete one version. A version an alias points at is kept unless ``force`` (which drops
        the aliases too). Artifacts no other version uses are removed from the store."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        if ref.version is None and ref.alias is None:
            raise BigModelError(f"name the version to delete: {ref.name}:VERSION (or {ref.name}@ALIAS)")
        with db.locked(self.engine) as conn:
            version = self._version_of(conn, ref)
            names = self._aliases(conn, ref.name).get(version, [])
            if names and not force:
                raise BigModelError(
                    f"{ref.name}:{version} is aliased as {', '.join(names)}; move the alias first "
                    "or pass --force to delete it with its aliases"
                )
            shas = [
                r[0]
                for r in conn.execute(
                    select(db.files.c.sha256).where(
                        db.files.c.name == ref.name, db.files.c.version == version
                    )
                )
            ]
            for table in (db.aliases, db.files, db.versions):
                conn.execute(sql_delete(table).where(table.c.name == ref.name, table.c.version == version))
            still_used = {
                r[0] for r in conn.execute(select(db.files.c.sha256).where(db.files.c.sha256.in_(shas)))
            }
            for sha in set(shas) - still_used:  # under the lock, so no register can be relying on it
                self.blobs.delete(sha)
        return {"name": ref.name, "version": version, "deleted": True, "aliases_removed": names}

    def gc(self, *, older_than_s: float = 3600.0) -> dict[str, Any]:
        """Remove what killed processes left, ``*.tmp`` blobs and half-written checkout folders, and
        checkouts of versions no longer registered; only those last changed over ``older_than_s``
        ago (a younger one may belong to a register or checkout running now). Return what went."""
        temporaries = self.blobs.stale_temporaries(older_than_s)
        for path in temporaries:
            self.blobs.fs.rm(path)
        removed: list[str] = []
        if self.cache.is_dir():
            with self.engine.connect() as conn:
                live = {str(r[0]) for r in conn.execute(select(db.versions.c.digest))}
            now = time.time()
            for entry in self.cache.iterdir():
                half_written = entry.name.startswith(".") and entry.name.endswith(".tmp")
                if now - entry.stat().st_mtime <= older_than_s:
                    continue
                if half_written or (entry.is_dir() and entry.name not in live):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return {"temporary_blobs": temporaries, "checkouts": removed}

    # ---- reading -------------------------------------------------------------------------------

    def version_of(self, ref: str | Ref) -> int:
        """The version number a reference means now."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self.engine.connect() as conn:
            return self._version_of(conn, ref)

    def heads(self, names: list[str]) -> dict[str, tuple[list[int], dict[str, int]]]:
        """``{name: (versions, {alias: version})}`` for several models in two queries: what a server
        polls to notice moved aliases and new versions without loading the database."""
        out: dict[str, tuple[list[int], dict[str, int]]] = {n: ([], {}) for n in names}
        with self.engine.connect() as conn:
            q = select(db.versions.c.name, db.versions.c.version).where(db.versions.c.name.in_(names))
            for name, version in conn.execute(q.order_by(db.versions.c.version)):
                out[str(name)][0].append(cast(int, version))
            q2 = select(db.aliases.c.name, db.aliases.c.alias, db.aliases.c.version)
            for name, alias, version in conn.execute(q2.where(db.aliases.c.name.in_(names))):
                out[str(name)][1][str(alias)] = cast(int, version)
        return out

    def show(self, ref: str | Ref) -> dict[str, Any]:
        """Everything recorded about one version: metrics, lineage, files, aliases."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self.engine.connect() as conn:
            version = self._version_of(conn, ref)
            row = conn.execute(
                select(db.versions).where(db.versions.c.name == ref.name, db.versions.c.version == version)
            ).one()
            return self._record(conn, row)

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of ``name``, or of every model), oldest first."""
        q = select(db.versions).order_by(db.versions.c.name, db.versions.c.version)
        if name is not None:
            q = q.where(db.versions.c.name == check_name(name))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            if name is not None and not rows:
                self._require_model(conn, name)
            return [self._record(conn, r) for r in rows]

    def models(self) -> list[str]:
        """Names with at least one version. A name whose last version was deleted keeps its row
        in ``models`` (version numbers are never reused) but is no longer a model to list or serve."""
        q = select(db.versions.c.name).distinct().order_by(db.versions.c.name)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` for one model."""
        with self.engine.connect() as conn:
            q = select(db.aliases.c.alias, db.aliases.c.version).where(db.aliases.c.name == name)
            return {str(a): cast(int, v) for a, v in conn.execute(q)}

    def compare(self, refs: list[str]) -> list[dict[str, Any]]:
        """Records of several versions side by side; a bare NAME alone means all its versions."""
        if len(refs) == 1 and ":" not in refs[0] and "@" not in refs[0]:
            return self.versions(refs[0])
        return [self.show(r) for r in refs]

    def resolve(self, ref: str | Ref) -> Path:
        """A local model directory holding exactly the registered bytes of ``ref``.

        Materialised once per version (by digest) and checked on every call: the model.json must
        hash to the recorded digest and every artifact to the hash in that model.json.
        """
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        with self.engine.connect() as conn:
            version = self._version_of(conn, ref)
            digest: str = conn.execute(
                select(db.versions.c.digest).where(
                    db.versions.c.name == ref.name, db.versions.c.version == version
                )
            ).scalar_one()
            entries = conn.execute(
                select(db.files.c.file, db.files.c.sha256).where(
                    db.files.c.name == ref.name, db.files.c.version == version
                )
            ).all()
        what = f"{ref.name}:{version}"
        path = self.cache / digest
        if not (path / artifacts.META).exists():
            with atomic_dir(path, exist_ok=True) as tmp:
                for fname, sha in entries:
                    try:  # the database is not trusted more than the model.json it came from
                        artifacts.check_file_name(str(fname))
                    except ValueError as err:
                        raise BigModelError(f"{what}: {err}; refusing to check it out") from None
                    self.blobs.get(str(sha), tmp / str(fname), what=f"{fname} of {what}")
        got = hashlib.sha256((path / artifacts.META).read_bytes()).hexdigest()
        if got != digest:
            raise BigModelError(
                f"{path / artifacts.META} of {what} changed after registration (sha256 {got[:12]}..., "
                f"recorded {digest[:12]}...); refusing to load it"
            )
        try:
            artifacts.verify(path, artifacts.read_meta(path))
        except BigModelError as err:
            raise BigModelError(f"{what}: {err}") from None
        return path

    # ---- helpers -------------------------------------------------------------------------------

    def _require_model(self, conn: Any, name: str) -> None:
        if conn.execute(select(db.models.c.name).where(db.models.c.name == name)).first() is None:
            known = [r[0] for r in conn.execute(select(db.models.c.name).order_by(db.models.c.name))]
            raise BigModelError(
                f"no model named {name!r} in registry {self.location} "
                f"(models: {', '.join(known) if known else 'none'})"
            )

    def _require_version(self, conn: Any, name: str, version: int) -> None:
        q = select(db.versions.c.version).where(db.versions.c.name == name, db.versions.c.version == version)
        if conn.execute(q).first() is None:
            self._require_model(conn, name)
            have = [
                r[0]
                for r in conn.execute(
                    select(db.versions.c.version)
                    .where(db.versions.c.name == name)
                    .order_by(db.versions.c.version)
                )
            ]
            raise BigModelError(
                f"model {name} has no version {version} (versions: {', '.join(map(str, have)) or 'none'})"
            )

    def _version_of(self, conn: Any, ref: Ref) -> int:
        if ref.version is not None:
            self._require_version(conn, ref.name, ref.version)
            return ref.version
        alias = ref.alias or DEFAULT_ALIAS
        q = select(db.aliases.c.version).where(db.aliases.c.name == ref.name, db.aliases.c.alias == alias)
        version = conn.execute(q).scalar()
        if version is not None:
            return int(version)
        if ref.alias is not None:
            self._require_model(conn, ref.name)
            known = sorted(self._aliases_flat(conn, ref.name))
            raise BigModelError(
                f"model {ref.name} has no alias {ref.alias!r} (aliases: {', '.join(known) or 'none'})"
            )
        latest = conn.execute(
            select(func.max(db.versions.c.version)).where(db.versions.c.name == ref.name)
        ).scalar()
        if latest is None:
            self._require_model(conn, ref.name)
            raise BigModelError(f"model {ref.name} has no versions left")
        return int(latest)

    def _aliases_flat(self, conn: Any, name: str) -> list[str]:
        return [r[0] for r in conn.execute(select(db.aliases.c.alias).where(db.aliases.c.name == name))]

    def _aliases(self, conn: Any, name: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        q = select(db.aliases.c.alias, db.aliases.c.version).where(db.aliases.c.name == name)
        for alias, version in conn.execute(q.order_by(db.aliases.c.alias)):
            out.setdefault(version, []).append(alias)
        return out

    def _record(self, conn: Any, row: Any) -> dict[str, Any]:
        meta = json.loads(row.meta)
        lineage = meta.get("lineage") or {}
        parent = lineage.get("parent") or None
        parent_refs: list[str] = []
        if parent and parent.get("digest"):
            q = select(db.versions.c.name, db.versions.c.version).where(
                db.versions.c.digest == parent["digest"]
            )
            parent_refs = [f"{n}:{v}" for n, v in conn.execute(q)]
        dataset = meta.get("dataset") or {}
        return {
            "name": row.name,
            "version": row.version,
            "ref": f"{row.name}:{row.version}",
            "aliases": self._aliases(conn, row.name).get(row.version, []),
            "digest": row.digest,
            "created_at": row.created_at,
            "source": row.source,
            "bytes": row.bytes,
            "task": (meta.get("task") or {}).get("task"),
            "architecture": meta.get("architecture"),
            "features": len(meta.get("features") or []),
            "metrics": meta.get("metrics") or {},
            "method": lineage.get("method", "train"),
            "parent": parent,
            "parent_refs": parent_refs,
            "params": lineage.get("params") or {},
            "data_manifest_hash": lineage.get("data_manifest_hash") or dataset.get("content_hash"),
            "dataset": dataset.get("name"),
            "config": meta.get("config"),
            "onnx": meta.get("onnx"),
            "files": {
                r.file: {"sha256": r.sha256, "bytes": r.bytes}
                for r in conn.execute(
                    select(db.files).where(db.files.c.name == row.name, db.files.c.version == row.version)
                )
            },
        }
