"""Shared fixtures: an isolated BIGMODEL_HOME and small prepared datasets."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # One cache per test session (built-in datasets are prepared once), never the user's ~/.bigmodel.
    home = tmp_path_factory.getbasetemp() / "bigmodel-home"
    monkeypatch.setenv("BIGMODEL_HOME", str(home))
    return home


@pytest.fixture
def small_parquet(tmp_path: Path) -> Path:
    """A 600-row, 5-feature binary Parquet file with a string label."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 5)).astype(np.float32) * [1, 10, 100, 0.1, 1] + [0, 5, -3, 1, 0]
    y = np.where(x[:, 0] + 0.1 * x[:, 1] > 0.5, "yes", "no")
    path = tmp_path / "small.parquet"
    pq.write_table(pa.table({**{f"x{j}": x[:, j] for j in range(5)}, "target": y}), path)
    return path


@pytest.fixture
def prepared(tmp_path: Path, small_parquet: Path) -> Path:
    from bigmodel.data import prepare

    dst = tmp_path / "prepared"
    prepare(str(small_parquet), dst, label="target", seed=0)
    return dst


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``bigmodel`` console script as a user would."""
    return subprocess.run(
        [str(BIN / "bigmodel"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=str(ROOT),
    )


def open_files() -> list[str]:
    """What this process has open (Linux): the paths behind /proc/self/fd, "(deleted)" and all."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed by now
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of one throwaway PostgreSQL server for the whole session (tests/pg.py);
    the test skips, saying why, where PostgreSQL or its driver is not installed."""
    from tests import pg

    with pg.server() as (url, why):
        if url is None:
            pytest.skip(why)
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on that server: a ``postgresql+psycopg://`` URL, dropped after the test."""
    from tests import pg

    with pg.database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of one moto S3 server for the whole session (tests/s3.py); the test skips,
    saying why, where moto's server or s3fs is not installed."""
    from tests import s3

    with s3.server() as (url, why):
        if url is None:
            pytest.skip(why)
        yield url


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket; this test's environment (and the processes it starts) reaches the server
    through ``AWS_ENDPOINT_URL`` and test credentials, as a user would point at their own S3."""
    from tests import s3

    for key, value in {**s3.CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    return s3.new_bucket(s3_server)
