"""Text generation with byte-level language models: KV cache, sampling, whole characters out.

from bigmodel.generation import GenerationParams, generate
generate("runs/lm", "def main(", GenerationParams(max_tokens=64, temperature=0.8, seed=0)).text
"""

from bigmodel.generation.engine import Engine, tokens_per_second
from bigmodel.generation.generate import (
    Chunk,
    Completion,
    generate,
    load_language_model,
    prompt_bytes,
    stream,
)
from bigmodel.generation.params import GenerationParams

__all__ = [
    "Chunk",
    "Completion",
    "Engine",
    "GenerationParams",
    "generate",
    "load_language_model",
    "prompt_bytes",
    "stream",
    "tokens_per_second",
]
