import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry, parse_ref, resolve
from bigmodel.registry.refs import MAX_VERSION, parse_version
from tests.models import make_model_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """Every test that takes ``reg`` runs on the default SQLite file and on a real PostgreSQL
    server (tests/pg.py; skipped where PostgreSQL is not installed)."""
    db_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    registry = Registry(tmp_path / "reg", db_url=db_url)
    yield registry
    registry.engine.dispose()  # let the test's database be dropped


def test_register_versions_aliases_and_resolve(tmp_path: Path, reg: Registry):
    a = make_model_dir(tmp_path / "a", seed=1)
    b = make_model_dir(tmp_path / "b", seed=2, onnx=True)
    v1 = reg.register(a, "iris")
    v2 = reg.register(b, "iris")
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v2["onnx"]["file"] == "model.onnx" and set(v2["files"]) == {
        "model.safetensors",
        "model.onnx",
        "model.json",
    }
    assert v1["digest"] == artifacts.digest(a) and v1["data_manifest_hash"] == "ab" * 32
    # NAME alone: latest until production is set, then production
    assert reg.show("iris")["version"] == 2
    reg.alias("iris", 1, "production")
    assert reg.show("iris")["version"] == 1 and reg.show("iris")["aliases"] == ["production"]
    reg.alias("iris", 2, "production")  # moving an alias
    assert reg.version_of("iris@production") == 2 and reg.show("iris:1")["aliases"] == []
    # resolve gives a checked directory with the registered bytes, loadable by the next stage
    path = resolve("iris:2", reg.location)
    assert artifacts.digest(path) == v2["digest"]
    assert (path / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    loaded = artifacts.load_model(path)
    assert loaded.meta.metrics == {"accuracy": pytest.approx(0.52)}
    # the source directory may change or vanish afterwards: the registry keeps its own copy
    (a / "model.safetensors").write_bytes(b"garbage")
    assert artifacts.digest(reg.resolve("iris:1")) == v1["digest"]
    assert [r["ref"] for r in reg.versions("iris")] == ["iris:1", "iris:2"]
    assert [r["ref"] for r in reg.compare(["iris"])] == ["iris:1", "iris:2"]


def test_lineage_parent_is_found_by_digest(tmp_path: Path, reg: Registry):
    parent = make_model_dir(tmp_path / "p")
    reg.register(parent, "base")
    child = make_model_dir(
        tmp_path / "c",
        seed=3,
        lineage=artifacts.Lineage(
            method="quantize",
            parent={"path": str(parent), "digest": artifacts.digest(parent)},
            params={"bits": 8},
        ),
    )
    rec = reg.register(child, "small")
    assert rec["method"] == "quantize" and rec["parent_refs"] == ["base:1"] and rec["params"] == {"bits": 8}


def test_delete_refuses_aliased_version_and_collects_unused_blobs(tmp_path: Path, reg: Registry):
    a = make_model_dir(tmp_path / "a")
    reg.register(a, "m")
    reg.register(a, "m")  # same bytes, second version: the blobs are shared
    reg.alias("m", 1, "production")
    with pytest.raises(BigModelError, match=r"m:1 is aliased as production.*--force"):
        reg.delete("m:1")
    out = reg.delete("m@production", force=True)
    assert out == {"name": "m", "version": 1, "deleted": True, "aliases_removed": ["production"]}
    sha = reg.show("m:2")["files"]["model.safetensors"]["sha256"]
    assert reg.blobs.exists(sha)  # still used by version 2
    reg.delete("m:2")
    assert not reg.blobs.exists(sha)
    assert reg.register(a, "m")["version"] == 3  # numbers are never reused
    with pytest.raises(BigModelError, match="name the version to delete"):
        reg.delete("m")


def test_changed_artifact_is_refused(tmp_path: Path, reg: Registry):
    rec = reg.register(make_model_dir(tmp_path / "a"), "m")
    blob = Path(reg.blobs.path(rec["files"]["model.safetensors"]["sha256"]))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    with pytest.raises(BigModelError, match=r"model\.safetensors of m:1 is corrupt"):
        reg.resolve("m:1")
    # a checked-out copy that changes later is refused too
    rec2 = reg.register(make_model_dir(tmp_path / "b", seed=5), "m")
    path = reg.resolve("m:2")
    assert path.name == rec2["digest"]
    (path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BigModelError, match="sha256 mismatch"):
        reg.resolve("m:2")


def test_bad_references_name_the_problem(tmp_path: Path, reg: Registry):
    reg.register(make_model_dir(tmp_path / "a"), "m")
    for ref, msg in [
        ("m:7", r"model m has no version 7 \(versions: 1\)"),
        ("m@staging", r"model m has no alias 'staging' \(aliases: none\)"),
        ("nope", r"no model named 'nope'.*\(models: m\)"),
    ]:
        with pytest.raises(BigModelError, match=msg):
            reg.show(ref)
    for text in ("m:x", "m:0", "bad name", "m@1x"):
        with pytest.raises(BigModelError):
            parse_ref(text)
    with pytest.raises(BigModelError, match="not a model directory"):
        reg.register(tmp_path, "m")


def test_versions_are_ascii_integers_in_range():
    # '²' and '３' pass str.isdigit; '²' then fails int() and '３' would be read as 3
    assert parse_version("3") == 3 and parse_version(str(MAX_VERSION)) == MAX_VERSION
    for text in ("²", "３", "0", "-1", "+1", " 1", "1.0", "", str(MAX_VERSION + 1), "9" * 30):
        assert parse_version(text) is None, text
        with pytest.raises(
            BigModelError, match=re.escape(f"bad model reference 'm:{text}'") + ".*integer from 1 to"
        ):
            parse_ref(f"m:{text}")


def test_object_store_url_through_fsspec(tmp_path: Path):
    reg = Registry("memory://bigmodel-test-registry", db_url=f"sqlite:///{tmp_path / 'meta.db'}")
    rec = reg.register(make_model_dir(tmp_path / "a"), "m")
    assert reg.blobs.fs.exists(reg.blobs.path(rec["digest"]))
    assert artifacts.digest(reg.resolve("m")) == rec["digest"]
    with pytest.raises(BigModelError, match="BIGMODEL_REGISTRY_DB"):
        Registry("memory://elsewhere")


WORKER = """
import sys, time
from bigmodel.registry import Registry
reg = Registry(sys.argv[1], db_url=sys.argv[5] if len(sys.argv) > 5 else None)
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
print(" ".join(str(reg.register(sys.argv[2], "shared")["version"]) for _ in range(int(sys.argv[4]))))
"""


def _race(root: Path, dirs: list[Path], each: int, db_url: str | None = None) -> list[int]:
    """Every process registers its directory ``each`` times as "shared", all starting at once."""
    start = time.time() + 4  # after every process has imported bigmodel
    extra = [db_url] if db_url else []
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(d), str(start), str(each), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    got = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got += [int(v) for v in out.split()]
    return got


def test_concurrent_processes_never_lose_or_duplicate_a_version(tmp_path: Path):
    dirs = [make_model_dir(tmp_path / f"m{i}", seed=i) for i in range(4)]
    Registry(tmp_path / "reg")  # create the database before the race, like a first `register`
    got = _race(tmp_path / "reg", dirs, 4)
    assert sorted(got) == list(range(1, 17))
    records = Registry(tmp_path / "reg").versions("shared")
    assert [r["version"] for r in records] == list(range(1, 17))
    by_digest = {artifacts.digest(d): 0 for d in dirs}
    for r in records:
        by_digest[r["digest"]] += 1
    assert set(by_digest.values()) == {4}


def test_names_and_aliases_refuse_a_trailing_newline():
    for text in ("m\n", "m@production\n", "m\n@production"):
        with pytest.raises(BigModelError, match="bad"):
            parse_ref(text)


def test_a_name_whose_last_version_was_deleted_is_not_listed(tmp_path: Path, reg: Registry):
    a = make_model_dir(tmp_path / "a")
    reg.register(a, "gone")
    reg.register(a, "kept")
    reg.delete("gone:1")
    assert reg.models() == ["kept"]  # what `serve` with no --models serves
    assert reg.register(a, "gone")["version"] == 2  # its numbers are still never reused


def test_a_damaged_database_is_refused_and_not_written(tmp_path: Path):
    reg = Registry(tmp_path / "reg")  # the SQLite file itself is damaged here
    a = make_model_dir(tmp_path / "a")
    reg.register(a, "m")
    reg.engine.dispose()
    db = tmp_path / "reg" / "registry.db"
    for side in db.parent.glob("registry.db-*"):  # WAL files: fold them in first
        side.unlink()
    raw = bytearray(db.read_bytes())
    for i in range(4096, min(len(raw), 8192), 7):  # one page scribbled over
        raw[i] ^= 0x5A
    db.write_bytes(bytes(raw))
    for create in (False, True):  # serve and list open it; register would create
        with pytest.raises(BigModelError, match=r"registry database .*registry\.db is damaged"):
            Registry(tmp_path / "reg", create=create).register(a, "m")
    assert db.read_bytes() == bytes(raw)
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BigModelError, match="is damaged: file is not a database"):
        Registry(tmp_path / "reg", create=False)


