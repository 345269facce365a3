"""Running a sentence encoder: text in, unit-length embeddings out.

``EncoderRuntime`` has the surface the infer route and the repository use on ``ModelRuntime``
(``input``, ``outputs``, ``predict``, ``warm_up``, ``metadata``...), so a sentence encoder is served
by the same batcher, metrics and routes as a tabular model; only its input is a BYTES tensor of
sentences. ``predict`` tokenizes a batch with the tokenizer shipped in the model directory (padded
to the longest sentence of the batch, truncated at the model's ``max_length``), runs ONNX Runtime
when the directory has an ONNX export and PyTorch otherwise, and L2-normalises the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigmodel import artifacts, onnxrt
from bigmodel.errors import BigModelError
from bigmodel.models.arch import SentenceEncoderArch, parse_architecture
from bigmodel.serve.protocol import TensorSpec

TEXT, EMBEDDING = "text", "embedding"
# Besides ``embedding``, ``predict`` returns ``tokens`` (B,) int64: the tokens the model read for each
# sentence (special tokens included, after truncation), which /v1/embeddings reports as usage. It is
# not a declared output, so OIP clients never see it; the batcher slices it per request all the same.
TOKENS = "tokens"
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]  # ids, mask (B, T) int64 -> (B, H)


def _tokenizer(path: Path, meta: artifacts.ModelMeta, max_length: int) -> Any:
    """The directory's fast tokenizer, refused unless model.json vouches for it (hashed, verified),
    since a swapped tokenizer changes every embedding as surely as swapped weights."""
    from tokenizers import Tokenizer

    name = meta.preprocessing.get("tokenizer", "tokenizer.json")
    if not isinstance(name, str) or name not in meta.files:
        raise BigModelError(
            f"{path / artifacts.META}: the tokenizer {name!r} is not a hashed artifact of this directory"
        )
    try:
        tok = Tokenizer.from_file(str(path / name))
    except Exception as err:  # the tokenizers library raises its own exception type
        raise BigModelError(f"{path / name}: not a readable tokenizer ({err})") from None
    pad = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")  # to the longest in a batch
    tok.enable_truncation(max_length)
    return tok


def _onnx_forward(path: Path, info: dict[str, Any], threads: int) -> Forward:
    try:
        # onnxrt.session: int8 weights are rewritten where the CPU's u8s8 kernels would saturate
        session = onnxrt.session(path / info["file"], threads, info.get("disabled_optimizers"))
    except Exception as err:  # ORT raises its own exception types for a malformed graph
        raise BigModelError(f"cannot load {path / info['file']} in ONNX Runtime: {err}") from None
    names = list(info.get("inputs") or ["input_ids", "attention_mask"])
    output = [info.get("output", "embeddings")]
    if len(names) != 2:
        raise BigModelError(f"{path / artifacts.META}: a sentence encoder's ONNX graph takes 2 inputs")

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(output, {names[0]: ids, names[1]: mask})[0], dtype=np.float32)

    return forward


def _torch_forward(path: Path) -> Forward:
    module = artifacts.load_model(path, check=False).module.eval()  # hashes already checked

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

    return forward


class EncoderRuntime:
    """One loaded sentence encoder version: ``predict(texts) -> {"embedding": (B, H) float32}``."""

    def __init__(self, path: Path, kind: str = "auto", threads: int = 1):
        self.path = path
        self.meta = artifacts.read_meta(path)
        artifacts.verify(path, self.meta)  # weights, tokenizer files and any ONNX graph
        arch = parse_architecture(self.meta.architecture)
        if not isinstance(arch, SentenceEncoderArch):
            raise BigModelError(f"{path} holds a {arch.name} model, not a sentence encoder")
        self.family, self.routes = arch.name, arch.supports.routes
        self.max_length = int(self.meta.preprocessing.get("max_length", arch.max_length))
        self.dim = int(arch.bert.get("hidden_size", self.meta.task.get("num_outputs", 0)))
        self.tokenizer = _tokenizer(path, self.meta, self.max_length)
        onnx: dict[str, Any] | None = getattr(self.meta, "onnx", None)
        if kind == "onnxruntime" and not onnx:
            raise BigModelError(f"{path} has no ONNX export for --runtime onnxruntime")
        self.kind = "onnxruntime" if onnx and kind in ("auto", "onnxruntime") else "torch"
        self.forward = (
            _onnx_forward(path, onnx, threads)
            if onnx and self.kind == "onnxruntime"
            else _torch_forward(path)
        )
        self.input = TensorSpec(TEXT, "BYTES", [-1])
        self.outputs = [TensorSpec(EMBEDDING, "FP32", [-1, self.dim])]
        self.output_specs = {o.name: o for o in self.outputs}

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``texts`` -> (input_ids, attention_mask) (B, T) int64, T the longest after truncation."""
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """(B,) object array of str -> ``embedding`` (B, H) unit rows and ``tokens`` (B,) int64."""
        ids, mask = self.tokenize([str(t) for t in x.ravel().tolist()])
        e = self.forward(ids, mask)
        # normalised here too: an ONNX graph or a half-precision model may end a hair off unit length
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return {EMBEDDING: e.astype(np.float32, copy=False), TOKENS: mask.sum(axis=1)}

    def warm_up(self, max_batch_size: int) -> None:
        """Run a short sentence at batch 1 and at the largest batch before the first request."""
        for rows in (1, max_batch_size):
            self.predict(np.array(["warm up the encoder"] * rows, dtype=object))

    def metadata(self) -> dict[str, Any]:
        """The model's signature and what a client needs to know about its text input."""
        return {
            "platform": "onnxruntime_onnx" if self.kind == "onnxruntime" else "pytorch",
            "inputs": [self.input.to_json()],
            "outputs": [o.to_json() for o in self.outputs],
            "task": "embedding",
            "dimensions": self.dim,
            "max_length": self.max_length,
        }
