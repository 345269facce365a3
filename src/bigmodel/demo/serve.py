"""The demo's serving step: registry -> alias -> server -> tritonclient -> metrics -> clean stop."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel import artifacts, console
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from bigmodel.serve.client import read_rows
from bigmodel.serve.launch import ServerProcess


def demo_serve(
    work: Path,
    model_dir: str | Path,
    csv: Path,
    *,
    label: str,
    say: Callable[..., None],
    compressed: dict[str, str] | None = None,
    json_mode: bool = False,
) -> dict[str, Any]:
    """Register ``model_dir`` (PyTorch), its ONNX export and the ``compressed`` model directories
    (``{"int8": dir, ...}``) as versions of one model; alias the ONNX one ``production`` and the
    int8 one ``staging``; serve production, the PyTorch and the int8 version, send real rows from
    ``csv`` with tritonclient, and print answers and metrics."""
    try:
        import tritonclient.http as th
        import tritonclient.http.aio as tha
    except ImportError:
        raise BigModelError("the serving demo needs tritonclient: pip install 'tritonclient[http]'") from None
    from bigmodel.compress import export_onnx

    name = "breast_cancer"
    reg = Registry(work / "registry")
    compressed = compressed or {}
    say(
        f"[bold]5. registry[/bold] register the model, its ONNX export and the compressed models "
        f"({', '.join(compressed) or 'none'}) as versions of {name!r}, in {reg.location}"
    )
    torch_version = reg.register(model_dir, name)["version"]
    if not getattr(artifacts.read_meta(model_dir), "onnx", None):
        export_onnx(model_dir)
    onnx_version = reg.register(model_dir, name)["version"]
    reg.alias(name, onnx_version, "production")
    versions = {"pytorch": torch_version, "onnx": onnx_version}
    for kind, folder in compressed.items():
        versions[kind] = reg.register(folder, name)["version"]
    int8_version = versions.get("int8")
    if int8_version is not None:
        reg.alias(name, int8_version, "staging")
    console.show(_registry_table(reg, name), json_mode=json_mode)

    served = [f"{name}@production (ONNX Runtime)", f"{name}:{torch_version} (PyTorch)"]
    served += [f"{name}@staging = {name}:{int8_version} (int8)"] if int8_version is not None else []
    say(f"[bold]6. serve[/bold] {', '.join(served)} over the Open Inference Protocol")
    models = [name, f"{name}:{torch_version}"] + (
        [f"{name}:{int8_version}"] if int8_version is not None else []
    )
    args = ["--registry", reg.location, "--models", ",".join(models)]
    args += ["--access-log", str(work / "serve-access.log"), "--max-queue-delay-ms", "1"]
    server = ServerProcess(args).start()
    try:
        host = server.url.removeprefix("http://")
        c = th.InferenceServerClient(host)
        meta = c.get_model_metadata(name)
        x_all = read_rows(csv, meta["parameters"]["features"])
        import pyarrow.csv as pcsv

        truth = pcsv.read_csv(csv).column(label).to_pylist()
        picks = np.linspace(0, len(x_all) - 1, 6).astype(int)
        x = x_all[picks]
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary tensor data, tritonclient's default
        prod = c.infer(name, [inp])
        inp.set_data_from_numpy(x, binary_data=False)  # JSON tensors
        outs = [th.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "label")]
        pinned = c.infer(name, [inp], str(torch_version), outputs=outs)
        labels = [_text(v) for v in prod.as_numpy("label").tolist()]
        probs = prod.as_numpy("probabilities").max(axis=1)
        rows = [
            [int(i), truth[i], labels[k], float(probs[k]), _text(pinned.as_numpy("label")[k])]
            for k, i in enumerate(picks)
        ]
        header = [
            "row",
            "true label",
            "predicted (ONNX Runtime)",
            "probability",
            f"version {torch_version} (PyTorch)",
        ]
        if int8_version is not None:
            small = c.infer(name, [inp], str(int8_version), outputs=outs)
            header.append(f"version {int8_version} (int8)")
            for k, row in enumerate(rows):
                row.append(_text(small.as_numpy("label")[k]))
        table = console.grid_table(
            f"answers from {server.url} (production = version {prod.get_response()['model_version']})",
            header,
            rows,
        )

        async def burst() -> None:  # 64 concurrent clients, so the batcher has something to merge
            aio = tha.InferenceServerClient(host, conn_limit=64)
            try:
                jobs = []
                for i in range(256):
                    one = th.InferInput("input", [1, x_all.shape[1]], "FP32")
                    one.set_data_from_numpy(x_all[i % len(x_all)][None])
                    jobs.append(aio.infer(name, [one]))
                await asyncio.gather(*jobs)
            finally:
                await aio.close()

        asyncio.run(burst())
        stats = _metrics_summary(urllib.request.urlopen(server.url + "/metrics").read().decode())
    finally:
        code = server.stop()
    stats["clean shutdown"] = code == 0
    console.show(table, console.kv_table("serving metrics (from /metrics)", stats), json_mode=json_mode)
    return {
        "registry": reg.location,
        "versions": versions,
        "url": server.url,
        "answers": rows,
        "metrics": stats,
    }


def _registry_table(reg: Registry, name: str) -> Any:
    """Every version of ``name``: its aliases, method (lineage) and validation metrics."""
    rows = []
    for v in reg.versions(name):
        rows.append(
            [v["version"], ", ".join(v["aliases"]), v["method"], v["bytes"], v["metrics"].get("accuracy", "")]
        )
    return console.grid_table(
        f"registry: {name}", ["version", "aliases", "method", "bytes", "val accuracy"], rows
    )


def _text(v: Any) -> str:
    """A BYTES element: bytes from binary tensor data, str from JSON."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _metrics_summary(text: str) -> dict[str, Any]:
    """Totals over every model version from the Prometheus text."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bigmodel_"):
            key = line.split("{")[0].split(" ")[0]
            sums[key] = sums.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    requests = sums.get("bigmodel_inference_requests_total", 0.0)
    batches = sums.get("bigmodel_inference_batch_size_count", 0.0)
    lat_n = sums.get("bigmodel_inference_request_duration_seconds_count", 0.0) or 1.0
    q_n = sums.get("bigmodel_inference_queue_duration_seconds_count", 0.0) or 1.0
    return {
        "requests": int(requests),
        "forward passes": int(batches),
        "mean batch size": sums.get("bigmodel_inference_batch_size_sum", 0.0) / max(batches, 1.0),
        "mean latency ms": 1000 * sums.get("bigmodel_inference_request_duration_seconds_sum", 0.0) / lat_n,
        "mean queue ms": 1000 * sums.get("bigmodel_inference_queue_duration_seconds_sum", 0.0) / q_n,
    }
