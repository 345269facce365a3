"""The demo's text part: a byte-level LM trained on Python source, served and streamed through the
unmodified ``openai`` client, and the int8 MiniLM sentence encoder serving embeddings beside it."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bigmodel import console
from bigmodel.config import TrainConfig
from bigmodel.errors import BigModelError
from bigmodel.registry import Registry
from bigmodel.serve.launch import ServerProcess
from bigmodel.training import train

PROMPT = "def "
PAIRS = [
    ("related", "A man is playing a guitar on stage.", "Someone performs music with a guitar."),
    ("unrelated", "A man is playing a guitar on stage.", "The quarterly tax return is due in April."),
]


def demo_text(
    work: Path, *, say: Callable[..., None], json_mode: bool = False, steps: int = 300
) -> dict[str, Any]:
    """Train a small LM on the built-in ``pysource`` text for ``steps`` steps, quantize MiniLM to
    int8, register both, serve them, stream a completion and compare sentence embeddings."""
    try:
        import openai
    except ImportError:
        raise BigModelError("the text demo needs the openai client: pip install openai") from None

    say(
        f"[bold]T1. train[/bold] a byte-level transformer LM (size mini, 0.9M parameters) on the built-in "
        f"pysource text (Python's own standard library source) for {steps} steps"
    )
    cfg = TrainConfig.model_validate(
        {
            "data": {"dataset": "pysource"},
            "model": {"name": "transformer", "size": "mini"},
            "optim": {"name": "adamw", "lr": 3e-3},
            "batch_size": 16,
            "max_steps": steps,
            "eval_rows": 256,
            "checkpoint_every": 0,
            "run_dir": str(work / "runs" / "pylm"),
        }
    )
    summary = train(cfg)
    say(
        f"   {summary['steps']} steps, val bits per byte {summary['metrics'].get('bits_per_byte', float('nan')):.3f} "
        f"(8.0 is a uniform guess); model directory {summary['run_dir']}"
    )

    from bigmodel.compress.minilm import quantize_minilm

    say("[bold]T2. compress[/bold] all-MiniLM-L6-v2 (22M parameters) to int8 (ONNX Runtime, SmoothQuant)")
    minilm = quantize_minilm(out=work / "compressed" / "minilm-int8", max_drop=None, runs=5)
    say(f"   mean cosine to fp32 {minilm['compressed']['metric']:.4f}; model directory {minilm['model_dir']}")

    reg = Registry(work / "registry")
    lm_version = reg.register(summary["run_dir"], "pylm")["version"]
    enc_version = reg.register(minilm["model_dir"], "minilm")["version"]
    key = secrets.token_urlsafe(16)
    say(f"[bold]T3. serve[/bold] pylm:{lm_version} and minilm:{enc_version} with an API key")
    with ServerProcess(["--registry", str(reg.location), "--api-key", key, "--access-log", "off"]) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key)
        say(
            f"   openai.OpenAI(base_url='{server.url}/v1').completions.create(model='pylm', prompt={PROMPT!r}, stream=True):"
        )
        t0, pieces = time.perf_counter(), []
        stream = client.completions.create(
            model="pylm", prompt=PROMPT, max_tokens=120, temperature=0.7, seed=0, stream=True
        )
        out = sys.stderr if json_mode else sys.stdout
        print(PROMPT, end="", file=out, flush=True)
        first = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                first = first or time.perf_counter() - t0
                pieces.append(chunk.choices[0].text)
                print(chunk.choices[0].text, end="", file=out, flush=True)
        print(file=out)
        seconds = time.perf_counter() - t0
        text = "".join(pieces)
        say(
            f"   {len(text.encode())} bytes in {seconds:.2f} s, first token after {1000 * (first or 0):.0f} ms"
        )

        texts = [s for _, a, b in PAIRS for s in (a, b)]
        emb = client.embeddings.create(model="minilm", input=texts)
        vecs = np.array([e.embedding for e in emb.data], dtype=np.float32)
        rows, cosines = [], {}
        for i, (kind, a, b) in enumerate(PAIRS):
            cos = float(vecs[2 * i] @ vecs[2 * i + 1])
            cosines[kind] = cos
            rows.append([kind, a, b, f"{cos:.3f}"])
        console.show(
            console.grid_table("int8 MiniLM: cosine of two sentences", ["pair", "a", "b", "cosine"], rows),
            json_mode=json_mode,
        )
        server.stop()
    return {
        "lm": {
            "run_dir": summary["run_dir"],
            "steps": summary["steps"],
            "val_bits_per_byte": summary["metrics"].get("bits_per_byte"),
        },
        "completion": {"prompt": PROMPT, "text": text, "seconds": seconds, "ttft_s": first},
        "minilm": {"model_dir": minilm["model_dir"], "cosine_to_fp32": minilm["compressed"]["metric"]},
        "cosines": cosines,
        "url": server.url,
    }
