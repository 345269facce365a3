"""A sentence encoder: a BERT-style transformer, mean pooling over real tokens, L2 normalisation.

This is what sentence-transformers' all-MiniLM-L6-v2 computes; written as one plain module so that
a compressed copy (with int8 layers swapped in) is a model directory like any other. Needs the
optional extra ``bigmodel[transformers]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bigmodel.errors import BigModelError


def _bert(config: dict[str, Any], attention: str) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        raise BigModelError(
            "sentence encoders need the optional extra: pip install 'bigmodel[transformers]'"
        ) from None
    cfg = BertConfig(**config)
    # "eager" attention exports to plain ONNX ops; "sdpa" is PyTorch's faster kernel. Same maths.
    cfg._attn_implementation = attention
    return BertModel(cfg, add_pooling_layer=False)


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) (B, T) int64 -> unit-length sentence embeddings (B, H)."""

    def __init__(self, bert_config: dict[str, Any], attention: str = "sdpa"):
        super().__init__()
        self.bert = _bert(bert_config, attention)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1): padding does not count
        e = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (B, H)
        return torch.nn.functional.normalize(e, dim=-1)
