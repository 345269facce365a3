"""Choosing the next byte from the model's logits: greedy, or temperature with top-k / top-p."""

from __future__ import annotations

import torch

from bigmodel.generation.params import GenerationParams


def new_generator(seed: int | None) -> torch.Generator:
    """A sequence's own random stream: the same seed gives the same choices."""
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


def sample(logits: torch.Tensor, params: GenerationParams, gen: torch.Generator) -> int:
    """One token from (V,) logits."""
    if params.greedy:
        return int(logits.argmax())
    # shifted so the best is 0 before dividing: a tiny temperature sends the others to -inf (greedy
    # in the limit) instead of overflowing every logit to inf and the softmax to NaN
    logits = logits.double()
    logits = (logits - logits.max()) / params.temperature
    if 0 < params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (V,)
    if params.top_p < 1.0:
        # nucleus: the smallest set of most likely tokens whose probability reaches top_p
        p, order = probs.sort(descending=True)
        keep = p.cumsum(0) - p < params.top_p  # the token that crosses top_p stays in
        probs = torch.zeros_like(probs).scatter_(0, order[keep], p[keep])
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:  # NaN logits from the model
        raise ValueError("the model's next-byte distribution is not finite")
    return int(torch.multinomial(probs, 1, generator=gen))
