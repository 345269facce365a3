"""The registry with its artifacts on S3 (moto's server on loopback, tests/s3.py) and its metadata in
SQLite or a real PostgreSQL server: what a team sharing one registry from several machines runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from tests.models import make_model_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path, s3_bucket: str) -> Iterator[Registry]:
    db_url = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'meta.db'}"
    )
    registry = Registry(f"s3://{s3_bucket}/registry", db_url=db_url)
    yield registry
    registry.engine.dispose()


def test_register_resolve_and_delete_on_s3(tmp_path: Path, reg: Registry):
    a, b = make_model_dir(tmp_path / "a", seed=1), make_model_dir(tmp_path / "b", seed=2, onnx=True)
    r1, r2 = reg.register(a, "m"), reg.register(b, "m")
    assert (r1["version"], r2["version"]) == (1, 2)
    s3 = fsspec.filesystem("s3")
    for rec in (r1, r2):
        for f in rec["files"].values():
            assert s3.exists(reg.blobs.path(f["sha256"]))
    assert not s3.glob(f"{reg.blobs.root}/blobs/sha256/*/*.tmp")  # uploads committed, none left half-way
    # a second Registry object (another machine) resolves the same bytes from S3 into its own cache
    other = Registry(reg.location, db_url=reg.db_url)
    try:
        assert artifacts.digest(other.resolve("m:1")) == r1["digest"]
        assert artifacts.digest(other.resolve("m")) == r2["digest"]
    finally:
        other.engine.dispose()
    reg.delete("m:1")
    reg.gc(older_than_s=0)
    only_in_1 = {f["sha256"] for f in r1["files"].values()} - {f["sha256"] for f in r2["files"].values()}
    assert only_in_1 and not any(s3.exists(reg.blobs.path(sha)) for sha in only_in_1)


def test_a_changed_blob_on_s3_is_refused(tmp_path: Path, reg: Registry):
    rec = reg.register(make_model_dir(tmp_path / "a"), "m")
    sha = rec["files"]["model.safetensors"]["sha256"]
    s3 = fsspec.filesystem("s3")
    s3.pipe(reg.blobs.path(sha), b"not the weights")
    with pytest.raises(BigModelError, match="corrupt"):
        reg.resolve("m")
    s3.rm(reg.blobs.path(sha))
    with pytest.raises(BigModelError, match="missing"):
        reg.resolve("m")


def test_a_mistyped_or_unreachable_location_is_refused(tmp_path: Path, reg: Registry):
    """The location keeps registry.json naming its database, as a folder does: a wrong bucket or
    prefix, or another database, is refused in one line instead of being taken for another registry."""
    reg.register(make_model_dir(tmp_path / "a"), "m")
    bucket = reg.location.removeprefix("s3://").split("/")[0]
    for wrong in (f"s3://{bucket}/other-prefix", f"s3://{bucket}-typo/registry"):
        with pytest.raises(BigModelError, match="no registry at"):
            Registry(wrong, db_url=reg.db_url, create=False)
        with pytest.raises(BigModelError, match="already holds a registry whose artifacts are elsewhere"):
            Registry(wrong, db_url=reg.db_url)  # register there would split the registry in two
    with pytest.raises(BigModelError, match="keeps its metadata in"):
        Registry(reg.location, db_url=f"sqlite:///{tmp_path / 'another.db'}")
    # a store that cannot be reached (a fresh process: s3fs caches its clients): one line, exit 2
    from tests.conftest import run_cli

    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "BIGMODEL_REGISTRY_DB": reg.db_url,
    }
    r = run_cli("registry", "list", "--registry", reg.location, env=env, timeout=120)
    assert r.returncode == 2 and "cannot reach registry" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