def test_register_replaces_a_damaged_blob_instead_of_reusing_it(tmp_path: Path, reg: Registry):
    a = make_model_dir(tmp_path / "a")
    rec = reg.register(a, "m")
    sha = rec["files"]["model.safetensors"]["sha256"]
    blob = Path(reg.blobs.path(sha))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    reg.register(a, "m")  # the same bytes again: the store must not trust what it holds
    assert reg.blobs.digest(sha) == sha
    reg.resolve("m:1")  # version 1 reads the repaired blob too


def test_gc_removes_what_killed_processes_left(tmp_path: Path, reg: Registry):
    import os

    rec = reg.register(make_model_dir(tmp_path / "a"), "m")
    sha = rec["files"]["model.safetensors"]["sha256"]
    stale = Path(reg.blobs.path(sha) + ".dead.tmp")
    young = Path(reg.blobs.path(sha) + ".live.tmp")
    stale.write_bytes(b"x" * 100)
    young.write_bytes(b"y")
    reg.resolve("m:1")
    half = reg.cache / ".abc.123.tmp"
    half.mkdir()
    old = reg.cache / ("0" * 64)  # a checkout of a version no longer registered
    old.mkdir()
    for p in (stale, half, old):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    out = reg.gc(older_than_s=3600)
    assert out["temporary_blobs"] == [str(stale)]
    assert sorted(out["checkouts"]) == sorted([half.name, old.name])
    assert young.exists() and not stale.exists() and not half.exists() and not old.exists()
    reg.resolve("m:1")  # the live checkout is untouched


