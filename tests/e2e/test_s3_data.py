"""Data on object storage (moto's S3 server on loopback, reached through ``AWS_ENDPOINT_URL`` as a
user reaches MinIO or their own S3): ``data prepare`` from and to s3://, a Delta table on S3, and
``train`` reading a dataset there, all through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from bigmodel.data import load_manifest
from tests.conftest import run_cli


def _rows(n: int, seed: int) -> pa.Table:
    x = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    cols = {f"x{j}": x[:, j] for j in range(4)}
    return pa.table({**cols, "label": np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")})


def _json(r) -> dict:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """The same rows in a CSV and a Parquet file, locally."""
    raw = tmp_path / "raw"
    raw.mkdir()
    pcsv.write_csv(_rows(300, 0), raw / "a.csv")
    pq.write_table(_rows(500, 1), raw / "b.parquet")
    return raw


def test_prepare_s3_to_s3_and_local_equals_local_and_train_reads_it(
    tmp_path: Path, s3_bucket: str, raw: Path
):
    fs = fsspec.filesystem("s3")
    for f in raw.iterdir():
        fs.put_file(str(f), f"{s3_bucket}/raw/{f.name}")
    env = {"BIGMODEL_HOME": str(tmp_path / "home")}
    local = _json(run_cli("data", "prepare", str(raw), str(tmp_path / "local"), "--json", env=env))
    remote = f"s3://{s3_bucket}/prepared/ds"
    on_s3 = _json(run_cli("data", "prepare", f"s3://{s3_bucket}/raw/", remote, "--json", env=env))
    to_local = _json(
        run_cli("data", "prepare", f"s3://{s3_bucket}/raw/", str(tmp_path / "from-s3"), "--json", env=env)
    )
    for out in (on_s3, to_local):
        assert out["rows"] == local["rows"] and out["content_hash"] == local["content_hash"]
    assert sum(local["rows"].values()) == 800
    # On S3: the shards and the manifest (the commit marker), and nothing else.
    names = sorted(p.split("/prepared/ds/", 1)[1] for p in fs.find(remote))
    assert names == ["manifest.json", "train/part-00000.parquet", "val/part-00000.parquet"]
    stats = _json(run_cli("data", "stats", remote, "--json", env=env))
    assert stats["content_hash"] == local["content_hash"] and stats["label_values"] == ["no", "yes"]
    # Preparing over it again is refused; nothing is overwritten.
    again = run_cli("data", "prepare", str(raw), remote, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    run = _json(
        run_cli(
            "train",
            "--dataset",
            remote,
            "--epochs",
            "1",
            "--run-dir",
            str(tmp_path / "run"),
            "--json",
            env=env,
        )
    )
    assert run["epochs"] == 1 and 0.0 <= run["metrics"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    lineage = json.loads((tmp_path / "run" / "model.json").read_text())
    assert remote in json.dumps(lineage)  # the model says which dataset it was trained on
    cached = list((tmp_path / "home" / "datasets" / "remote").iterdir())
    assert len(cached) == 1 and load_manifest(cached[0]).content_hash == local["content_hash"]


def test_half_written_s3_dataset_is_refused(tmp_path: Path, s3_bucket: str, prepared: Path):
    """Shards without a manifest (an upload that was killed) are never trained on."""
    fs = fsspec.filesystem("s3")
    m = load_manifest(prepared)
    for f in m.splits["train"].files + m.splits["val"].files:
        fs.put_file(str(prepared / f), f"{s3_bucket}/half/{f}")
    r = run_cli(
        "train",
        "--dataset",
        f"s3://{s3_bucket}/half",
        "--epochs",
        "1",
        "--run-dir",
        str(tmp_path / "run"),
        env={"BIGMODEL_HOME": str(tmp_path / "home")},
    )
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "no manifest.json" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_delta_table_on_s3_prepares_at_a_version(tmp_path: Path, s3_bucket: str):
    deltalake = pytest.importorskip("deltalake")
    from bigmodel.data.delta import storage_options

    table = f"s3://{s3_bucket}/lake/events"
    deltalake.write_deltalake(table, _rows(200, 0), storage_options=storage_options(table))
    deltalake.write_deltalake(table, _rows(100, 1), mode="append", storage_options=storage_options(table))
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://")  # delta-rs needs http allowed: we do that
    for at, rows, version in (("@0", 200, 0), ("", 300, 1)):
        dst = tmp_path / f"ds{at}"
        out = _json(run_cli("data", "prepare", f"delta:{table}{at}", str(dst), "--json"))
        assert sum(out["rows"].values()) == rows
        m = load_manifest(dst)
        assert m.source == f"delta:{table}@{version}" and m.source_version == version
    missing = run_cli("data", "prepare", f"delta:{table}@5", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no version 5 (latest is 1)" in missing.stderr
    assert not (tmp_path / "none").exists()


def test_a_tampered_s3_shard_is_refused_and_not_cached(tmp_path: Path, s3_bucket: str, prepared: Path):
    from bigmodel.data import remote
    from bigmodel.errors import BigModelError

    url = f"s3://{s3_bucket}/ds"
    remote.upload(prepared, load_manifest(prepared), url)
    fs = fsspec.filesystem("s3")
    shard = load_manifest(prepared).splits["train"].files[0]
    fs.pipe_file(f"{s3_bucket}/ds/{shard}", b"not the shard")
    with pytest.raises(BigModelError, match="does not match its manifest hash"):
        remote.fetch(url, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_cached_copy_missing_a_shard_is_copied_again(tmp_path: Path, s3_bucket: str, prepared: Path):
    from bigmodel.data import remote

    url = f"s3://{s3_bucket}/cached"
    remote.upload(prepared, load_manifest(prepared), url)
    first = remote.fetch(url, tmp_path / "cache")
    shard = load_manifest(prepared).splits["val"].files[0]
    (first / shard).unlink()
    again = remote.fetch(url, tmp_path / "cache")
    assert again == first and (again / shard).read_bytes() == (prepared / shard).read_bytes()


def test_object_storage_failures_are_one_line(tmp_path: Path, s3_bucket: str, small_parquet: Path):
    """An endpoint that does not answer, and --engine spark on s3:// (no Hadoop s3a connector here):
    one line each, exit 2, before any work."""
    down = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    r = run_cli(
        "data", "prepare", f"s3://{s3_bucket}/raw/", str(tmp_path / "d"), "--label", "target", env=down
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    for src, dst in (
        (f"s3://{s3_bucket}/raw/", str(tmp_path / "e")),
        (str(small_parquet), f"s3://{s3_bucket}/p"),
    ):
        r = run_cli("data", "prepare", src, dst, "--label", "target", "--engine", "spark")
        assert r.returncode == 2 and "--engine spark reads and writes local" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "e").exists()
