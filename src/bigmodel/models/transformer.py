"""A GPT-style byte-level language model: plain PyTorch, no knowledge of training or distribution.

Pre-norm blocks (LayerNorm -> causal self-attention, LayerNorm -> MLP) as in nanoGPT, with
``scaled_dot_product_attention`` for the attention itself. The vocabulary is the 256 byte values,
so there is no tokenizer to ship. Output and input embeddings are separate matrices (no weight
tying): safetensors refuses shared storage, and FSDP shards each matrix on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256  # bytes

# name -> (layers, width, heads); parameters are ~12 * layers * width^2 plus the embeddings
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 32, 2),  # ~50k at context 256: tests
    "mini": (4, 128, 4),  # ~0.9M
    "small": (6, 384, 6),  # ~10.9M
    "base": (12, 768, 12),  # ~86M
    "large": (12, 1024, 16),  # ~152M
}


class KVCache:
    """Keys and values of up to ``slots`` sequences, preallocated to the model's context.

    ``k[i]``, ``v[i]`` are layer i's (slots, heads, context, head_dim). A sequence owns one slot
    for its whole life; each forward writes the new tokens' keys and values at their positions and
    attends over the cached ones, so a decode step runs only the new token through the model.
    """

    def __init__(self, model: Transformer, slots: int, dtype: torch.dtype | None = None):
        block = model.blocks[0]
        assert isinstance(block, Block)
        heads, width = block.attn.heads, model.tok.embedding_dim
        dtype = dtype or model.tok.weight.dtype
        shape = (len(model.blocks), slots, heads, model.context, width // heads)
        self.k = torch.zeros(shape, dtype=dtype, device=model.tok.weight.device)
        self.v = torch.zeros_like(self.k)
        self.slots, self.context = slots, model.context

    @staticmethod
    def bytes_per_slot(layers: int, width: int, context: int, dtype_bytes: int = 4) -> int:
        """Memory one sequence's keys and values take, for sizing the pool."""
        return 2 * layers * context * width * dtype_bytes


@dataclass
class CacheStep:
    """Where one forward with a cache writes and reads. Rows are sequences; ``slots`` must be a
    contiguous range (rows s0..s0+B-1) so that attention reads the cache as a view, not a copy."""

    cache: KVCache
    slots: torch.Tensor  # (B,) int64: each row's slot
    positions: torch.Tensor  # (B, T) int64: each new token's position in its sequence
    mask: torch.Tensor  # (B, 1, T, Tk) bool: the cached keys each new token sees (causal)

    @classmethod
    def make(cls, cache: KVCache, first_slot: int, start: torch.Tensor, T: int) -> CacheStep:
        """Rows ``first_slot..first_slot+B-1`` whose new T tokens start at positions ``start`` (B,)."""
        B = len(start)
        positions = start[:, None] + torch.arange(T)  # (B, T)
        Tk = int(positions.max()) + 1
        mask = torch.arange(Tk)[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, Tk)
        slots = torch.arange(first_slot, first_slot + B)
        return cls(cache, slots, positions, mask)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, step: CacheStep | None = None, layer: int = 0
    ) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        if step is None:
            q, k, v = (
                t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v)
            )  # (B, H, T, D)
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )  # (B, H, T, D)
        else:
            K, V = step.cache.k[layer], step.cache.v[layer]  # (S, H, context, D)
            rows, at = step.slots[:, None], step.positions  # (B, 1), (B, T)
            K[rows, :, at] = k.view(B, T, self.heads, C // self.heads).to(K.dtype)  # (B, T, H, D)
            V[rows, :, at] = v.view(B, T, self.heads, C // self.heads).to(V.dtype)
            s0, Tk = int(step.slots[0]), step.mask.shape[-1]
            q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, D)
            y = F.scaled_dot_product_attention(
                q, K[s0 : s0 + B, :, :Tk].to(q.dtype), V[s0 : s0 + B, :, :Tk].to(q.dtype), attn_mask=step.mask
            )  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, step: CacheStep | None = None, layer: int = 0
    ) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.drop(self.attn(self.ln1(x), step, layer))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    """Bytes (B, T) int64 -> next-byte logits (B, T, 256). ``blocks`` is the unit that
    parallelize() shards and checkpoints activations of, one block at a time."""

    def __init__(
        self, layers: int, width: int, heads: int, context: int, vocab: int = VOCAB, dropout: float = 0.0
    ):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self._init(layers)

    def _init(self, layers: int) -> None:
        # GPT-2's scheme: small normal weights, and residual projections scaled down by depth so
        # that the residual stream's variance does not grow with the number of layers.
        for name, p in self.named_parameters():
            if p.dim() < 2 or "ln" in name:
                continue
            std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, step: CacheStep | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, V). With ``step``, idx holds only new tokens: their keys and values go
        into ``step.cache`` and attention reads every earlier token of the sequence from it."""
        T = idx.shape[1]
        if step is None:  # T itself, not a tensor's value: torch.export traces this branch
            if self.context < T:
                raise ValueError(f"sequence of {T} tokens is longer than the model's context {self.context}")
            pos = torch.arange(T, device=idx.device)  # (T,)
        else:
            pos = step.positions  # (B, T)
            if self.context <= int(pos.max()):
                raise ValueError(f"position {int(pos.max())} is past the model's context {self.context}")
        x = self.drop(self.tok(idx) + self.pos(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x) if step is None else block(x, step, i)
        return self.head(self.ln(x))  # (B, T, V)


def transformer_params(size: str, context: int, vocab: int = VOCAB) -> int:
    """Parameter count of a named size, without building it."""
    layers, w, _ = SIZES[size]
    per_block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    return vocab * w + context * w + layers * per_block + 2 * w + w * vocab
