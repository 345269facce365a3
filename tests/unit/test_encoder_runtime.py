"""The served sentence encoder runtime on a tiny random BERT with the real MiniLM tokenizer: PyTorch
and ONNX Runtime (an ONNX export in the directory) agree; padding in a batch changes nothing; the
tokenizer must be a hashed artifact."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bigmodel import artifacts
from bigmodel.compress import minilm
from bigmodel.errors import BigModelError
from bigmodel.fsutil import write_json_atomic
from bigmodel.models import sentence_architecture
from bigmodel.models.sentence import SentenceEncoder
from bigmodel.serve.encoder import EncoderRuntime
from bigmodel.serve.runtime import open_runtime

TOKENIZER = "tokenizer.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, width-32 encoder directory with the MiniLM tokenizer and an fp32 ONNX export."""
    folder = minilm.package_path()
    config = {
        **json.loads((folder / "config.json").read_text()),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    torch.manual_seed(0)
    model = SentenceEncoder(config, attention="eager").eval()  # plain ONNX ops
    path = tmp_path_factory.mktemp("tiny") / "enc"
    path.mkdir()
    shutil.copyfile(folder / TOKENIZER, path / TOKENIZER)
    meta = artifacts.ModelMeta(
        architecture=sentence_architecture(config, 16),  # short, so that truncation shows
        task={"task": "embedding", "num_outputs": 32},
        features=["input_ids", "attention_mask"],
        preprocessing={"tokenizer": TOKENIZER, "max_length": 16},
    )
    artifacts.write_model_dir(path, model, meta, extra_files=(TOKENIZER,))
    ids = torch.ones(2, 5, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(path / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={n: {0: "b", 1: "t"} for n in ("input_ids", "attention_mask")},
            dynamo=False,
        )
    info = {"file": "model.onnx", "inputs": ["input_ids", "attention_mask"], "output": "embeddings"}
    artifacts.add_files(path, ["model.onnx"], onnx=info)
    return path


TEXTS = np.array(["short", "a much longer sentence that needs padding in a batch", "x " * 50], dtype=object)


def test_onnxruntime_and_torch_agree_and_padding_changes_nothing(tiny: Path):
    ort, pt = open_runtime(tiny), EncoderRuntime(tiny, "torch")
    assert isinstance(ort, EncoderRuntime) and (ort.kind, pt.kind) == ("onnxruntime", "torch")
    assert ort.metadata()["platform"] == "onnxruntime_onnx" and ort.metadata()["dimensions"] == 32
    a, b = ort.predict(TEXTS), pt.predict(TEXTS)
    assert a["embedding"].shape == (3, 32) and a["embedding"].dtype == np.float32
    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a["embedding"], axis=1), 1, atol=1e-5)
    assert a["tokens"].tolist()[0] == 3 and a["tokens"].tolist()[2] == 16  # [CLS] short [SEP]; truncated
    alone = pt.predict(TEXTS[:1])["embedding"]  # no padding at all
    np.testing.assert_allclose(alone[0], b["embedding"][0], atol=1e-5)
    pt.warm_up(4)


def test_a_tokenizer_that_model_json_does_not_vouch_for_is_refused(tiny: Path, tmp_path: Path):
    bad = tmp_path / "enc"
    shutil.copytree(tiny, bad)
    meta = json.loads((bad / "model.json").read_text())
    del meta["files"][TOKENIZER]
    write_json_atomic(bad / "model.json", meta)
    with pytest.raises(BigModelError, match=r"the tokenizer 'tokenizer\.json' is not a hashed artifact"):
        EncoderRuntime(bad)
    with pytest.raises(BigModelError, match="has no ONNX export"):
        EncoderRuntime(_without_onnx(tiny, tmp_path), "onnxruntime")


def _without_onnx(tiny: Path, tmp_path: Path) -> Path:
    d = tmp_path / "plain"
    shutil.copytree(tiny, d)
    meta = json.loads((d / "model.json").read_text())
    meta.pop("onnx")
    del meta["files"]["model.onnx"]
    write_json_atomic(d / "model.json", meta)
    return d
