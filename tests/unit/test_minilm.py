"""The sentence encoder path: the real all-MiniLM-L6-v2 quantized (PyTorch backend, a few sentences)
and a tiny random BERT through the ONNX Runtime path (export, quantize, shared weights)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel import artifacts
from bigmodel.compress import minilm
from bigmodel.compress.measure import open_runner
from bigmodel.models.layers import Int8Linear
from bigmodel.models.sentence import SentenceEncoder


def test_sentence_set_is_varied():
    s = minilm.sentences()
    assert len(s) >= 200 and len(set(s)) == len(s)
    lengths = [len(x.split()) for x in s]
    assert min(lengths) <= 2 and max(lengths) >= 30
    assert not set(s) & set(minilm.calibration_sentences())  # calibration never sees the metric's set


@pytest.mark.slow  # ~70 s: the real MiniLM calibrated, scored and timed at three batch sizes (make test-slow; CI runs it)
def test_real_minilm_int8_torch_backend(tmp_path: Path):
    folder = minilm.package_path()
    fp32, config = minilm.load_encoder(folder)
    texts = minilm.sentences()[::23][:10]
    out = minilm.quantize_encoder(
        fp32,
        config,
        folder,
        texts,
        minilm.calibration_sentences()[:16],
        dst=tmp_path / "m",
        method="dynamic",
        backend="torch",
        max_drop=0.01,
        alpha=0.75,
        runs=1,
    )
    assert out["compressed"]["metric"] >= 0.99 and out["compressed"]["runtime"] == "torch"
    assert {"latency_ms_b1", "latency_ms_b32", "latency_ms_b64"} <= set(out["compressed"])
    loaded = artifacts.load_model(tmp_path / "m")
    assert isinstance(loaded.module, SentenceEncoder)
    assert sum(isinstance(m, Int8Linear) for m in loaded.module.modules()) == 36
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    ids, mask = minilm.tokenize(tmp_path / "m", texts[:3])
    with torch.no_grad():
        a = loaded.module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        b = fp32(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert minilm.cosines(a, b).min() > 0.97


def test_tiny_encoder_through_onnxruntime(tmp_path: Path):
    folder = minilm.package_path()
    config = {
        **json.loads((folder / "config.json").read_text()),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    torch.manual_seed(0)
    tiny = SentenceEncoder(config).eval()
    texts = minilm.sentences()[:8]
    out = minilm.quantize_encoder(
        tiny,
        config,
        folder,
        texts,
        minilm.calibration_sentences()[:8],
        dst=tmp_path / "t",
        method="dynamic",
        backend="onnxruntime",
        max_drop=None,
        alpha=0.75,
        runs=1,
    )
    assert out["compressed"]["runtime"] == "onnxruntime" and out["compressed"]["metric"] > 0.95
    meta = artifacts.read_meta(tmp_path / "t")
    info = meta.onnx  # type: ignore[attr-defined]
    assert info["inputs"] == ["input_ids", "attention_mask"] and info["output"] == "embeddings"
    assert info["shared_bytes"] > 30522 * 32 * 4  # the embedding table is stored once
    runner = open_runner(tmp_path / "t")
    ids, mask = minilm.tokenize(folder, texts)
    got = runner(ids, mask)
    with torch.no_grad():
        ref = (
            artifacts.load_model(tmp_path / "t").module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        )
    assert got.shape == (8, 32) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert minilm.cosines(got, ref).min() > 0.95  # ONNX Runtime int8 and PyTorch int8 agree