def test_eight_processes_registering_at_once_on_postgresql(tmp_path: Path, postgres_url: str):
    """PostgreSQL's row lock on registry_lock serialises the writers: versions 1..8 once each."""
    dirs = [make_model_dir(tmp_path / f"m{i}", seed=i) for i in range(8)]
    Registry(tmp_path / "reg", db_url=postgres_url).engine.dispose()  # the tables, before the race
    got = _race(tmp_path / "reg", dirs, 1, postgres_url)
    assert sorted(got) == list(range(1, 9))
    reg = Registry(tmp_path / "reg", db_url=postgres_url)
    records = reg.versions("shared")
    reg.engine.dispose()
    assert [r["version"] for r in records] == list(range(1, 9))
    assert sorted(r["digest"] for r in records) == sorted(artifacts.digest(d) for d in dirs)


def test_a_folder_remembers_its_postgresql_database(tmp_path: Path, postgres_url: str):
    """Created with a database URL, the folder records it (no password): later processes that name
    only the folder use the same database, and one that names another database is refused."""
    reg = Registry(tmp_path / "reg", db_url=postgres_url.replace("://postgres@", "://postgres:pw@"))
    reg.register(make_model_dir(tmp_path / "a"), "m")
    reg.engine.dispose()
    assert json.loads((tmp_path / "reg" / "registry.json").read_text()) == {"database": postgres_url}
    again = Registry(tmp_path / "reg", create=False)
    assert again.versions("m")[0]["ref"] == "m:1" and not (tmp_path / "reg" / "registry.db").exists()
    again.engine.dispose()
    with pytest.raises(BigModelError, match="keeps its metadata in postgresql"):
        Registry(tmp_path / "reg", db_url=f"sqlite:///{tmp_path / 'other.db'}")
    Registry(tmp_path / "sqlite-reg").engine.dispose()  # an ordinary SQLite registry folder
    with pytest.raises(BigModelError, match=r"keeps its metadata in sqlite:///.*registry\.db"):
        Registry(tmp_path / "sqlite-reg", db_url=postgres_url)
