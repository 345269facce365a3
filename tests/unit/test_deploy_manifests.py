"""deploy/ agrees with itself and with the server: the Dockerfile's entrypoint parses with the real
CLI, the KServe ServingRuntime's ports, args and probes name what that entrypoint listens on and
routes the server has, and the InferenceService example picks that runtime."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import yaml

from bigmodel.cli import build_parser
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the model
HTTP_PORT, GRPC_PORT = "8080", "8081"


def entrypoint() -> list[str]:
    """The command the image runs: the Dockerfile's ENTRYPOINT, in exec (JSON) form."""
    lines = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.startswith("ENTRYPOINT ")]
    assert len(lines) == 1, lines
    cmd = json.loads(lines[0].removeprefix("ENTRYPOINT "))  # exec form: bigmodel is PID 1 and gets SIGTERM
    assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd), cmd
    return cmd


def manifest(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "kserve" / name).read_text())
    assert isinstance(doc, dict)
    return doc


def runtime_args(name: str = "iris") -> list[str]:
    """What KServe appends to the entrypoint, with ``{{.Name}}`` filled in as it would."""
    container = manifest("servingruntime.yaml")["spec"]["containers"][0]
    return [a.replace("{{.Name}}", name) for a in container.get("args", [])]


def _parsed(cmd: list[str]) -> argparse.Namespace:
    assert cmd[:2] == ["bigmodel", "serve"], cmd
    return build_parser().parse_args(cmd[1:])


def test_the_entrypoint_serves_mnt_models_on_the_container_ports():
    args = _parsed(entrypoint())
    assert args.model_dir == MODEL_DIR and args.host == "0.0.0.0"
    assert str(args.port) == HTTP_PORT and str(args.grpc_port) == GRPC_PORT
    assert args.registry is None and args.models is None  # one directory, no registry
    expose = re.search(r"^EXPOSE (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert expose is not None and expose.group(1).split() == [HTTP_PORT, GRPC_PORT]


def test_the_image_pins_the_tested_torch():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pinned = re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.M)
    lock = re.search(r"^torch==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert pinned and lock and pinned.group(1) == lock.group(1)
    assert "--constraint requirements.lock" in dockerfile and "ARG BASE_IMAGE=python:3.11-slim" in dockerfile


def test_the_serving_runtime_matches_the_entrypoint_and_the_routes():
    from starlette.routing import Route

    from bigmodel.serve import ServeConfig, create_app

    rt = manifest("servingruntime.yaml")
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1" and rt["kind"] == "ServingRuntime"
    spec = rt["spec"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["bigmodel"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"

    # the appended args parse, name the model, and change none of the entrypoint's ports or paths
    args = _parsed(entrypoint() + runtime_args("iris"))
    assert args.model_name == "iris" and args.model_dir == MODEL_DIR
    assert str(args.port) == HTTP_PORT and str(args.grpc_port) == GRPC_PORT
    assert any("{{.Name}}" in a for a in container["args"])  # the InferenceService's name

    ports = {p["name"]: str(p["containerPort"]) for p in container["ports"]}
    assert ports == {"http1": HTTP_PORT, "h2c": GRPC_PORT}  # KServe's names for REST and gRPC

    app = create_app(ServeConfig(model_dir="/nonexistent", access_log=None))  # loads nothing yet
    paths = {r.path for r in app.router.routes if isinstance(r, Route)}
    probes = {k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    for probe in probes.values():
        assert probe["path"] in paths and str(probe["port"]) == HTTP_PORT, probe
    notes = rt["metadata"]["annotations"]
    assert notes["prometheus.kserve.io/port"] == HTTP_PORT and notes["prometheus.kserve.io/path"] in paths


def test_the_inference_service_uses_the_runtime():
    rt, isvc = manifest("servingruntime.yaml"), manifest("inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert model["storageUri"]
    # two container ports need RawDeployment (Knative allows one)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # the pod waits for a drain: --timeout-s (30 s by default) bounds it
    assert isvc["spec"]["predictor"]["terminationGracePeriodSeconds"] > 30
