"""Serving a language model: the loaded module and the continuous-batching scheduler it runs on.

A served LM version owns one ``Scheduler`` (``bigmodel.generation.scheduler``) with a KV cache
preallocated for ``slots`` sequences: ``--max-sequences`` at most, fewer when ``--kv-cache-mb``
cannot hold that many at the model's full context. The generate and completions routes submit to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigmodel import artifacts
from bigmodel.errors import BigModelError
from bigmodel.generation import GenerationParams, generate
from bigmodel.generation.scheduler import Observer, Scheduler
from bigmodel.models.arch import TransformerArch, parse_architecture
from bigmodel.models.transformer import KVCache
from bigmodel.serve.config import ServeConfig
from bigmodel.serve.protocol import TensorSpec

GENERATE_ROUTE = "generate"


class LanguageModelRuntime:
    """A loaded byte-level LM version: ``scheduler(cfg)`` starts the generation it serves."""

    kind = "torch"  # the KV cache and sampling loop are PyTorch; ONNX exports are not used here

    def __init__(self, path: Path):
        self.path = path
        self.meta = artifacts.read_meta(path)
        artifacts.verify(path, self.meta)
        arch = parse_architecture(self.meta.architecture)
        assert isinstance(arch, TransformerArch)
        self.arch = arch
        self.family, self.routes = arch.name, arch.supports.routes
        self.context = arch.context
        self.module = artifacts.load_model(path, check=False).module.eval()  # hashes checked above
        self.input = TensorSpec("text_input", "BYTES", [1])
        self.outputs = [TensorSpec("text_output", "BYTES", [1])]
        self.output_specs = {o.name: o for o in self.outputs}

    def slots(self, cfg: ServeConfig) -> int:
        """Sequences generated at once: ``max_sequences``, fewer if the KV cache budget says so."""
        dtype_bytes = next(self.module.parameters()).element_size()
        per = KVCache.bytes_per_slot(self.arch.layers, self.arch.width, self.context, dtype_bytes)
        fit = int(cfg.kv_cache_mb * 2**20) // per
        if fit < 1:
            raise BigModelError(
                f"--kv-cache-mb {cfg.kv_cache_mb:g} cannot hold one sequence of this model "
                f"({per / 2**10:,.0f} KiB at context {self.context})"
            )
        return min(cfg.max_sequences, fit)

    def scheduler(self, cfg: ServeConfig, observer: Observer | None = None) -> Scheduler:
        return Scheduler(
            self.module,
            slots=self.slots(cfg),
            max_waiting=cfg.max_queue,
            timeout_s=cfg.timeout_s,
            observer=observer,
        )

    def warm_up(self, max_batch_size: int) -> None:
        """A short generation, so the first request does not pay for first-call setup."""
        generate(self.module, "warm", GenerationParams(max_tokens=min(4, self.context - 4), temperature=0))

    def metadata(self) -> dict[str, Any]:
        return {
            "platform": "pytorch",
            "inputs": [self.input.to_json()],
            "outputs": [o.to_json() for o in self.outputs],
            "task": "text_generation",
            "context": self.context,
            "architecture": self.arch.describe(),
        }
