"""A registry whose artifacts live on S3 (moto's server on loopback), driven by the CLI and served by
the real server process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import fsspec

from bigmodel.serve.launch import ServerProcess
from tests.conftest import run_cli
from tests.models import make_model_dir


def test_cli_registers_to_s3_and_a_server_serves_from_it(tmp_path: Path, s3_bucket: str):
    """The CLI and the real server process, as a user with their own S3 runs them: artifacts on S3
    (``--registry s3://...``), metadata in the database ``$BIGMODEL_REGISTRY_DB`` names."""
    env = {
        "BIGMODEL_REGISTRY_DB": f"sqlite:///{tmp_path / 'meta.db'}",
        "BIGMODEL_HOME": str(tmp_path / "home"),
    }
    location = f"s3://{s3_bucket}/team-registry"
    model = make_model_dir(tmp_path / "a", seed=3)
    done = run_cli(
        "registry", "register", str(model), "--name", "shared", "--registry", location, "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["version"] == 1
    with ServerProcess(["--registry", location, "--models", "shared"], env=env) as server:
        body = {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", "data": [0.5] * 6}]}
        req = urllib.request.Request(
            f"{server.url}/v2/models/shared/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())
    assert out["model_version"] == "1"
    assert any(o["name"] == "probabilities" for o in out["outputs"])

    # A server on another machine (a fresh cache) whose S3 object was changed refuses at start.
    sha = record["files"]["model.safetensors"]["sha256"]
    fsspec.filesystem("s3").pipe(f"{s3_bucket}/team-registry/blobs/sha256/{sha[:2]}/{sha}", b"not weights")
    env["BIGMODEL_HOME"] = str(tmp_path / "home2")
    refused = run_cli(
        "serve", "--registry", location, "--models", "shared", "--port", "0", env=env, timeout=60
    )
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"corrupt: s3://{s3_bucket}/team-registry/blobs/sha256/" in refused.stderr, refused.stderr
