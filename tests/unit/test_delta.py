"""Delta Lake sources (``delta:PATH[@VERSION]``) in the local engine: time travel by version, the
version recorded in the manifest, and one-line refusals."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from bigmodel.data import load_manifest, prepare
from bigmodel.data.delta import parse, snapshot
from bigmodel.errors import BigModelError
from tests.conftest import run_cli

deltalake = pytest.importorskip("deltalake")


def _rows(n: int, seed: int) -> pa.Table:
    x = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    return pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": (x[:, 0] > 0).astype(np.int64)})


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """Version 0: 300 rows; 1: 500 rows (an append); 2: 120 rows (an overwrite)."""
    path = tmp_path / "table"
    deltalake.write_deltalake(str(path), _rows(300, 0))
    deltalake.write_deltalake(str(path), _rows(200, 1), mode="append")
    deltalake.write_deltalake(str(path), _rows(120, 2), mode="overwrite")
    return path


def _total(root: Path) -> int:
    return sum(s.rows for s in load_manifest(root).splits.values())


def test_each_version_prepares_its_rows_and_records_it(table: Path, tmp_path: Path):
    for at, rows, version in (("@0", 300, 0), ("@1", 500, 1), ("@2", 120, 2), ("", 120, 2)):
        dst = tmp_path / f"ds{at or '-latest'}"
        m = prepare(f"delta:{table}{at}", dst)
        assert _total(dst) == rows
        assert m.source_version == version and m.source == f"delta:{table}@{version}"
        assert load_manifest(dst).source_version == version
        assert m.name == "table"
    # The recorded source reads the same rows again: same content hash.
    again = prepare(load_manifest(tmp_path / "ds@1").source, tmp_path / "again")
    assert again.content_hash == load_manifest(tmp_path / "ds@1").content_hash


def test_snapshot_lists_the_files_of_a_version(table: Path):
    s0, s1 = snapshot(f"delta:{table}@0"), snapshot(f"delta:{table}@1")
    assert (s0.version, len(s0.files), s1.version, len(s1.files)) == (0, 1, 1, 2)
    assert set(s0.files) < set(s1.files) and s1.files == sorted(s1.files)
    assert all(Path(f).is_absolute() and f.endswith(".parquet") for f in s1.files)
    assert s1.schema.names == ["a", "b", "c", "label"]


def test_missing_version_is_one_line_exit_2_and_nothing_written(table: Path, tmp_path: Path):
    dst = tmp_path / "ds"
    r = run_cli("data", "prepare", f"delta:{table}@7", str(dst))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "no version 7" in err and "latest is 2" in err and str(table) in err
    assert not dst.exists() and [p.name for p in tmp_path.iterdir()] == ["table"]


@pytest.mark.parametrize("uri", ["plain", "missing", "bad-version"])
def test_not_a_delta_table_is_one_line(uri: str, table: Path, tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    pcsv.write_csv(_rows(10, 0), plain / "a.csv")
    src = {
        "plain": f"delta:{plain}",
        "missing": f"delta:{tmp_path / 'nope'}",
        "bad-version": f"delta:{table}@latest",
    }[uri]
    with pytest.raises(BigModelError) as err:
        prepare(src, tmp_path / "ds")
    assert len(str(err.value).splitlines()) == 1
    assert {"plain": "not a Delta table", "missing": "not found", "bad-version": "whole number"}[uri] in str(
        err.value
    )
    assert not (tmp_path / "ds").exists()


def test_parse_keeps_at_signs_inside_the_path():
    assert parse("delta:s3://user@host/t") == ("s3://user@host/t", None)
    assert parse("delta:s3://b/t@3") == ("s3://b/t", 3)


def _commit(table: Path, actions: list[dict]) -> None:
    log = sorted((table / "_delta_log").glob("*.json"))
    n = int(log[-1].stem) + 1
    (table / "_delta_log" / f"{n:020d}.json").write_text("".join(json.dumps(a) + "\n" for a in actions))


def test_deletion_vectors_in_use_are_refused(table: Path, tmp_path: Path):
    """A later commit (as Spark writes it) marks rows of a file deleted in a deletion vector: listing
    the files would read them back, so the version is refused; the version before still reads."""
    add = next(
        json.loads(line)["add"]
        for line in (table / "_delta_log" / f"{2:020d}.json").read_text().splitlines()
        if "add" in json.loads(line)
    )
    dv = {"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "offset": 1, "sizeInBytes": 36}
    protocol = {"minReaderVersion": 3, "minWriterVersion": 7}
    _commit(
        table,
        [
            {
                "protocol": {
                    **protocol,
                    "readerFeatures": ["deletionVectors"],
                    "writerFeatures": ["deletionVectors"],
                }
            },
            {"remove": {"path": add["path"], "deletionTimestamp": 1, "dataChange": True}},
            {"add": {**add, "deletionVector": {**dv, "cardinality": 1}}},
        ],
    )
    with pytest.raises(BigModelError, match="deletion vectors"):
        prepare(f"delta:{table}", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert prepare(f"delta:{table}@2", tmp_path / "ds2").source_version == 2


def _partitioned(root: Path, n: int = 600) -> tuple[Path, Path]:
    """The same rows as a table partitioned by a string label (odd characters, non-ASCII), an
    integer column in the middle of the schema and a float one, and as an unpartitioned table."""
    rng = np.random.default_rng(4)
    rows = pa.table(
        {
            "a": rng.normal(size=n),
            "k": rng.integers(0, 3, n),
            "b": rng.normal(size=n),
            "w": rng.choice([-3.0, 1e-7], n),  # folders w=-3 and w=0.0000001
            "label": rng.choice(["no", "日本 é", "a b/c=d%"], n),
        }
    )
    part, flat = root / "part", root / "flat"
    deltalake.write_deltalake(str(part), rows, partition_by=["label", "k", "w"])
    deltalake.write_deltalake(str(flat), rows)
    return part, flat


def test_a_partitioned_table_reads_its_partition_values_from_the_log(tmp_path: Path):
    part, flat = _partitioned(tmp_path)
    snap = snapshot(f"delta:{part}")
    assert snap.partition_columns == ["label", "k", "w"] and len(snap.files) == 18
    m = prepare(f"delta:{part}", tmp_path / "p", seed=2)
    assert m.features == ["a", "k", "b", "w"] and m.label_values == ["a b/c=d%", "no", "日本 é"]
    # the shuffled rows are a function of the rows alone: the same dataset as the flat table's
    assert m.content_hash == prepare(f"delta:{flat}", tmp_path / "f", seed=2).content_hash


def test_column_mapped_tables_are_refused(tmp_path: Path):
    mapped = tmp_path / "mapped"
    deltalake.write_deltalake(str(mapped), _rows(50, 0))
    meta = next(
        json.loads(line)["metaData"]
        for line in (mapped / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
        if "metaData" in json.loads(line)
    )
    meta = {**meta, "configuration": {"delta.columnMapping.mode": "name"}}
    _commit(mapped, [{"metaData": meta}])
    with pytest.raises(BigModelError, match="column mapping"):
        snapshot(f"delta:{mapped}")
