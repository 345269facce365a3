"""Delta Lake sources: ``delta:PATH[@VERSION]`` (PATH local or an fsspec-style URL such as
``s3://bucket/table``) read through delta-rs as the plain list of Parquet files of one version.

Both engines read a table this way: the transaction log says which files make up the version, and
those files are read as any Parquet source is. A partitioned table's partition columns are not in
its files: the log holds each file's values, and both engines add them to the file's rows as
constant columns (Spark joins them on by file name: its own reading of folder names garbles
non-ASCII values).
Tables that need more than that to read (deletion vectors in use, column mapping, unknown reader
features) are refused with a one-line error rather than read wrongly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from bigmodel.errors import BigModelError

PREFIX = "delta:"
# Reader features whose tables a file list still reads correctly: timestamps without a zone, other
# checkpoint layouts, a vacuum guard, and types widened later (every feature is cast to float32).
# deletionVectors and columnMapping are allowed only where unused (checked below).
_SAFE_READER_FEATURES = {
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "typeWidening",
    "typeWidening-preview",
    "deletionVectors",
    "columnMapping",
}


@dataclass(frozen=True)
class DeltaSnapshot:
    """One version of a Delta table, as the Parquet files that hold its rows."""

    path: str  # the table's location as given (local paths made absolute)
    version: int  # the version read
    files: list[str]  # absolute Parquet file URIs (local paths or e.g. s3://...), sorted
    schema: pa.Schema  # the table's schema at that version
    partitions: dict[str, dict[str, Any]]  # file URI -> its partition values (unpartitioned: empty)

    @property
    def partition_columns(self) -> list[str]:
        return list(next(iter(self.partitions.values()), {}))

    def with_partition_fields(self, file_schema: pa.Schema) -> pa.Schema:
        """A data file's schema with the partition columns added, in the table's column order."""
        fields = {f.name: f for f in file_schema}
        fields.update({c: self.schema.field(c) for c in self.partition_columns})
        names = [n for n in self.schema.names if n in fields] + [
            n for n in fields if n not in self.schema.names
        ]
        return pa.schema([fields[n] for n in names])

    @property
    def uri(self) -> str:
        """``delta:PATH@VERSION``: what the manifest records so the same rows can be read again."""
        return f"{PREFIX}{self.path}@{self.version}"


def is_delta(src: object) -> bool:
    """Whether ``src`` names a Delta table (``delta:...``)."""
    return isinstance(src, str) and src.startswith(PREFIX)


def parse(uri: str) -> tuple[str, int | None]:
    """``delta:PATH[@VERSION]`` -> (PATH, VERSION or None for the latest)."""
    if not is_delta(uri):
        raise BigModelError(f"{uri}: a Delta table is given as delta:PATH[@VERSION]")
    body = uri[len(PREFIX) :]
    path, at, tail = body.rpartition("@")
    if not at or "/" in tail:  # no '@', or one inside the path (user@host/...)
        path, version = body, None
    else:
        if not tail.isdigit():
            raise BigModelError(f"{uri}: the version after '@' must be a whole number >= 0, got '{tail}'")
        version = int(tail)
    if not path:
        raise BigModelError(f"{uri}: no table path; give delta:PATH[@VERSION]")
    if "://" not in path:
        path = os.path.abspath(path)
    return path.rstrip("/") or "/", version


def storage_options(path: str) -> dict[str, str] | None:
    """delta-rs options for an object-store path, from the environment fsspec/s3fs read too:
    ``AWS_ENDPOINT_URL`` (MinIO, moto or another S3) and the usual credentials; a plain-http
    endpoint must be allowed explicitly (delta-rs refuses http by default)."""
    if not path.startswith(("s3://", "s3a://")):
        return None
    opts: dict[str, str] = {}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"):
        if os.environ.get(key):
            opts[key] = os.environ[key]
    if "AWS_REGION" not in opts and os.environ.get("AWS_DEFAULT_REGION"):
        opts["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def snapshot(uri: str) -> DeltaSnapshot:
    """The Parquet files, version and schema of ``delta:PATH[@VERSION]`` (the latest version when
    none is given). One-line errors: not a Delta table, a version that does not exist (naming the
    latest), and tables a file list would read wrongly."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    path, version = parse(uri)
    opts = storage_options(path)
    if "://" not in path and not os.path.isdir(path):
        raise BigModelError(f"Delta table not found: {path} (no such folder)")
    try:
        if not DeltaTable.is_deltatable(path, storage_options=opts):
            raise BigModelError(f"{path} is not a Delta table (no _delta_log with commits); {uri}")
        dt = DeltaTable(path, storage_options=opts)
    except TableNotFoundError as err:
        raise BigModelError(f"{path} is not a Delta table: {_first_line(err)}") from None
    except (DeltaError, OSError) as err:
        raise BigModelError(f"cannot read Delta table {path}: {_first_line(err)}") from None
    latest = dt.version()
    if version is not None and version != latest:
        if version > latest:
            raise BigModelError(
                f"Delta table {path} has no version {version} (latest is {latest}); use @0..@{latest}"
            )
        try:
            dt.load_as_version(version)
        except (DeltaError, OSError) as err:  # its log entries were cleaned up (log retention)
            raise BigModelError(
                f"cannot read version {version} of Delta table {path} (latest is {latest}): {_first_line(err)}"
            ) from None
    _check_readable(dt, path)
    try:
        files = sorted(dt.file_uris())
        schema = pa.schema(dt.schema().to_arrow())
        columns = dt.metadata().partition_columns
        partitions = _partition_values(dt, files, columns, path) if columns else {}
    except (DeltaError, OSError) as err:
        raise BigModelError(f"cannot read Delta table {path}: {_first_line(err)}") from None
    return DeltaSnapshot(path=path, version=dt.version(), files=files, schema=schema, partitions=partitions)


