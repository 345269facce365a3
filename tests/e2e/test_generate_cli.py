"""``bigmodel generate``: a model directory or a registry reference in, text out; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from bigmodel.generation import GenerationParams, generate
from bigmodel.registry import Registry
from tests.conftest import run_cli
from tests.models import make_lm_dir


def test_generate_from_a_directory_and_from_the_registry(tmp_path: Path):
    lm = make_lm_dir(tmp_path / "lm", context=64)
    want = generate(str(lm), "def ", GenerationParams(max_tokens=20, temperature=0)).text
    proc = run_cli(
        "generate", str(lm), "--prompt", "def ", "--max-tokens", "20", "--temperature", "0", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["text"] == want and out["completion_tokens"] == 20 and out["finish_reason"] == "length"
    reg = Registry(tmp_path / "reg")
    reg.register(lm, "pylm")
    plain = run_cli(
        "generate",
        "pylm",
        "--registry",
        str(reg.location),
        "--prompt",
        "def ",
        "--max-tokens",
        "20",
        "--temperature",
        "0",
    )
    assert plain.returncode == 0 and plain.stdout == "def " + want + "\n"  # the figures go to stderr
    stop = want[4:6]
    cut = run_cli(
        "generate",
        str(lm),
        "--prompt",
        "def ",
        "--max-tokens",
        "20",
        "--temperature",
        "0",
        "--stop",
        stop,
        "--stop",
        "zz",
        "--json",
    )
    assert json.loads(cut.stdout.strip().splitlines()[-1])["finish_reason"] == "stop"


def test_bad_input_is_one_line(tmp_path: Path):
    lm = make_lm_dir(tmp_path / "lm", context=64)
    for args, words in [
        (["--prompt", ""], "empty"),
        (["--prompt", "x" * 64], "context of 64"),
        (["--prompt", "x", "--top-p", "0"], "top_p"),
        (["--prompt", "x", "--temperature", "nan"], "finite"),
        (["--prompt", "x", "--max-tokens", "100"], "exceeds the model's context"),
    ]:
        proc = run_cli("generate", str(lm), *args)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, (
            args,
            proc.stderr,
        )
    proc = run_cli("generate", str(tmp_path / "nope"), "--prompt", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
