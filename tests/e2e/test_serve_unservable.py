"""A registry holding a model this server cannot serve (a transformer LM whose KV cache does not fit
``--kv-cache-mb``): ``serve`` of the whole registry names it in one line and serves the others;
asked for by name, it is one line and exit 2; the repository extension's load answers 400, not 500
(issue 22: an LM, then unservable, exited 3 and printed nothing)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from bigmodel import artifacts
from bigmodel.models import build_model, transformer_architecture
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from bigmodel.tasks import TaskSpec
from tests.conftest import run_cli
from tests.models import make_model_dir

TOO_SMALL = ["--kv-cache-mb", "0.001"]  # one sequence of the tiny LM at context 16 takes 8 KiB
WHY = "--kv-cache-mb 0.001 cannot hold one sequence of this model"


def _lm_dir(path: Path) -> Path:
    arch = transformer_architecture("tiny", 16)
    torch.manual_seed(0)
    meta = artifacts.ModelMeta(architecture=arch, task=TaskSpec("lm", 256).to_json(), features=["bytes"])
    artifacts.write_model_dir(path, build_model(arch), meta)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("unservable")
    reg = Registry(tmp / "registry")
    reg.register(make_model_dir(tmp / "iris"), "iris")
    reg.register(_lm_dir(tmp / "lm"), "lm")
    return reg


def _post(url: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_whole_registry_serves_what_it_can_and_names_the_rest(registry: Registry, tmp_path: Path):
    args = ["--registry", registry.location, "--access-log", "off", *TOO_SMALL]
    with ServerProcess(args) as server:
        assert [m["name"] for m in server.info["models"]] == ["iris"]
        assert f"bigmodel serve: skipping lm: lm:1: {WHY}" in server.log()
        status, body = _post(f"{server.url}/v2/repository/models/lm/load")
        assert status == 400 and WHY in body["error"], (status, body)
        with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
        assert server.stop() == 0


def test_asking_for_it_by_name_is_one_line_and_exit_2(registry: Registry):
    proc = run_cli(
        "serve", "--registry", registry.location, "--models", "lm", "--port", "0", *TOO_SMALL, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: lm:1: {WHY}"), proc.stderr
    assert "Traceback" not in proc.stderr