def _partition_values(dt: Any, files: list[str], columns: list[str], path: str) -> dict[str, dict[str, Any]]:
    """Each file's partition values (typed as the table's schema has them), from its add action.
    Actions name files relative to the table and URL-encoded; file URIs end with the decoded name."""
    from urllib.parse import unquote

    actions = pa.table(dt.get_add_actions(flatten=True))
    rows = actions.select(["path", *(f"partition.{c}" for c in columns)]).to_pylist()
    by_name = {unquote(r["path"]).rsplit("/", 1)[-1]: r for r in rows}
    out = {}
    for uri in files:
        r = by_name.get(uri.rsplit("/", 1)[-1])
        if r is None or not uri.endswith(unquote(r["path"]).lstrip("/").split("://")[-1]):
            raise BigModelError(f"Delta table {path}: no partition values found for {uri} in its log")
        out[uri] = {c: r[f"partition.{c}"] for c in columns}
    return out


def with_partition_values(batch: pa.RecordBatch, values: dict[str, Any], schema: pa.Schema) -> pa.RecordBatch:
    """A data file's batch with its partition columns added (constant: the file's values), in the
    order of ``schema`` (``DeltaSnapshot.with_partition_fields``)."""
    cols = dict(zip(batch.schema.names, batch.columns, strict=True))
    for c, v in values.items():
        cols[c] = pa.repeat(pa.scalar(v, type=schema.field(c).type), batch.num_rows)
    names = [n for n in schema.names if n in cols] + [n for n in cols if n not in schema.names]
    return pa.RecordBatch.from_arrays([cols[n] for n in names], names=names)


def _check_readable(dt: Any, path: str) -> None:
    """Refuse a table version whose rows are not simply the rows of its Parquet files."""
    from deltalake.exceptions import DeltaError

    at = f"Delta table {path} (version {dt.version()})"
    features = set(dt.protocol().reader_features or [])
    unknown = sorted(features - _SAFE_READER_FEATURES)
    if unknown:
        raise BigModelError(f"{at} uses reader feature(s) {', '.join(unknown)}, which bigmodel cannot read")
    meta = dt.metadata()
    mode = meta.configuration.get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise BigModelError(
            f"{at} uses column mapping (mode {mode}): its Parquet files do not carry the column names; "
            "rewrite the table without it"
        )
    if "deletionVectors" in features:
        try:
            dvs = pa.RecordBatchReader.from_stream(dt.deletion_vectors())
            deleted = any(b.num_rows for b in dvs)
        except (DeltaError, OSError):  # a deletion vector it cannot even read is one in use
            deleted = True
        if deleted:
            raise BigModelError(
                f"{at} has deleted rows kept as deletion vectors; run OPTIMIZE/REORG (PURGE) on it first"
            )
