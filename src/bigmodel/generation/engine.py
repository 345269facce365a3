"""Running a byte-level language model for generation: a pool of KV-cache slots, prefill, decode.

The engine only runs batches; who runs when is the caller's business (``generate`` for one
sequence in-process, the server's ``Scheduler`` for many). A prefill puts one prompt into a slot
and returns the logits after its last byte; a decode step runs one new token for every slot in
``0..n-1`` at once (slots the caller left idle compute a throw-away token at position 0: cheaper
than copying the live slots' caches together every step).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from bigmodel.errors import BigModelError
from bigmodel.models.transformer import CacheStep, KVCache, Transformer


def language_model(module: nn.Module) -> Transformer:
    """``module`` if it is a byte-level transformer LM, else a one-line error."""
    if not isinstance(module, Transformer):
        raise BigModelError(
            f"text generation needs a transformer language model, not {type(module).__name__}"
        )
    return module


class Engine:
    """A language model with ``slots`` sequences' worth of KV cache. One caller at a time."""

    def __init__(self, module: nn.Module, slots: int):
        self.model = language_model(module).eval()
        self.context = self.model.context
        self.cache = KVCache(self.model, slots)
        self.slots = slots

    @torch.inference_mode()
    def prefill(self, slot: int, tokens: list[int]) -> torch.Tensor:
        """Run a prompt into ``slot`` (replacing what it held); (V,) logits of the next token."""
        idx = torch.tensor([tokens], dtype=torch.int64)  # (1, T)
        step = CacheStep.make(self.cache, slot, torch.zeros(1, dtype=torch.int64), len(tokens))
        return self.model(idx, step)[0, -1].float()

    @torch.inference_mode()
    def decode(self, rows: dict[int, tuple[int, int]]) -> torch.Tensor:
        """``{slot: (token, position)}`` -> (n, V) next-token logits for slots 0..n-1, n = max slot + 1."""
        n = max(rows) + 1
        tokens = torch.zeros(n, 1, dtype=torch.int64)  # (n, 1)
        positions = torch.zeros(n, dtype=torch.int64)  # (n,)
        for s, (tok, pos) in rows.items():
            tokens[s, 0], positions[s] = tok, pos
        return self.model(tokens, CacheStep.make(self.cache, 0, positions, 1))[:, 0].float()


@torch.inference_mode()
def tokens_per_second(
    module: nn.Module, batch: int, new_tokens: int, prompt_len: int = 16, *, cache: bool = True, seed: int = 0
) -> float:
    """Greedy generation speed of ``batch`` sequences, new tokens per second in all (prompt not
    counted). ``cache=False`` recomputes the whole prefix every step, the way without a KV cache."""
    model = language_model(module).eval()
    if prompt_len + new_tokens > model.context:
        raise BigModelError(f"{prompt_len} + {new_tokens} tokens exceed the model's context {model.context}")
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, 256, (batch, prompt_len), generator=g)  # (B, P)
    t0 = time.perf_counter()
    if cache:
        engine = Engine(model, batch)
        last = torch.stack([engine.prefill(s, prompts[s].tolist()) for s in range(batch)]).argmax(-1)
        for i in range(new_tokens - 1):
            rows = {s: (int(last[s]), prompt_len + i) for s in range(batch)}
            last = engine.decode(rows).argmax(-1)
    else:
        seq = prompts
        for _ in range(new_tokens):
            nxt = model(seq)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            seq = torch.cat([seq, nxt], dim=1)
    return batch * new_tokens / (time.perf_counter() - t0)
