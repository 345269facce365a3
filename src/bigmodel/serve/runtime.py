"""Running a model version: PyTorch or ONNX Runtime for the forward pass, then the task's
postprocessing (probabilities and labels, or predictions), so clients send raw features and get
answers. The MLP standardises inputs itself (its statistics are buffers), in both runtimes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bigmodel import artifacts, onnxrt, tasks
from bigmodel.errors import BigModelError
from bigmodel.models.arch import parse_architecture
from bigmodel.serve.encoder import EncoderRuntime
from bigmodel.serve.lm import LanguageModelRuntime
from bigmodel.serve.protocol import TensorSpec

RuntimeName = Literal["auto", "torch", "onnxruntime"]
INFER_ROUTE = "infer"  # the route group name a family lists in ``supports.routes``
INPUT = "input"


def _torch_forward(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    module = artifacts.load_model(path, check=False).module.eval()  # hashes already checked

    def forward(x: np.ndarray) -> np.ndarray:  # (B, F) float32 -> (B, out) float32 logits
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()

    return forward


def _onnx_forward(path: Path, info: dict[str, Any], threads: int) -> Callable[[np.ndarray], np.ndarray]:
    try:
        # Graphs quantized with SmoothQuant record the ORT fusions that break them (see compress.int8).
        session = onnxrt.session(path / info["file"], threads, info.get("disabled_optimizers"))
    except Exception as err:  # ORT raises its own exception types for a malformed graph
        raise BigModelError(f"cannot load {path / info['file']} in ONNX Runtime: {err}") from None
    run = session.run
    names, inp = [info.get("output", "logits")], info.get("input", INPUT)

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(run(names, {inp: x})[0], dtype=np.float32)

    return forward


def _label_output(spec: tasks.TaskSpec) -> tuple[str, np.ndarray | None]:
    """Datatype and lookup table of the ``label`` output: the original label values."""
    values = spec.label_values
    if not values:
        return "INT64", None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64", np.asarray(values, dtype=np.int64)
    return "BYTES", np.asarray([str(v) for v in values], dtype=object)


class ModelRuntime:
    """One loaded model version: its tensor signature and ``predict(x) -> {output: array}``."""

    def __init__(self, path: Path, kind: RuntimeName = "auto", threads: int = 1):
        self.path = path
        self.meta = artifacts.read_meta(path)
        artifacts.verify(path, self.meta)  # every artifact, whichever runtime reads it
        arch = parse_architecture(self.meta.architecture)
        self.family, self.routes = arch.name, arch.supports.routes
        self.spec = self.meta.spec
        # ONNX Runtime needs only the graph: a compressed model whose weights PyTorch cannot
        # rebuild from the architecture dict is still served from its ONNX export
        onnx: dict[str, Any] | None = getattr(self.meta, "onnx", None)
        if kind == "onnxruntime" and not onnx:
            raise BigModelError(
                f"{path} has no ONNX export (run `bigmodel export {path}`) for --runtime onnxruntime"
            )
        self.kind = "onnxruntime" if onnx and kind in ("auto", "onnxruntime") else "torch"
        self.forward = (
            _onnx_forward(path, onnx, threads)
            if onnx and self.kind == "onnxruntime"
            else _torch_forward(path)
        )
        self.features = list(self.meta.features)
        self.input = TensorSpec(INPUT, "FP32", [-1, len(self.features)])
        if self.spec.task == "regression":
            self.outputs = [TensorSpec("prediction", "FP32", [-1])]
            self._labels: np.ndarray | None = None
        else:
            k = 2 if self.spec.task == "binary" else self.spec.num_outputs
            dtype, self._labels = _label_output(self.spec)
            self.outputs = [TensorSpec("probabilities", "FP32", [-1, k]), TensorSpec("label", dtype, [-1])]
        self.output_specs = {o.name: o for o in self.outputs}

    def warm_up(self, max_batch_size: int) -> None:
        """Run the shapes the first requests will, so that they do not pay for it."""
        for rows in (1, max_batch_size):
            self.predict(np.zeros((rows, len(self.features)), dtype=np.float32))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """(B, F) raw float32 features -> every output, each with B rows."""
        logits = torch.from_numpy(self.forward(x))
        post = tasks.postprocess(self.spec, logits)
        if self.spec.task == "regression":
            return {"prediction": post["predictions"].numpy().astype(np.float32, copy=False)}
        codes = post["label_codes"].numpy()
        labels = codes if self._labels is None else self._labels[codes]
        return {"probabilities": post["probabilities"].numpy(), "label": labels}

    def metadata(self) -> dict[str, Any]:
        return {
            "platform": "onnxruntime_onnx" if self.kind == "onnxruntime" else "pytorch",
            "inputs": [self.input.to_json()],
            "outputs": [o.to_json() for o in self.outputs],
            "features": self.features,
            "task": self.spec.task,
            "labels": self.spec.label_values,
        }


Runtime = ModelRuntime | EncoderRuntime | LanguageModelRuntime  # what a served version runs


def open_runtime(path: Path, kind: RuntimeName = "auto", threads: int = 1) -> Runtime:
    """The runtime of the model directory ``path``, chosen by its family: ``ModelRuntime``
    (tabular), ``EncoderRuntime`` (sentence encoders) or ``LanguageModelRuntime`` (generation)."""
    arch = parse_architecture(artifacts.read_meta(path).architecture)
    if arch.name == "mlp":
        return ModelRuntime(path, kind, threads)
    if arch.name == "sentence_encoder":
        return EncoderRuntime(path, kind, threads)
    if arch.name == "transformer":
        if kind == "onnxruntime":
            raise BigModelError("--runtime onnxruntime cannot generate text (the KV cache runs in PyTorch)")
        return LanguageModelRuntime(path)
    raise BigModelError(f"a {arch.name} model has no route on this server")
