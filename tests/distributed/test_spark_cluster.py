"""``--engine spark`` on a real standalone cluster on loopback: a master and two workers started from
pyspark's own launcher (``spark-class``), stopped after. Each run is a CLI process, a driver of its
own. Output equals the local engine's on one and two workers (a table, and text for a language
model), after an executor is killed mid-job;
a driver killed mid-job commits nothing."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from bigmodel.data import load_manifest, prepare
from bigmodel.fsutil import atomic_dir
from tests.conftest import BIN, run_cli

pyspark = pytest.importorskip("pyspark")
if (
    not shutil.which("java")
    and not Path(os.environ.get("JAVA_HOME", "/nonexistent"), "bin", "java").is_file()
):
    pytest.skip("no Java 17+: --engine spark needs it (see make install)", allow_module_level=True)
SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"spark daemon exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"port {port} never opened")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    cls = str(SPARK_HOME / "bin" / "spark-class")
    port = _free_port()
    logs = tmp_path_factory.mktemp("spark-logs")
    procs: list[subprocess.Popen[bytes]] = []
    stack = contextlib.ExitStack()
    try:
        master = subprocess.Popen(
            [
                cls,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(_free_port()),
            ],
            env=env,
            stdout=stack.enter_context(open(logs / "master.log", "wb")),  # noqa: SIM115 (the stack closes it)
            stderr=subprocess.STDOUT,
        )
        procs.append(master)
        _wait_port(port, master)
        url = f"spark://127.0.0.1:{port}"
        for i in range(2):
            wport = _free_port()
            w = subprocess.Popen(
                [
                    cls,
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(wport),
                    "--webui-port",
                    str(_free_port()),
                    "--cores",
                    "1",
                    "--memory",
                    "1g",
                    "--work-dir",
                    str(tmp_path_factory.mktemp(f"work{i}")),
                ],
                env=env,
                stdout=stack.enter_context(open(logs / f"worker{i}.log", "wb")),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            procs.append(w)
            _wait_port(wport, w)
        time.sleep(2)  # the workers register with the master
        yield url, procs[1:]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        stack.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CSV folder and its locally prepared dataset (the reference)."""
    root = tmp_path_factory.mktemp("spark-src")
    src = root / "csv"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        x = rng.normal(size=(15000, 8)).round(5)
        t = pa.table({**{f"f{j}": x[:, j] for j in range(8)}, "label": rng.integers(0, 2, 15000)})
        pcsv.write_csv(t, src / f"part{i:02d}.csv")
    prepare(str(src), root / "local", seed=5)
    return src, root / "local"


def _cli(src: Path, dst: Path, url: str, *conf: str) -> list[str]:
    extra = [a for c in conf for a in ("--spark-conf", c)]
    return [
        "data",
        "prepare",
        str(src),
        str(dst),
        "--seed",
        "5",
        "--engine",
        "spark",
        "--master",
        url,
        "--spark-conf",
        "spark.executor.memory=512m",
        *extra,
        "--json",
    ]


@pytest.mark.slow  # ~55 s with the cluster's start (make test-slow; CI runs it)
@pytest.mark.parametrize("cores", [1, 2])
def test_one_and_two_workers_write_the_local_engines_dataset(cluster, source, tmp_path: Path, cores: int):
    url, _ = cluster
    src, local = source
    r = run_cli(*_cli(src, tmp_path / "out", url, f"spark.cores.max={cores}"), timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_manifest(tmp_path / "out").content_hash == load_manifest(local).content_hash


@pytest.mark.slow
def test_text_for_a_language_model_on_two_workers(cluster, tmp_path: Path):
    url, _ = cluster
    src = tmp_path / "text"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):  # ~3 MB: several tasks, each reading across file boundaries
        words = rng.choice(["model", "data", "spark", "shard", "byte"], size=200_000)
        (src / f"{i}.txt").write_text(" ".join(words))
    local = prepare(str(src), tmp_path / "local", task="lm", context=64, seed=5)
    args = _cli(src, tmp_path / "out", url, "spark.cores.max=2", "spark.default.parallelism=8")
    r = run_cli(*args, "--task", "lm", "--context", "64", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_manifest(tmp_path / "out").content_hash == local.content_hash


def _executors(workers: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    found = []
    for w in workers:
        for c in psutil.Process(w.pid).children(recursive=True):
            try:
                if "CoarseGrainedExecutorBackend" in " ".join(c.cmdline()):
                    found.append(c)
            except psutil.NoSuchProcess:
                pass
    return found


@pytest.mark.slow
def test_an_executor_killed_mid_job_changes_nothing(cluster, source, tmp_path: Path):
    url, workers = cluster
    src, local = source
    p = subprocess.Popen(
        [str(BIN / "bigmodel"), *_cli(src, tmp_path / "out", url, "spark.cores.max=2")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 120
    while not (ex := _executors(workers)) and time.monotonic() < end and p.poll() is None:
        time.sleep(0.2)
    assert ex, "no executor started"
    time.sleep(3)  # inside the job: the JVM start took the seconds before
    ex[0].kill()  # the JVM of our own worker's executor (the worker's child process)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert load_manifest(tmp_path / "out").content_hash == load_manifest(local).content_hash


@pytest.mark.slow
def test_a_driver_killed_mid_job_commits_nothing(cluster, source, tmp_path: Path):
    url, _ = cluster
    src, _ = source
    p = subprocess.Popen(
        [str(BIN / "bigmodel"), *_cli(src, tmp_path / "out", url, "spark.cores.max=2")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 120
    while time.monotonic() < end and p.poll() is None and not list(tmp_path.glob(".out.*.tmp")):
        time.sleep(0.1)  # the temporary folder appears when the shards start to be written
    assert p.poll() is None, "the job ended before the driver could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    assert not (tmp_path / "out").exists()
    left = list(tmp_path.glob(f".out.{p.pid}@{socket.gethostname()}~*.tmp"))
    assert left  # nothing ran to remove it: the next writer of out does (its process is gone)
    with atomic_dir(tmp_path / "out"):
        pass
    assert not [f for f in left if f.exists()]
